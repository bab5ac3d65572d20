#!/usr/bin/env bash
# Prints the health of an atoms-auth server and exits 0 when it is healthy or degraded,
# 1 when it is unhealthy or does not answer.
#   scripts/health_check.sh [BASE_URL]     (default http://127.0.0.1:8080)
set -euo pipefail
base=${1:-http://127.0.0.1:8080}
if ! body=$(curl -sS --max-time 5 "$base/health"); then
  echo "unreachable: $base" >&2
  exit 1
fi
echo "$body"
status=$(printf '%s' "$body" | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
case "$status" in
  healthy | degraded) exit 0 ;;
  *) exit 1 ;;
esac
