output "load_balancer_dns_name" {
  description = "Point the issuer's host name (a CNAME or alias record) here."
  value       = aws_lb.main.dns_name
}

output "cluster_name" {
  description = "The ECS cluster (scripts/scale.sh --ecs takes it)."
  value       = aws_ecs_cluster.main.name
}

output "service_name" {
  description = "The ECS service."
  value       = aws_ecs_service.server.name
}

output "log_group" {
  description = "Where the server's JSON logs go."
  value       = aws_cloudwatch_log_group.server.name
}

output "database_endpoint" {
  description = "The RDS endpoint (private)."
  value       = aws_db_instance.main.endpoint
}

output "secrets" {
  description = "The Secrets Manager secrets the tasks read."
  value = {
    master_key   = aws_secretsmanager_secret.master_key.arn
    database_url = aws_secretsmanager_secret.database_url.arn
    redis_url    = aws_secretsmanager_secret.redis_url.arn
  }
}

output "issuer" {
  description = "The server's public URL (the smoke test's target)."
  value       = var.issuer
}

output "image" {
  description = "The image the service runs (the deploy workflow rolls back to it)."
  value       = var.image
}
