# One customer-managed key encrypts the secrets, the logs, the database and the cache.
# Secrets Manager holds what the server reads at start: the master key (which seals signing
# keys, the refresh-token MAC key and webhook secrets at rest), the database URL and the
# Redis URL. Their values are generated once; later applies leave them alone, so a value
# rotated in Secrets Manager is not put back.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

resource "aws_kms_key" "main" {
  description             = "${local.prefix}: secrets, logs, database and cache"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "Account"
        Effect    = "Allow"
        Principal = { AWS = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root" }
        Action    = "kms:*"
        Resource  = "*"
      },
      {
        Sid       = "CloudWatchLogs"
        Effect    = "Allow"
        Principal = { Service = "logs.${var.region}.amazonaws.com" }
        Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
        Resource  = "*"
        Condition = {
          ArnLike = {
            "kms:EncryptionContext:aws:logs:arn" = "arn:${data.aws_partition.current.partition}:logs:${var.region}:${data.aws_caller_identity.current.account_id}:*"
          }
        }
      },
    ]
  })
}

resource "aws_kms_alias" "main" {
  name          = "alias/${local.prefix}"
  target_key_id = aws_kms_key.main.key_id
}

data "aws_secretsmanager_random_password" "master_key" {
  password_length     = 64
  exclude_punctuation = true
}

data "aws_secretsmanager_random_password" "database" {
  password_length     = 40
  exclude_punctuation = true
}

data "aws_secretsmanager_random_password" "redis" {
  password_length     = 64
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "master_key" {
  #checkov:skip=CKV2_AWS_57:the master key seals data at rest; it is changed only with a planned re-seal, never on a schedule
  name                    = "${local.prefix}/master-key"
  description             = "ATOMS_AUTH_MASTER_KEY"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 30
}

resource "aws_secretsmanager_secret_version" "master_key" {
  secret_id     = aws_secretsmanager_secret.master_key.id
  secret_string = data.aws_secretsmanager_random_password.master_key.random_password

  lifecycle {
    ignore_changes = [secret_string]
  }
}

resource "aws_secretsmanager_secret" "database_url" {
  #checkov:skip=CKV2_AWS_57:the password inside is rotated together with RDS's (see the module's README), not by a rotation function
  name                    = "${local.prefix}/database-url"
  description             = "ATOMS_AUTH_DATABASE_URL"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 30
}

resource "aws_secretsmanager_secret_version" "database_url" {
  secret_id     = aws_secretsmanager_secret.database_url.id
  secret_string = "postgres://${aws_db_instance.main.username}:${data.aws_secretsmanager_random_password.database.random_password}@${aws_db_instance.main.endpoint}/${aws_db_instance.main.db_name}?sslmode=require"

  lifecycle {
    ignore_changes = [secret_string]
  }
}

resource "aws_secretsmanager_secret" "redis_url" {
  #checkov:skip=CKV2_AWS_57:the auth token inside is rotated with ElastiCache's ROTATE strategy (see the module's README)
  name                    = "${local.prefix}/redis-url"
  description             = "ATOMS_AUTH_REDIS_URL"
  kms_key_id              = aws_kms_key.main.arn
  recovery_window_in_days = 30
}

resource "aws_secretsmanager_secret_version" "redis_url" {
  secret_id     = aws_secretsmanager_secret.redis_url.id
  secret_string = "rediss://:${data.aws_secretsmanager_random_password.redis.random_password}@${aws_elasticache_replication_group.main.primary_endpoint_address}:6379"

  lifecycle {
    ignore_changes = [secret_string]
  }
}
