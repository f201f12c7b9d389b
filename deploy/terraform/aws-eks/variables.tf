# Inputs of the visionops EKS stack. Nothing secret is an input: the RDS master password is
# generated and rotated by RDS in Secrets Manager (see rds.tf), so no password ever passes
# through a variable, a tfvars file or the plan.

variable "region" {
  description = "AWS region of every resource, e.g. us-east-1."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "The region must look like us-east-1 or us-gov-west-1."
  }
}

variable "cluster_name" {
  description = "Name of the EKS cluster; also the prefix of the VPC, database, bucket and IAM role names."
  type        = string
  default     = "visionops"

  # Lower case and at most 32 characters because the name is part of S3 bucket names (63
  # characters, no capitals) and IAM role names (64 characters).
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.cluster_name))
    error_message = "The cluster name must be 3-32 characters of lower-case letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "kubernetes_version" {
  description = "EKS Kubernetes version (major.minor). Keep it in EKS standard support: a version past it bills extended support, six times the control-plane price."
  type        = string
  default     = "1.35"

  validation {
    condition     = can(regex("^1\\.[0-9]+$", var.kubernetes_version)) && try(tonumber(split(".", var.kubernetes_version)[1]) >= 31, false)
    error_message = "The Kubernetes version must be major.minor and at least 1.31, e.g. 1.33."
  }
}

variable "availability_zones" {
  description = "The three Availability Zones of the subnets, nodes and database, in the region (change them with it)."
  type        = list(string)
  default     = ["us-east-1a", "us-east-1b", "us-east-1c"]

  validation {
    condition     = length(distinct(var.availability_zones)) == 3 && alltrue([for az in var.availability_zones : can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9][a-z]$", az))])
    error_message = "Give three different zone names of the region, e.g. [\"us-east-1a\", \"us-east-1b\", \"us-east-1c\"]."
  }
}

variable "vpc_cidr" {
  description = "IPv4 CIDR of the VPC: a /16 to /20; each AZ gets a private subnet of a sixteenth of it and a public one of a 256th."
  type        = string
  default     = "10.20.0.0/16"

  validation {
    condition     = can(regex("^[0-9.]+/[0-9]+$", var.vpc_cidr)) && can(cidrhost(var.vpc_cidr, 0)) && try(tonumber(split("/", var.vpc_cidr)[1]) >= 16 && tonumber(split("/", var.vpc_cidr)[1]) <= 20, false)
    error_message = "The VPC CIDR must be a valid IPv4 CIDR between /16 and /20, e.g. 10.20.0.0/16."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway shared by the three AZs (cheaper) instead of one per AZ (egress survives the loss of an AZ)."
  type        = bool
  default     = false
}

variable "cluster_endpoint_public_access" {
  description = "Expose the Kubernetes API publicly as well, limited to cluster_endpoint_public_access_cidrs; off means the API is reachable only from inside the VPC."
  type        = bool
  default     = false
}

variable "cluster_endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the public Kubernetes API endpoint when it is enabled, e.g. an office or VPN egress address."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for cidr in var.cluster_endpoint_public_access_cidrs : can(cidrhost(cidr, 0)) && cidr != "0.0.0.0/0"])
    error_message = "Each public-access CIDR must be a valid IPv4 CIDR narrower than 0.0.0.0/0."
  }
}

variable "cluster_admin_principal_arns" {
  description = "IAM roles or users given cluster-admin through EKS access entries, besides the identity that runs terraform apply."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.cluster_admin_principal_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:(role|user)/.+$", arn))])
    error_message = "Each cluster admin must be an IAM role or user ARN, e.g. arn:aws:iam::123456789012:role/platform-admin."
  }
}

variable "system_instance_types" {
  description = "Instance types of the on-demand system node group (MLflow, controllers, Ray head)."
  type        = list(string)
  default     = ["t3.medium"]

  validation {
    condition     = length(var.system_instance_types) > 0 && alltrue([for t in var.system_instance_types : can(regex("^[a-z][a-z0-9-]*\\.[a-z0-9]+$", t))])
    error_message = "Give at least one instance type, each like t3.medium."
  }
}

variable "system_node_min_size" {
  description = "Minimum number of system nodes; two keep MLflow's two replicas on different nodes."
  type        = number
  default     = 2

  validation {
    condition     = var.system_node_min_size >= 1 && var.system_node_min_size <= 10 && floor(var.system_node_min_size) == var.system_node_min_size
    error_message = "The system node minimum must be a whole number from 1 to 10."
  }
}

variable "system_node_max_size" {
  description = "Maximum number of system nodes the cluster autoscaler may reach."
  type        = number
  default     = 4

  validation {
    condition     = var.system_node_max_size >= 1 && var.system_node_max_size <= 20 && floor(var.system_node_max_size) == var.system_node_max_size
    error_message = "The system node maximum must be a whole number from 1 to 20."
  }
}

variable "gpu_instance_types" {
  description = "Spot instance types of the GPU node group, all with one GPU and the same vCPU and memory so the autoscaler can treat them alike; several types make a spot shortage less likely."
  type        = list(string)
  default     = ["g4dn.xlarge", "g5.xlarge"]

  validation {
    condition     = length(var.gpu_instance_types) > 0 && alltrue([for t in var.gpu_instance_types : can(regex("^(g4dn|g5|g6|g6e)\\.[a-z0-9]+$", t))])
    error_message = "Give at least one NVIDIA GPU instance type of the g4dn, g5, g6 or g6e families, e.g. g4dn.xlarge."
  }
}

variable "gpu_node_min_size" {
  description = "Minimum number of GPU spot nodes; 0 lets the group scale to zero when no GPU pod is pending."
  type        = number
  default     = 0

  validation {
    condition     = var.gpu_node_min_size >= 0 && var.gpu_node_min_size <= 5 && floor(var.gpu_node_min_size) == var.gpu_node_min_size
    error_message = "The GPU node minimum must be a whole number from 0 to 5."
  }
}

variable "gpu_node_max_size" {
  description = "Maximum number of GPU spot nodes; matches the Ray cluster's GPU worker maxReplicas."
  type        = number
  default     = 5

  validation {
    condition     = var.gpu_node_max_size >= 1 && var.gpu_node_max_size <= 20 && floor(var.gpu_node_max_size) == var.gpu_node_max_size
    error_message = "The GPU node maximum must be a whole number from 1 to 20."
  }
}

variable "db_instance_class" {
  description = "RDS instance class of the MLflow PostgreSQL database."
  type        = string
  default     = "db.t3.small"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.db_instance_class))
    error_message = "The database instance class must look like db.t3.small."
  }
}

variable "db_allocated_storage_gib" {
  description = "Initial gp3 storage of the database in GiB; storage autoscaling may grow it to db_max_allocated_storage_gib."
  type        = number
  default     = 20

  validation {
    condition     = var.db_allocated_storage_gib >= 20 && var.db_allocated_storage_gib <= 1000
    error_message = "The allocated storage must be from 20 to 1000 GiB."
  }
}

variable "db_max_allocated_storage_gib" {
  description = "Upper bound of RDS storage autoscaling in GiB."
  type        = number
  default     = 100

  validation {
    condition     = var.db_max_allocated_storage_gib >= 20 && var.db_max_allocated_storage_gib <= 5000
    error_message = "The maximum allocated storage must be from 20 to 5000 GiB."
  }
}

variable "db_backup_retention_days" {
  description = "Days of automated RDS backups (point-in-time recovery window)."
  type        = number
  default     = 7

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "The backup retention must be from 7 to 35 days."
  }
}

variable "db_name" {
  description = "Database created with the instance for MLflow's tracking store; the auth database is created by the setup scripts."
  type        = string
  default     = "mlflow"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_name))
    error_message = "The database name must start with a letter and hold at most 63 lower-case letters, digits and underscores."
  }
}

variable "db_master_username" {
  description = "Master user of the database; its password is generated by RDS and kept in Secrets Manager."
  type        = string
  default     = "visionops_admin"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{0,62}$", var.db_master_username)) && !contains(["admin", "postgres", "rdsadmin", "rdsrepladmin"], var.db_master_username)
    error_message = "The master username must be a lower-case identifier of at most 63 characters and not a name RDS reserves (admin, postgres, rdsadmin, rdsrepladmin)."
  }
}

variable "mlflow_artifact_prefix" {
  description = "Key prefix of MLflow's artifacts in the bucket (the server's --artifacts-destination is s3://BUCKET/PREFIX)."
  type        = string
  default     = "mlflow"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]*$", var.mlflow_artifact_prefix))
    error_message = "The MLflow artifact prefix must be lower-case letters, digits and hyphens without slashes, e.g. mlflow."
  }
}

variable "ray_storage_prefix" {
  description = "Key prefix of Ray Tune's trial results and checkpoints in the bucket (storage_path s3://BUCKET/PREFIX)."
  type        = string
  default     = "ray"

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9-]*$", var.ray_storage_prefix))
    error_message = "The Ray storage prefix must be lower-case letters, digits and hyphens without slashes, e.g. ray."
  }
}

variable "kubernetes_namespace" {
  description = "Namespace of the MLflow and Ray service accounts that the IRSA roles trust."
  type        = string
  default     = "visionops"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.kubernetes_namespace))
    error_message = "The namespace must be a DNS-1123 label: lower-case letters, digits and hyphens, at most 63 characters."
  }
}

variable "mlflow_service_account" {
  description = "Kubernetes service account of the MLflow server (the mlflow chart's serviceAccount.name)."
  type        = string
  default     = "mlflow"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.mlflow_service_account))
    error_message = "The MLflow service account must be a DNS-1123 subdomain, e.g. mlflow."
  }
}

variable "ray_service_account" {
  description = "Kubernetes service account of the Ray head and workers (the ray-cluster chart's serviceAccount.name)."
  type        = string
  default     = "ray"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.ray_service_account))
    error_message = "The Ray service account must be a DNS-1123 subdomain, e.g. ray."
  }
}

variable "log_retention_days" {
  description = "Retention of the CloudWatch log groups (EKS control plane, RDS); at least a year for audit."
  type        = number
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "The log retention must be one of CloudWatch's values of a year or more: 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653 days."
  }
}

variable "tags" {
  description = "Extra tags for every resource, e.g. a cost centre."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k in keys(var.tags) : !startswith(lower(k), "aws:")])
    error_message = "Tag keys may not start with aws:, which AWS reserves."
  }
}
