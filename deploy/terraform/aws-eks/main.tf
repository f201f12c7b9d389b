# Network and Kubernetes: a VPC over three AZs and an EKS cluster with two managed node groups.
#
# Plain resources rather than the terraform-aws-modules vpc and eks modules: checkov then checks
# every resource that is created (subnets, route tables, launch templates, the cluster itself),
# while a module call is scanned only as far as its downloaded source, which an offline check
# cannot fetch. It also keeps the GPU group's labels and taint, which the ray-cluster chart
# selects, visible in one place.

locals {
  # As given, not as the data source lists them: only the variable decides where subnets go.
  azs = var.availability_zones

  # Private subnets hold nodes, pods (the VPC CNI gives each pod a VPC address) and RDS, so they
  # get most of the space: a sixteenth of the VPC each (/20 of a /16). Public subnets only hold
  # the NAT gateways and the ALB: a 256th each, taken after the private ones.
  private_subnets = [for i in range(3) : cidrsubnet(var.vpc_cidr, 4, i)]
  public_subnets  = [for i in range(3) : cidrsubnet(var.vpc_cidr, 8, 48 + i)]
  nat_count       = var.single_nat_gateway ? 1 : 3

  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  tags = merge(var.tags, {
    "project"    = "visionops"
    "managed-by" = "terraform"
    "cluster"    = var.cluster_name
  })
}

# Checks at plan time that the named zones exist in the region. Named zones, not "the first three
# available": a zone that AWS adds, or one that is impaired for a while, would otherwise shift the
# list and replace subnets, NAT gateways and nodes.
data "aws_availability_zones" "available" {
  all_availability_zones = true

  filter {
    name   = "zone-name"
    values = var.availability_zones
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) == 3
      error_message = "Each of availability_zones must be a zone of the region ${var.region}."
    }
  }
}

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

################################################################################
# VPC
################################################################################

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = {
    Name = var.cluster_name
  }
}

# The default security group of a new VPC allows all traffic between its members; nothing here
# uses it, so it is emptied.
resource "aws_default_security_group" "this" {
  vpc_id = aws_vpc.this.id

  tags = {
    Name = "${var.cluster_name}-default-unused"
  }
}

resource "aws_flow_log" "this" {
  vpc_id               = aws_vpc.this.id
  traffic_type         = "ALL"
  log_destination_type = "s3"
  log_destination      = "${aws_s3_bucket.logs.arn}/vpc-flow-logs/"

  destination_options {
    file_format        = "parquet"
    per_hour_partition = true
  }

  depends_on = [aws_s3_bucket_policy.logs]
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id

  tags = {
    Name = var.cluster_name
  }
}

resource "aws_subnet" "public" {
  count = 3

  vpc_id            = aws_vpc.this.id
  cidr_block        = local.public_subnets[count.index]
  availability_zone = local.azs[count.index]
  # Only the NAT gateways (Elastic IPs) and internet-facing load balancers live here: nothing
  # needs an automatic public address.
  map_public_ip_on_launch = false

  tags = {
    Name = "${var.cluster_name}-public-${local.azs[count.index]}"
    # Where the AWS Load Balancer Controller puts internet-facing ALBs (the MLflow Ingress).
    "kubernetes.io/role/elb" = "1"
  }
}

resource "aws_subnet" "private" {
  count = 3

  vpc_id            = aws_vpc.this.id
  cidr_block        = local.private_subnets[count.index]
  availability_zone = local.azs[count.index]

  tags = {
    Name                              = "${var.cluster_name}-private-${local.azs[count.index]}"
    "kubernetes.io/role/internal-elb" = "1"
  }
}

resource "aws_eip" "nat" {
  count = local.nat_count

  domain = "vpc"

  tags = {
    Name = "${var.cluster_name}-nat-${local.azs[count.index]}"
  }

  depends_on = [aws_internet_gateway.this]
}

resource "aws_nat_gateway" "this" {
  count = local.nat_count

  allocation_id = aws_eip.nat[count.index].id
  subnet_id     = aws_subnet.public[count.index].id

  tags = {
    Name = "${var.cluster_name}-${local.azs[count.index]}"
  }
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id

  route {
    cidr_block = "0.0.0.0/0"
    gateway_id = aws_internet_gateway.this.id
  }

  tags = {
    Name = "${var.cluster_name}-public"
  }
}

resource "aws_route_table_association" "public" {
  count = 3

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# One route table per AZ whether or not the NAT gateway is shared, so switching
# single_nat_gateway only changes the routes' targets.
resource "aws_route_table" "private" {
  count = 3

  vpc_id = aws_vpc.this.id

  route {
    cidr_block     = "0.0.0.0/0"
    nat_gateway_id = aws_nat_gateway.this[var.single_nat_gateway ? 0 : count.index].id
  }

  tags = {
    Name = "${var.cluster_name}-private-${local.azs[count.index]}"
  }
}

resource "aws_route_table_association" "private" {
  count = 3

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[count.index].id
}

# S3 traffic (artifacts, checkpoints, images' layers in ECR's S3) bypasses the NAT gateways: a
# gateway endpoint costs nothing, NAT data processing costs per GB.
resource "aws_vpc_endpoint" "s3" {
  vpc_id            = aws_vpc.this.id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = aws_route_table.private[*].id

  tags = {
    Name = "${var.cluster_name}-s3"
  }
}

################################################################################
# EKS cluster
################################################################################

resource "aws_kms_key" "eks" {
  description             = "${var.cluster_name}: envelope encryption of Kubernetes Secrets"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_account_admin.json
}

resource "aws_kms_alias" "eks" {
  name          = "alias/${var.cluster_name}-eks"
  target_key_id = aws_kms_key.eks.key_id
}

# The key policy of keys used only through IAM policies: the account's IAM decides who uses the
# key (the cluster role, the IRSA roles), as in AWS's default key policy.
data "aws_iam_policy_document" "kms_account_admin" {
  # checkov:skip=CKV_AWS_109:A key policy; "*" is the key itself and the account root principal hands every decision to IAM policies, as AWS's default key policy does.
  # checkov:skip=CKV_AWS_111:A key policy; "*" is the key itself and the account root principal hands every decision to IAM policies, as AWS's default key policy does.
  # checkov:skip=CKV_AWS_356:A key policy; "*" is the key itself and the account root principal hands every decision to IAM policies, as AWS's default key policy does.
  statement {
    sid       = "AccountIAMDecides"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

# Created before the cluster so that its retention and encryption apply from the first log line
# (EKS would otherwise create it with neither).
resource "aws_cloudwatch_log_group" "eks" {
  name              = "/aws/eks/${var.cluster_name}/cluster"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

resource "aws_kms_key" "logs" {
  description             = "${var.cluster_name}: CloudWatch Logs of the EKS control plane and RDS"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_logs.json
}

resource "aws_kms_alias" "logs" {
  name          = "alias/${var.cluster_name}-logs"
  target_key_id = aws_kms_key.logs.key_id
}

data "aws_iam_policy_document" "kms_logs" {
  source_policy_documents = [data.aws_iam_policy_document.kms_account_admin.json]

  statement {
    sid       = "CloudWatchLogsOfThisAccount"
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${var.region}:${local.account_id}:log-group:*"]
    }
  }
}

data "aws_iam_policy_document" "eks_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["eks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "cluster" {
  name               = "${var.cluster_name}-eks-cluster"
  assume_role_policy = data.aws_iam_policy_document.eks_assume.json
}

resource "aws_iam_role_policy_attachment" "cluster" {
  role       = aws_iam_role.cluster.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKSClusterPolicy"
}

data "aws_iam_policy_document" "cluster_encryption" {
  statement {
    actions   = ["kms:Encrypt", "kms:Decrypt", "kms:ListGrants", "kms:DescribeKey"]
    resources = [aws_kms_key.eks.arn]
  }
}

resource "aws_iam_role_policy" "cluster_encryption" {
  name   = "secrets-encryption"
  role   = aws_iam_role.cluster.id
  policy = data.aws_iam_policy_document.cluster_encryption.json
}

resource "aws_eks_cluster" "this" {
  name     = var.cluster_name
  version  = var.kubernetes_version
  role_arn = aws_iam_role.cluster.arn

  # The add-ons below are EKS-managed (versions follow the cluster); nothing self-managed is
  # installed behind Terraform's back.
  bootstrap_self_managed_addons = false

  enabled_cluster_log_types = ["api", "audit", "authenticator", "controllerManager", "scheduler"]

  vpc_config {
    subnet_ids              = aws_subnet.private[*].id
    endpoint_private_access = true
    # Off by default: kubectl and helm then run from inside the VPC (a bastion, SSM, a VPN). An
    # operator outside it sets both variables, with the narrowest CIDR possible.
    endpoint_public_access = var.cluster_endpoint_public_access
    public_access_cidrs    = var.cluster_endpoint_public_access ? var.cluster_endpoint_public_access_cidrs : null
  }

  encryption_config {
    resources = ["secrets"]

    provider {
      key_arn = aws_kms_key.eks.arn
    }
  }

  # Access entries instead of the aws-auth ConfigMap: access is managed through the EKS API, so
  # no Kubernetes provider (and no API connection during apply) is needed.
  access_config {
    authentication_mode                         = "API"
    bootstrap_cluster_creator_admin_permissions = true
  }

  lifecycle {
    precondition {
      condition     = !var.cluster_endpoint_public_access || length(var.cluster_endpoint_public_access_cidrs) > 0
      error_message = "cluster_endpoint_public_access needs at least one CIDR in cluster_endpoint_public_access_cidrs."
    }
  }

  depends_on = [
    aws_iam_role_policy_attachment.cluster,
    aws_iam_role_policy.cluster_encryption,
    aws_cloudwatch_log_group.eks,
  ]
}

resource "aws_eks_access_entry" "admin" {
  for_each = toset(var.cluster_admin_principal_arns)

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value
}

resource "aws_eks_access_policy_association" "admin" {
  for_each = toset(var.cluster_admin_principal_arns)

  cluster_name  = aws_eks_cluster.this.name
  principal_arn = each.value
  policy_arn    = "arn:${local.partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"

  access_scope {
    type = "cluster"
  }

  depends_on = [aws_eks_access_entry.admin]
}

# The VPC CNI gets its ENI permissions through its own IRSA role (iam.tf) rather than the node
# role, so pods on the nodes cannot borrow them. It and kube-proxy go in before the nodes, which
# stay NotReady without a CNI; CoreDNS, a Deployment, after them.
resource "aws_eks_addon" "vpc_cni" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "vpc-cni"
  service_account_role_arn    = aws_iam_role.vpc_cni.arn
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  depends_on = [aws_iam_role_policy_attachment.vpc_cni]
}

resource "aws_eks_addon" "kube_proxy" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "kube-proxy"
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"
}

resource "aws_eks_addon" "coredns" {
  cluster_name                = aws_eks_cluster.this.name
  addon_name                  = "coredns"
  resolve_conflicts_on_create = "OVERWRITE"
  resolve_conflicts_on_update = "OVERWRITE"

  depends_on = [aws_eks_node_group.system]
}

################################################################################
# Managed node groups
################################################################################

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.cluster_name}-eks-node"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_role_policy_attachment" "node" {
  for_each = toset([
    "AmazonEKSWorkerNodePolicy",
    "AmazonEC2ContainerRegistryReadOnly",
  ])

  role       = aws_iam_role.node.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/${each.value}"
}

# Marks the nodes (and the pods on them, whose VPC CNI addresses share the nodes' ENI security
# groups) as the only sources the database accepts (rds.tf). Traffic rules between nodes and the
# control plane come from the EKS cluster security group, attached next to it.
resource "aws_security_group" "node" {
  name        = "${var.cluster_name}-node"
  description = "EKS nodes of ${var.cluster_name}: the only source allowed to reach the database"
  vpc_id      = aws_vpc.this.id

  tags = {
    Name = "${var.cluster_name}-node"
  }
}

# IMDSv2 only, one hop: pods (not on the host network) cannot reach the instance metadata and
# so cannot take the node role; they use IRSA. Root volumes are encrypted with the account's
# EBS key (a customer key would need a grant for the Auto Scaling service-linked role).
resource "aws_launch_template" "system" {
  name_prefix            = "${var.cluster_name}-system-"
  update_default_version = true
  vpc_security_group_ids = [aws_eks_cluster.this.vpc_config[0].cluster_security_group_id, aws_security_group.node.id]

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = 50
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${var.cluster_name}-system" })
  }
}

# The GPU AMI and CUDA images (several GB each) need a larger root volume.
resource "aws_launch_template" "gpu" {
  name_prefix            = "${var.cluster_name}-gpu-"
  update_default_version = true
  vpc_security_group_ids = [aws_eks_cluster.this.vpc_config[0].cluster_security_group_id, aws_security_group.node.id]

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  block_device_mappings {
    device_name = "/dev/xvda"

    ebs {
      volume_size           = 100
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${var.cluster_name}-gpu" })
  }
}

# On-demand nodes for everything that must stay up: MLflow, the Ray head, controllers.
resource "aws_eks_node_group" "system" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "system"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  capacity_type   = "ON_DEMAND"
  instance_types  = var.system_instance_types
  ami_type        = "AL2023_x86_64_STANDARD"

  scaling_config {
    min_size     = var.system_node_min_size
    max_size     = var.system_node_max_size
    desired_size = var.system_node_min_size
  }

  update_config {
    max_unavailable = 1
  }

  launch_template {
    id      = aws_launch_template.system.id
    version = aws_launch_template.system.latest_version
  }

  labels = {
    "visionops.io/pool" = "system"
  }

  lifecycle {
    # The cluster autoscaler owns the current size.
    ignore_changes = [scaling_config[0].desired_size]

    precondition {
      condition     = var.system_node_min_size <= var.system_node_max_size
      error_message = "system_node_min_size must not exceed system_node_max_size."
    }
  }

  depends_on = [
    aws_iam_role_policy_attachment.node,
    aws_eks_addon.vpc_cni,
    aws_eks_addon.kube_proxy,
  ]
}

# Spot GPU nodes for Ray's GPU workers, from zero: the cluster autoscaler adds one when a GPU pod
# is pending and removes it once idle. EKS labels every node of the group
# eks.amazonaws.com/capacityType=SPOT by itself (the eks.amazonaws.com/ prefix is reserved); the
# ray-cluster chart's GPU group selects that label and visionops.io/gpu=true, and tolerates the
# taint that keeps everything without a GPU request off these nodes. The NVIDIA AMI carries the
# driver; the NVIDIA device plugin (a DaemonSet) advertises nvidia.com/gpu.
resource "aws_eks_node_group" "gpu" {
  cluster_name    = aws_eks_cluster.this.name
  node_group_name = "gpu-spot"
  node_role_arn   = aws_iam_role.node.arn
  subnet_ids      = aws_subnet.private[*].id
  capacity_type   = "SPOT"
  instance_types  = var.gpu_instance_types
  ami_type        = "AL2023_x86_64_NVIDIA"

  scaling_config {
    min_size     = var.gpu_node_min_size
    max_size     = var.gpu_node_max_size
    desired_size = var.gpu_node_min_size
  }

  update_config {
    max_unavailable = 1
  }

  launch_template {
    id      = aws_launch_template.gpu.id
    version = aws_launch_template.gpu.latest_version
  }

  labels = {
    "visionops.io/pool" = "gpu"
    "visionops.io/gpu"  = "true"
  }

  taint {
    key    = "nvidia.com/gpu"
    value  = "true"
    effect = "NO_SCHEDULE"
  }

  lifecycle {
    ignore_changes = [scaling_config[0].desired_size]

    precondition {
      condition     = var.gpu_node_min_size <= var.gpu_node_max_size
      error_message = "gpu_node_min_size must not exceed gpu_node_max_size."
    }
  }

  depends_on = [
    aws_iam_role_policy_attachment.node,
    aws_eks_addon.vpc_cni,
    aws_eks_addon.kube_proxy,
  ]
}

################################################################################
# The node groups' Auto Scaling groups, as the cluster autoscaler reads them
################################################################################

# Auto-discovery: the autoscaler (scripts/lib/common.sh, autoDiscovery.clusterName) manages the
# groups that carry both tags, and its IAM policy (iam.tf) lets it resize only those tagged
# owned. EKS puts them on the Auto Scaling group of every managed node group; they are set here
# too, with EKS's values, so that the three visibly agree. A node group's own tags never reach
# its Auto Scaling group, hence aws_autoscaling_group_tag.
#
# Scaling the GPU group up from zero: with no node to copy, the autoscaler builds a template node
# from node-template tags on the group (it asks the EKS API for the group's labels and taints only
# until the group has had a first node). Without them a pending Ray GPU worker, which selects
# these labels and tolerates the taint, would look as if no group could take it.
locals {
  autoscaler_discovery_tags = {
    "k8s.io/cluster-autoscaler/enabled"             = "true"
    "k8s.io/cluster-autoscaler/${var.cluster_name}" = "owned"
  }

  gpu_node_template_tags = {
    "k8s.io/cluster-autoscaler/node-template/label/visionops.io/pool"              = "gpu"
    "k8s.io/cluster-autoscaler/node-template/label/visionops.io/gpu"               = "true"
    "k8s.io/cluster-autoscaler/node-template/label/eks.amazonaws.com/capacityType" = "SPOT"
    "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu"                 = "true:NoSchedule"
  }
}

# A managed node group has exactly one Auto Scaling group.
resource "aws_autoscaling_group_tag" "system" {
  for_each = local.autoscaler_discovery_tags

  autoscaling_group_name = aws_eks_node_group.system.resources[0].autoscaling_groups[0].name

  # On the group only: nodes get their labels and taint from the node group itself.
  tag {
    key                 = each.key
    value               = each.value
    propagate_at_launch = false
  }
}

resource "aws_autoscaling_group_tag" "gpu" {
  for_each = merge(local.autoscaler_discovery_tags, local.gpu_node_template_tags)

  autoscaling_group_name = aws_eks_node_group.gpu.resources[0].autoscaling_groups[0].name

  tag {
    key                 = each.key
    value               = each.value
    propagate_at_launch = false
  }
}
