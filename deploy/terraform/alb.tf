# The load balancer: the only thing reachable from outside. It terminates TLS (TLS 1.2 and
# 1.3 only) and sends traffic to tasks that answer /health/ready.

locals {
  port = 8080
}

resource "aws_lb" "main" {
  #checkov:skip=CKV_AWS_91:every request is logged by the server itself, with its request id, to CloudWatch
  #checkov:skip=CKV2_AWS_28:a WAF is chosen per organisation; the server rate-limits per client and address itself
  name                       = local.prefix
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = aws_subnet.public[*].id
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  idle_timeout               = 60
}

resource "aws_lb_target_group" "main" {
  name                 = local.prefix
  port                 = local.port
  protocol             = "HTTP"
  target_type          = "ip"
  vpc_id               = aws_vpc.main.id
  deregistration_delay = 30

  health_check {
    path                = "/health/ready"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.main.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.main.arn
  }
}
