# IAM roles for service accounts (IRSA): pods assume a role through the cluster's OIDC issuer,
# each role trusting only the service accounts named below, instead of borrowing the node role.
#
# Bucket layout and who may touch what:
#   s3://BUCKET/mlflow/  the MLflow server only (get, put, delete, list). Clients never hold S3
#                        credentials: the server proxies artifact uploads and downloads and
#                        applies its own per-experiment permissions, so Ray jobs get no access
#                        here either; a direct grant would bypass those permissions.
#   s3://BUCKET/ray/     Ray head and workers (get, put, delete, list), nothing else: sweep
#                        state lives on the shared EFS volume (efs.tf), which is what `visionops
#                        tune --storage-path` takes today. This prefix takes copies of finished
#                        sweeps (aws s3 sync from the volume) and a Ray Tune storage_path of
#                        s3://BUCKET/ray, whose trial checkpoints Tune also prunes (num_to_keep):
#                        hence delete. A prefix of its own so that no Ray job can read or
#                        overwrite MLflow artifacts behind the server's permissions.
# Both roles may use the bucket's KMS key only through S3.

data "tls_certificate" "oidc" {
  url = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

resource "aws_iam_openid_connect_provider" "eks" {
  url             = aws_eks_cluster.this.identity[0].oidc[0].issuer
  client_id_list  = ["sts.amazonaws.com"]
  thumbprint_list = [data.tls_certificate.oidc.certificates[0].sha1_fingerprint]
}

locals {
  oidc_issuer = replace(aws_iam_openid_connect_provider.eks.url, "https://", "")

  # Role => the service accounts (namespace:name) that may assume it. The add-ons' accounts in
  # kube-system are the names scripts/lib/common.sh gives them in their Helm values.
  irsa = {
    mlflow                   = ["system:serviceaccount:${var.kubernetes_namespace}:${var.mlflow_service_account}"]
    ray                      = ["system:serviceaccount:${var.kubernetes_namespace}:${var.ray_service_account}"]
    vpc-cni                  = ["system:serviceaccount:kube-system:aws-node"]
    cluster-autoscaler       = ["system:serviceaccount:kube-system:cluster-autoscaler"]
    load-balancer-controller = ["system:serviceaccount:kube-system:aws-load-balancer-controller"]
    # The EFS CSI driver's controller (access points) and node plugin (mounts).
    efs-csi = [
      "system:serviceaccount:kube-system:efs-csi-controller-sa",
      "system:serviceaccount:kube-system:efs-csi-node-sa",
    ]
  }
}

data "aws_iam_policy_document" "irsa_assume" {
  for_each = local.irsa

  statement {
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [aws_iam_openid_connect_provider.eks.arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = each.value
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

################################################################################
# MLflow server and Ray: one prefix of the artifact bucket each
################################################################################

locals {
  bucket_prefix_access = {
    mlflow = var.mlflow_artifact_prefix
    ray    = var.ray_storage_prefix
  }
}

data "aws_iam_policy_document" "bucket_prefix" {
  for_each = local.bucket_prefix_access

  statement {
    sid       = "ListOwnPrefix"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.artifacts.arn]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [each.value, "${each.value}/*"]
    }
  }

  statement {
    sid       = "LocateBucket"
    actions   = ["s3:GetBucketLocation"]
    resources = [aws_s3_bucket.artifacts.arn]
  }

  statement {
    sid = "ReadWriteOwnPrefix"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:DeleteObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    # The bare prefix too: Ray's pyarrow file system probes it as an object before listing it.
    resources = ["${aws_s3_bucket.artifacts.arn}/${each.value}", "${aws_s3_bucket.artifacts.arn}/${each.value}/*"]
  }

  statement {
    sid       = "BucketKeyThroughS3"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = [aws_kms_key.artifacts.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["s3.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "mlflow" {
  name               = "${var.cluster_name}-mlflow"
  description        = "MLflow server, service account ${var.kubernetes_namespace}/${var.mlflow_service_account}: its artifact prefix"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume["mlflow"].json
}

resource "aws_iam_role_policy" "mlflow" {
  name   = "artifacts"
  role   = aws_iam_role.mlflow.id
  policy = data.aws_iam_policy_document.bucket_prefix["mlflow"].json
}

resource "aws_iam_role" "ray" {
  name               = "${var.cluster_name}-ray"
  description        = "Ray head and workers, service account ${var.kubernetes_namespace}/${var.ray_service_account}: the Ray prefix"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume["ray"].json
}

resource "aws_iam_role_policy" "ray" {
  name   = "tune-storage"
  role   = aws_iam_role.ray.id
  policy = data.aws_iam_policy_document.bucket_prefix["ray"].json
}

################################################################################
# Cluster add-ons
################################################################################

resource "aws_iam_role" "vpc_cni" {
  name               = "${var.cluster_name}-vpc-cni"
  description        = "Amazon VPC CNI, service account kube-system/aws-node: ENIs and pod addresses"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume["vpc-cni"].json
}

resource "aws_iam_role_policy_attachment" "vpc_cni" {
  role       = aws_iam_role.vpc_cni.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonEKS_CNI_Policy"
}

resource "aws_iam_role" "efs_csi" {
  name               = "${var.cluster_name}-efs-csi"
  description        = "Amazon EFS CSI driver: access points and mounts of the Ray shared file system"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume["efs-csi"].json
}

resource "aws_iam_role_policy_attachment" "efs_csi" {
  role       = aws_iam_role.efs_csi.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonEFSCSIDriverPolicy"
}

# The Kubernetes cluster autoscaler grows the GPU group from zero when Ray's autoscaler asks for a
# GPU worker, and shrinks both groups when nodes idle. It may resize only the Auto Scaling groups
# of this cluster's managed node groups, which EKS tags k8s.io/cluster-autoscaler/<name>=owned.
data "aws_iam_policy_document" "cluster_autoscaler" {
  statement {
    sid = "DescribeWhatCannotBeScoped"
    actions = [
      "autoscaling:DescribeAutoScalingGroups",
      "autoscaling:DescribeAutoScalingInstances",
      "autoscaling:DescribeLaunchConfigurations",
      "autoscaling:DescribeScalingActivities",
      "autoscaling:DescribeTags",
      "ec2:DescribeImages",
      "ec2:DescribeInstanceTypes",
      "ec2:DescribeLaunchTemplateVersions",
      "ec2:GetInstanceTypesFromInstanceRequirements",
    ]
    resources = ["*"]
  }

  # Labels and taints of a group at zero nodes, so that a pending GPU pod is known to fit it.
  statement {
    sid       = "DescribeOwnNodegroups"
    actions   = ["eks:DescribeNodegroup"]
    resources = ["arn:${local.partition}:eks:${var.region}:${local.account_id}:nodegroup/${var.cluster_name}/*/*"]
  }

  statement {
    sid = "ResizeOwnGroups"
    actions = [
      "autoscaling:SetDesiredCapacity",
      "autoscaling:TerminateInstanceInAutoScalingGroup",
    ]
    resources = ["arn:${local.partition}:autoscaling:${var.region}:${local.account_id}:autoScalingGroup:*:autoScalingGroupName/eks-*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/k8s.io/cluster-autoscaler/${var.cluster_name}"
      values   = ["owned"]
    }
  }
}

resource "aws_iam_role" "cluster_autoscaler" {
  name               = "${var.cluster_name}-cluster-autoscaler"
  description        = "Cluster autoscaler, service account kube-system/cluster-autoscaler: node group sizes"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume["cluster-autoscaler"].json
}

resource "aws_iam_role_policy" "cluster_autoscaler" {
  name   = "node-groups"
  role   = aws_iam_role.cluster_autoscaler.id
  policy = data.aws_iam_policy_document.cluster_autoscaler.json
}

# The AWS Load Balancer Controller turns the MLflow Ingress into an ALB in the public subnets
# (tagged kubernetes.io/role/elb in main.tf). Its permissions are, statement for statement, the
# policy its project documents for the version scripts/lib/common.sh installs (v3.5.0,
# docs/install/iam_policy.json of kubernetes-sigs/aws-load-balancer-controller): whatever it
# creates it tags elbv2.k8s.aws/cluster, and it may modify or delete only what carries that tag.
# The ARNs that the document writes for any region and account are narrowed to this one; compare
# with that file when the chart version moves.
locals {
  elb_arn_prefix      = "arn:${local.partition}:elasticloadbalancing:${var.region}:${local.account_id}"
  security_group_arns = "arn:${local.partition}:ec2:${var.region}:${local.account_id}:security-group/*"
}

data "aws_iam_policy_document" "load_balancer_controller" {
  # checkov:skip=CKV_AWS_111:The controller's documented policy: load balancers, target groups and security groups it creates have no ARN before they exist, so writes are scoped by the elbv2.k8s.aws/cluster tag conditions instead; the unconditioned writes (listener rules, ingress rules on the node security groups) are the documented ones.
  # checkov:skip=CKV_AWS_356:The controller's documented policy: "*" is needed where AWS cannot scope by resource (Describe*, CreateSecurityGroup, certificate and WAF look-ups) or the resources are named only once created; the tag conditions below scope the writes.
  statement {
    sid       = "ServiceLinkedRoleOfElasticLoadBalancing"
    actions   = ["iam:CreateServiceLinkedRole"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["elasticloadbalancing.amazonaws.com"]
    }
  }

  statement {
    sid = "Describe"
    actions = [
      "ec2:DescribeAccountAttributes",
      "ec2:DescribeAddresses",
      "ec2:DescribeAvailabilityZones",
      "ec2:DescribeInternetGateways",
      "ec2:DescribeVpcs",
      "ec2:DescribeVpcPeeringConnections",
      "ec2:DescribeSubnets",
      "ec2:DescribeSecurityGroups",
      "ec2:DescribeInstances",
      "ec2:DescribeNetworkInterfaces",
      "ec2:DescribeTags",
      "ec2:GetCoipPoolUsage",
      "ec2:DescribeCoipPools",
      "ec2:GetSecurityGroupsForVpc",
      "ec2:DescribeIpamPools",
      "ec2:DescribeRouteTables",
      "elasticloadbalancing:DescribeLoadBalancers",
      "elasticloadbalancing:DescribeLoadBalancerAttributes",
      "elasticloadbalancing:DescribeListeners",
      "elasticloadbalancing:DescribeListenerCertificates",
      "elasticloadbalancing:DescribeSSLPolicies",
      "elasticloadbalancing:DescribeRules",
      "elasticloadbalancing:DescribeTargetGroups",
      "elasticloadbalancing:DescribeTargetGroupAttributes",
      "elasticloadbalancing:DescribeTargetHealth",
      "elasticloadbalancing:DescribeTags",
      "elasticloadbalancing:DescribeTrustStores",
      "elasticloadbalancing:DescribeListenerAttributes",
      "elasticloadbalancing:DescribeCapacityReservation",
    ]
    resources = ["*"]
  }

  # Certificates (the Ingress's ACM ARN), Cognito, WAF and Shield settings of an Ingress.
  statement {
    sid = "CertificatesAndProtection"
    actions = [
      "cognito-idp:DescribeUserPoolClient",
      "acm:ListCertificates",
      "acm:DescribeCertificate",
      "iam:ListServerCertificates",
      "iam:GetServerCertificate",
      "waf-regional:GetWebACL",
      "waf-regional:GetWebACLForResource",
      "waf-regional:AssociateWebACL",
      "waf-regional:DisassociateWebACL",
      "wafv2:GetWebACL",
      "wafv2:GetWebACLForResource",
      "wafv2:AssociateWebACL",
      "wafv2:DisassociateWebACL",
      "shield:GetSubscriptionState",
      "shield:DescribeProtection",
      "shield:CreateProtection",
      "shield:DeleteProtection",
    ]
    resources = ["*"]
  }

  # Lets the ALB's security group reach the pods: rules on the nodes' security groups, which the
  # controller does not own.
  statement {
    sid = "BackendSecurityGroupRules"
    actions = [
      "ec2:AuthorizeSecurityGroupIngress",
      "ec2:RevokeSecurityGroupIngress",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "CreateSecurityGroup"
    actions   = ["ec2:CreateSecurityGroup"]
    resources = ["*"]
  }

  # A new security group only with the cluster tag...
  statement {
    sid       = "TagSecurityGroupOnCreate"
    actions   = ["ec2:CreateTags"]
    resources = [local.security_group_arns]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["CreateSecurityGroup"]
    }

    condition {
      test     = "Null"
      variable = "aws:RequestTag/elbv2.k8s.aws/cluster"
      values   = ["false"]
    }
  }

  # ... and later tags only on its own groups, never changing the cluster tag itself.
  statement {
    sid       = "RetagOwnSecurityGroups"
    actions   = ["ec2:CreateTags", "ec2:DeleteTags"]
    resources = [local.security_group_arns]

    condition {
      test     = "Null"
      variable = "aws:RequestTag/elbv2.k8s.aws/cluster"
      values   = ["true"]
    }

    condition {
      test     = "Null"
      variable = "aws:ResourceTag/elbv2.k8s.aws/cluster"
      values   = ["false"]
    }
  }

  statement {
    sid = "ManageOwnSecurityGroups"
    actions = [
      "ec2:AuthorizeSecurityGroupIngress",
      "ec2:RevokeSecurityGroupIngress",
      "ec2:DeleteSecurityGroup",
    ]
    resources = ["*"]

    condition {
      test     = "Null"
      variable = "aws:ResourceTag/elbv2.k8s.aws/cluster"
      values   = ["false"]
    }
  }

  statement {
    sid = "CreateTaggedLoadBalancers"
    actions = [
      "elasticloadbalancing:CreateLoadBalancer",
      "elasticloadbalancing:CreateTargetGroup",
    ]
    resources = ["*"]

    condition {
      test     = "Null"
      variable = "aws:RequestTag/elbv2.k8s.aws/cluster"
      values   = ["false"]
    }
  }

  statement {
    sid = "ListenersAndRules"
    actions = [
      "elasticloadbalancing:CreateListener",
      "elasticloadbalancing:DeleteListener",
      "elasticloadbalancing:CreateRule",
      "elasticloadbalancing:DeleteRule",
    ]
    resources = ["*"]
  }

  statement {
    sid     = "RetagOwnLoadBalancers"
    actions = ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"]
    resources = [
      "${local.elb_arn_prefix}:targetgroup/*/*",
      "${local.elb_arn_prefix}:loadbalancer/net/*/*",
      "${local.elb_arn_prefix}:loadbalancer/app/*/*",
    ]

    condition {
      test     = "Null"
      variable = "aws:RequestTag/elbv2.k8s.aws/cluster"
      values   = ["true"]
    }

    condition {
      test     = "Null"
      variable = "aws:ResourceTag/elbv2.k8s.aws/cluster"
      values   = ["false"]
    }
  }

  statement {
    sid     = "TagListenersAndRules"
    actions = ["elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags"]
    resources = [
      "${local.elb_arn_prefix}:listener/net/*/*/*",
      "${local.elb_arn_prefix}:listener/app/*/*/*",
      "${local.elb_arn_prefix}:listener-rule/net/*/*/*",
      "${local.elb_arn_prefix}:listener-rule/app/*/*/*",
    ]
  }

  statement {
    sid = "ManageOwnLoadBalancers"
    actions = [
      "elasticloadbalancing:ModifyLoadBalancerAttributes",
      "elasticloadbalancing:SetIpAddressType",
      "elasticloadbalancing:SetSecurityGroups",
      "elasticloadbalancing:SetSubnets",
      "elasticloadbalancing:DeleteLoadBalancer",
      "elasticloadbalancing:ModifyTargetGroup",
      "elasticloadbalancing:ModifyTargetGroupAttributes",
      "elasticloadbalancing:DeleteTargetGroup",
      "elasticloadbalancing:ModifyListenerAttributes",
      "elasticloadbalancing:ModifyCapacityReservation",
      "elasticloadbalancing:ModifyIpPools",
    ]
    resources = ["*"]

    condition {
      test     = "Null"
      variable = "aws:ResourceTag/elbv2.k8s.aws/cluster"
      values   = ["false"]
    }
  }

  statement {
    sid     = "TagOnCreate"
    actions = ["elasticloadbalancing:AddTags"]
    resources = [
      "${local.elb_arn_prefix}:targetgroup/*/*",
      "${local.elb_arn_prefix}:loadbalancer/net/*/*",
      "${local.elb_arn_prefix}:loadbalancer/app/*/*",
    ]

    condition {
      test     = "StringEquals"
      variable = "elasticloadbalancing:CreateAction"
      values   = ["CreateTargetGroup", "CreateLoadBalancer"]
    }

    condition {
      test     = "Null"
      variable = "aws:RequestTag/elbv2.k8s.aws/cluster"
      values   = ["false"]
    }
  }

  statement {
    sid       = "RegisterTargets"
    actions   = ["elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets"]
    resources = ["${local.elb_arn_prefix}:targetgroup/*/*"]
  }

  statement {
    sid = "ListenerSettings"
    actions = [
      "elasticloadbalancing:SetWebAcl",
      "elasticloadbalancing:ModifyListener",
      "elasticloadbalancing:AddListenerCertificates",
      "elasticloadbalancing:RemoveListenerCertificates",
      "elasticloadbalancing:ModifyRule",
      "elasticloadbalancing:SetRulePriorities",
    ]
    resources = ["*"]
  }
}

resource "aws_iam_role" "load_balancer_controller" {
  name               = "${var.cluster_name}-load-balancer-controller"
  description        = "AWS Load Balancer Controller, service account kube-system/aws-load-balancer-controller: the ALB of the MLflow Ingress"
  assume_role_policy = data.aws_iam_policy_document.irsa_assume["load-balancer-controller"].json
}

resource "aws_iam_role_policy" "load_balancer_controller" {
  name   = "load-balancers"
  role   = aws_iam_role.load_balancer_controller.id
  policy = data.aws_iam_policy_document.load_balancer_controller.json
}
