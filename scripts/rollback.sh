#!/usr/bin/env bash
# Returns the compose stack to the tag deployed before the current one. Schema changes are
# additive within a minor version, so the previous binary runs on the migrated database;
# across a migration that is not, restore the backup taken before the deploy.
#   scripts/rollback.sh
set -euo pipefail
cd "$(dirname "$0")/.."
previous=$(cat .deploy/previous 2>/dev/null) || { echo "rollback.sh: no previous deploy recorded" >&2; exit 1; }
export ATOMS_AUTH_IMAGE_TAG="$previous"
docker compose up -d --no-deps atoms-auth
echo "$previous" > .deploy/current
echo "rolled back to $previous"
