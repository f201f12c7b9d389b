# PostgreSQL for MLflow's tracking and auth stores: Multi-AZ, encrypted, reachable only from the
# EKS nodes. The master password is generated, stored and rotated by RDS in Secrets Manager
# (manage_master_user_password), so it never appears in a variable, the plan or the state; the
# setup scripts read it from the secret named by the db_master_secret_arn output.

locals {
  db_identifier = "${var.cluster_name}-mlflow"
}

resource "aws_kms_key" "rds" {
  description             = "${var.cluster_name}: RDS storage, snapshots, Performance Insights and the master user secret"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_account_admin.json
}

resource "aws_kms_alias" "rds" {
  name          = "alias/${var.cluster_name}-rds"
  target_key_id = aws_kms_key.rds.key_id
}

resource "aws_db_subnet_group" "this" {
  name        = local.db_identifier
  description = "Private subnets of ${var.cluster_name} for the MLflow database"
  subnet_ids  = aws_subnet.private[*].id
}

resource "aws_security_group" "rds" {
  name        = "${local.db_identifier}-db"
  description = "MLflow PostgreSQL: port 5432 from the EKS nodes of ${var.cluster_name} only"
  vpc_id      = aws_vpc.this.id

  ingress {
    description     = "PostgreSQL from the EKS nodes and their pods"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_security_group.node.id]
  }

  tags = {
    Name = "${local.db_identifier}-db"
  }
}

resource "aws_db_parameter_group" "this" {
  name        = "${local.db_identifier}-pg16"
  family      = "postgres16"
  description = "MLflow PostgreSQL 16: TLS only, DDL and slow-query logging"

  # Clients must connect over TLS (sslmode=require or stricter in the database URI).
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  # Schema changes (MLflow migrations, grants) and statements slower than a second: enough to
  # audit and tune without logging every tracking call.
  parameter {
    name  = "log_statement"
    value = "ddl"
  }

  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
}

# RDS writes these itself, with no expiry and no encryption, unless they exist first.
resource "aws_cloudwatch_log_group" "rds" {
  for_each = toset(["postgresql", "upgrade"])

  name              = "/aws/rds/instance/${local.db_identifier}/${each.value}"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.logs.arn
}

data "aws_iam_policy_document" "rds_monitoring_assume" {
  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["monitoring.rds.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "rds_monitoring" {
  name               = "${local.db_identifier}-rds-monitoring"
  assume_role_policy = data.aws_iam_policy_document.rds_monitoring_assume.json
}

resource "aws_iam_role_policy_attachment" "rds_monitoring" {
  role       = aws_iam_role.rds_monitoring.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
}

resource "aws_db_instance" "this" {
  identifier     = local.db_identifier
  engine         = "postgres"
  engine_version = "16"
  instance_class = var.db_instance_class
  db_name        = var.db_name
  port           = 5432

  username                      = var.db_master_username
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.rds.key_id
  # Lets the setup scripts and operators connect with short-lived IAM tokens instead of the
  # master password.
  iam_database_authentication_enabled = true

  allocated_storage     = var.db_allocated_storage_gib
  max_allocated_storage = var.db_max_allocated_storage_gib
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.rds.arn

  multi_az               = true
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.rds.id]
  publicly_accessible    = false
  parameter_group_name   = aws_db_parameter_group.this.name

  backup_retention_period   = var.db_backup_retention_days
  backup_window             = "03:00-04:00"
  maintenance_window        = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot     = true
  deletion_protection       = true
  skip_final_snapshot       = false
  final_snapshot_identifier = "${local.db_identifier}-final"
  delete_automated_backups  = false

  auto_minor_version_upgrade  = true
  allow_major_version_upgrade = false

  enabled_cloudwatch_logs_exports = ["postgresql", "upgrade"]

  # Seven days of Performance Insights are free; enhanced monitoring every 60 s costs only the
  # CloudWatch Logs it writes.
  performance_insights_enabled          = true
  performance_insights_kms_key_id       = aws_kms_key.rds.arn
  performance_insights_retention_period = 7
  monitoring_interval                   = 60
  monitoring_role_arn                   = aws_iam_role.rds_monitoring.arn

  lifecycle {
    precondition {
      condition     = var.db_max_allocated_storage_gib >= var.db_allocated_storage_gib
      error_message = "db_max_allocated_storage_gib must be at least db_allocated_storage_gib."
    }
  }

  depends_on = [aws_cloudwatch_log_group.rds]
}
