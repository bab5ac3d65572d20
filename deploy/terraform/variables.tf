variable "name" {
  description = "Prefix of every resource's name."
  type        = string
  default     = "atoms-auth"
}

variable "environment" {
  description = "dev, staging or prod."
  type        = string

  validation {
    condition     = contains(["dev", "staging", "prod"], var.environment)
    error_message = "environment must be dev, staging or prod."
  }
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "eu-west-1"
}

variable "image" {
  description = "The server's container image, with its tag or digest."
  type        = string
}

variable "issuer" {
  description = "The public https URL of the server: the tokens' iss and the base of its metadata (ATOMS_AUTH_ISSUER)."
  type        = string

  validation {
    condition     = startswith(var.issuer, "https://")
    error_message = "issuer must be an https URL."
  }
}

variable "certificate_arn" {
  description = "ACM certificate of the issuer's host name, served by the load balancer."
  type        = string
}

variable "vpc_cidr" {
  description = "Address range of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "az_count" {
  description = "Availability zones the service, database and cache span (at least 2)."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 4
    error_message = "az_count must be 2 to 4."
  }
}

variable "ingress_cidrs" {
  description = "Who may reach the load balancer's HTTPS listener."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "task_cpu" {
  description = "CPU units of one task (1024 = one vCPU)."
  type        = number
  default     = 512
}

variable "task_memory" {
  description = "Memory of one task, MiB."
  type        = number
  default     = 1024
}

variable "min_tasks" {
  description = "Fewest running tasks."
  type        = number
  default     = 2
}

variable "max_tasks" {
  description = "Most running tasks the autoscaling may start."
  type        = number
  default     = 6
}

variable "cpu_target_percent" {
  description = "Average CPU the target-tracking policy holds the service at."
  type        = number
  default     = 60
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_allocated_storage_gb" {
  description = "Initial database storage; it grows on its own up to ten times this."
  type        = number
  default     = 50
}

variable "db_multi_az" {
  description = "A standby in a second zone that RDS fails over to."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery)."
  type        = number
  default     = 14
}

variable "db_pool_size" {
  description = "Database connections per task (ATOMS_AUTH_DATABASE_POOL_SIZE)."
  type        = number
  default     = 16
}

variable "redis_node_type" {
  description = "ElastiCache node type."
  type        = string
  default     = "cache.t4g.small"
}

variable "redis_replicas" {
  description = "Read replicas beside the primary (one or more gives automatic failover)."
  type        = number
  default     = 1
}

variable "deletion_protection" {
  description = "Protect the database and the load balancer from deletion, and keep a final snapshot."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Days the CloudWatch log groups keep the server's logs and the VPC's flow logs."
  type        = number
  default     = 365
}

variable "extra_environment" {
  description = "Further ATOMS_AUTH_* settings of the server (see the README's configuration tables)."
  type        = map(string)
  default     = {}
}
