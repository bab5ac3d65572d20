#!/usr/bin/env bash
# Sets how many server instances run.
#   scripts/scale.sh COUNT                          the compose stack's atoms-auth service
#   scripts/scale.sh --ecs CLUSTER SERVICE COUNT    an ECS service (deploy/terraform's outputs
#                                                   cluster_name and service_name)
# On ECS the autoscaling bounds (min_tasks, max_tasks) still apply: a count outside them is
# refused here, and the next scaling decision may move it within them.
set -euo pipefail
cd "$(dirname "$0")/.."

count_ok() {
  [[ "$1" =~ ^[0-9]+$ ]] || { echo "scale.sh: COUNT must be a whole number, not '$1'" >&2; exit 2; }
}

if [ "${1:-}" = "--ecs" ]; then
  cluster=${2:?usage: scale.sh --ecs CLUSTER SERVICE COUNT}
  service=${3:?usage: scale.sh --ecs CLUSTER SERVICE COUNT}
  count=${4:?usage: scale.sh --ecs CLUSTER SERVICE COUNT}
  count_ok "$count"
  bounds=$(aws application-autoscaling describe-scalable-targets --service-namespace ecs \
    --resource-ids "service/$cluster/$service" \
    --query 'ScalableTargets[0].[MinCapacity,MaxCapacity]' --output text)
  read -r min max <<<"$bounds"
  if [ "$min" != "None" ] && { [ "$count" -lt "$min" ] || [ "$count" -gt "$max" ]; }; then
    echo "scale.sh: $count is outside the autoscaling bounds $min..$max (change min_tasks/max_tasks)" >&2
    exit 1
  fi
  aws ecs update-service --cluster "$cluster" --service "$service" --desired-count "$count" \
    --query 'service.desiredCount' --output text
  aws ecs wait services-stable --cluster "$cluster" --services "$service"
  echo "scale.sh: $service runs $count tasks"
  exit 0
fi

count=${1:?usage: scale.sh COUNT | scale.sh --ecs CLUSTER SERVICE COUNT}
count_ok "$count"
# Several instances cannot all publish host port 8080: put a load balancer in front (see
# docs/operations.md) or use the staging file, which publishes a range.
docker compose up -d --no-deps --scale "atoms-auth=$count" atoms-auth
for _ in $(seq 1 60); do
  healthy=$(docker compose ps atoms-auth --format '{{.Health}}' | grep -c '^healthy$' || true)
  if [ "$healthy" -ge "$count" ]; then
    echo "scale.sh: atoms-auth runs $count healthy instances"
    exit 0
  fi
  sleep 2
done
echo "scale.sh: fewer than $count instances became healthy" >&2
exit 1
