# Redis on ElastiCache, shared by the tasks for rate limits and lockout counts: encrypted at
# rest and in transit, with an auth token, and automatic failover when it has replicas.

resource "aws_elasticache_subnet_group" "main" {
  name       = local.prefix
  subnet_ids = aws_subnet.private[*].id
}

resource "aws_elasticache_replication_group" "main" {
  #checkov:skip=CKV2_AWS_50:failover is on whenever there is a replica to fail over to (redis_replicas > 0); dev runs without one
  replication_group_id = local.prefix
  description          = "${local.prefix}: rate limits and lockout counts shared by the tasks"
  engine               = "redis"
  engine_version       = "7.1"
  node_type            = var.redis_node_type
  port                 = 6379
  num_cache_clusters   = 1 + var.redis_replicas

  automatic_failover_enabled = var.redis_replicas > 0
  multi_az_enabled           = var.redis_replicas > 0
  subnet_group_name          = aws_elasticache_subnet_group.main.name
  security_group_ids         = [aws_security_group.cache.id]

  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.main.arn
  transit_encryption_enabled = true
  auth_token                 = data.aws_secretsmanager_random_password.redis.random_password
  auth_token_update_strategy = "ROTATE"

  snapshot_retention_limit   = var.environment == "prod" ? 7 : 1
  auto_minor_version_upgrade = true
  apply_immediately          = var.environment != "prod"

  lifecycle {
    ignore_changes = [auth_token]
  }
}
