#!/usr/bin/env bash
# Deploys an image tag with the compose stack: records the running tag for rollback.sh,
# pulls, migrates, replaces the service, and waits until it is ready.
#   scripts/deploy.sh TAG
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:?usage: deploy.sh TAG}
state=.deploy
mkdir -p "$state"
if [ -f "$state/current" ]; then
  cp "$state/current" "$state/previous"
fi
export ATOMS_AUTH_IMAGE_TAG="$tag"
docker compose pull atoms-auth
docker compose run --rm atoms-auth migrate up
docker compose up -d --no-deps atoms-auth
for _ in $(seq 1 60); do
  if docker compose exec -T atoms-auth atoms-auth health >/dev/null 2>&1; then
    echo "$tag" > "$state/current"
    echo "deployed $tag"
    exit 0
  fi
  sleep 2
done
echo "deploy.sh: $tag did not become ready; run scripts/rollback.sh" >&2
exit 1
