# The shared POSIX volume of the Ray cluster: `visionops tune --storage-path` takes a folder that
# every Ray node must see at the same path (sweep state, trial checkpoints), and EFS is the volume
# that pods on all nodes of all three AZs can mount at once. The ray-cluster chart's production
# values claim it through the EFS CSI driver (StorageClass efs-sc, fileSystemId from the
# efs_file_system_id output).

resource "aws_kms_key" "efs" {
  description             = "${var.cluster_name}: encryption at rest of the Ray shared file system"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_account_admin.json
}

resource "aws_kms_alias" "efs" {
  name          = "alias/${var.cluster_name}-efs"
  target_key_id = aws_kms_key.efs.key_id
}

# Elastic throughput bills what sweeps read and write, with nothing provisioned while idle; files
# untouched for 30 days move to Infrequent Access and come back on first read.
resource "aws_efs_file_system" "ray" {
  creation_token   = "${var.cluster_name}-ray"
  encrypted        = true
  kms_key_id       = aws_kms_key.efs.arn
  performance_mode = "generalPurpose"
  throughput_mode  = "elastic"

  lifecycle_policy {
    transition_to_ia = "AFTER_30_DAYS"
  }

  lifecycle_policy {
    transition_to_primary_storage_class = "AFTER_1_ACCESS"
  }

  tags = {
    Name = "${var.cluster_name}-ray"
  }
}

# Daily AWS Backup of the sweep state: a lost volume would lose every unfinished sweep's trials.
resource "aws_efs_backup_policy" "ray" {
  file_system_id = aws_efs_file_system.ray.id

  backup_policy {
    status = "ENABLED"
  }
}

data "aws_iam_policy_document" "efs" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["*"]
    resources = [aws_efs_file_system.ray.arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid       = "MountThroughTheMountTargets"
    actions   = ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite", "elasticfilesystem:ClientRootAccess"]
    resources = [aws_efs_file_system.ray.arn]

    principals {
      type        = "AWS"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "elasticfilesystem:AccessedViaMountTarget"
      values   = ["true"]
    }
  }
}

resource "aws_efs_file_system_policy" "ray" {
  file_system_id = aws_efs_file_system.ray.id
  policy         = data.aws_iam_policy_document.efs.json
}

resource "aws_security_group" "efs" {
  name        = "${var.cluster_name}-efs"
  description = "Ray shared file system: NFS from the EKS nodes of ${var.cluster_name} only"
  vpc_id      = aws_vpc.this.id

  ingress {
    description     = "NFS from the EKS nodes and their pods"
    from_port       = 2049
    to_port         = 2049
    protocol        = "tcp"
    security_groups = [aws_security_group.node.id]
  }

  tags = {
    Name = "${var.cluster_name}-efs"
  }
}

resource "aws_efs_mount_target" "ray" {
  count = 3

  file_system_id  = aws_efs_file_system.ray.id
  subnet_id       = aws_subnet.private[count.index].id
  security_groups = [aws_security_group.efs.id]
}

# The driver's controller creates an access point per volume claim (dynamic provisioning); it
# runs as a Deployment, so after the nodes.
resource "aws_eks_addon" "efs_csi" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "aws-efs-csi-driver"
  service_account_role_arn    = aws_iam_role.efs_csi.arn
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  depends_on = [aws_eks_node_group.system, aws_iam_role_policy_attachment.efs_csi]
}
