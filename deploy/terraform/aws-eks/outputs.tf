# What the setup scripts and the Helm values need after `terraform apply` (terraform output -raw
# NAME). None of it is secret: the database password stays in Secrets Manager, named by ARN.

output "region" {
  description = "AWS region of the stack."
  value       = var.region
}

output "cluster_name" {
  description = "Name of the EKS cluster (aws eks update-kubeconfig --name)."
  value       = aws_eks_cluster.this.name
}

output "cluster_endpoint" {
  description = "URL of the Kubernetes API server."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA certificate of the Kubernetes API server."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${aws_eks_cluster.this.name}"
}

output "oidc_provider_arn" {
  description = "ARN of the IAM OIDC provider of the cluster, trusted by the IRSA roles."
  value       = aws_iam_openid_connect_provider.eks.arn
}

output "vpc_id" {
  description = "ID of the VPC (the AWS Load Balancer Controller's vpcId)."
  value       = aws_vpc.this.id
}

output "rds_endpoint" {
  description = "host:port of the MLflow PostgreSQL database."
  value       = aws_db_instance.this.endpoint
}

output "rds_address" {
  description = "Host name of the MLflow PostgreSQL database."
  value       = aws_db_instance.this.address
}

output "db_name" {
  description = "Database of MLflow's tracking store."
  value       = aws_db_instance.this.db_name
}

output "db_master_username" {
  description = "Master user of the database."
  value       = aws_db_instance.this.username
}

output "db_master_secret_arn" {
  description = "ARN of the Secrets Manager secret, managed and rotated by RDS, that holds the master user's username and password."
  value       = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "artifact_bucket_name" {
  description = "Name of the S3 bucket for MLflow artifacts and Ray Tune storage."
  value       = aws_s3_bucket.artifacts.bucket
}

output "mlflow_artifacts_destination" {
  description = "The MLflow server's --artifacts-destination."
  value       = "s3://${aws_s3_bucket.artifacts.bucket}/${var.mlflow_artifact_prefix}"
}

output "ray_storage_path" {
  description = "S3 prefix of the Ray role: archived sweeps, or a Ray Tune storage_path on S3."
  value       = "s3://${aws_s3_bucket.artifacts.bucket}/${var.ray_storage_prefix}"
}

output "efs_file_system_id" {
  description = "ID of the Ray cluster's shared EFS file system (the efs-sc StorageClass's fileSystemId)."
  value       = aws_efs_file_system.ray.id
}

output "mlflow_role_arn" {
  description = "IRSA role of the MLflow server: the eks.amazonaws.com/role-arn annotation of its service account."
  value       = aws_iam_role.mlflow.arn
}

output "ray_role_arn" {
  description = "IRSA role of the Ray head and workers: the eks.amazonaws.com/role-arn annotation of their service account."
  value       = aws_iam_role.ray.arn
}

output "cluster_autoscaler_role_arn" {
  description = "IRSA role of the cluster autoscaler (service account kube-system/cluster-autoscaler)."
  value       = aws_iam_role.cluster_autoscaler.arn
}

output "load_balancer_controller_role_arn" {
  description = "IRSA role of the AWS Load Balancer Controller (service account kube-system/aws-load-balancer-controller)."
  value       = aws_iam_role.load_balancer_controller.arn
}
