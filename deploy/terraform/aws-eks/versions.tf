# Providers of the visionops EKS stack. Nothing here is applied by the test suite: the folder is
# checked offline (python-hcl2, checkov) and applied by the EKS setup scripts in scripts/setup/.
#
# State stays local by default so a first apply needs nothing but an AWS account. A shared team
# should keep it in S3 with locking: add `backend "s3" {}` to the terraform block below and pass
# bucket, key, region and use_lockfile = true with `terraform init -backend-config=...`.
terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.90"
    }
    # Reads the SHA-1 fingerprint of the cluster's OIDC issuer for the IAM OIDC provider.
    tls = {
      source  = "hashicorp/tls"
      version = "~> 4.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = local.tags
  }
}
