#!/usr/bin/env bash
# Backs up an atoms-auth database to a file: pg_dump (custom format) for PostgreSQL, the
# online backup API (sqlite3 .backup, consistent while the server runs) for SQLite. Redis
# is backed up with its own RDB/AOF persistence, not here.
#   scripts/backup.sh DATABASE_URL BACKUP_FILE
set -euo pipefail
url=${1:?usage: backup.sh DATABASE_URL BACKUP_FILE}
out=${2:?usage: backup.sh DATABASE_URL BACKUP_FILE}
case "$url" in
  postgres://* | postgresql://*)
    # A search_path option (one schema per deployment) limits the dump to that schema.
    schema=$(printf '%s' "$url" | sed -n 's/.*options\[search_path\]=\([A-Za-z0-9_]*\).*/\1/p')
    base=${url%%\?*}
    if [ -n "$schema" ]; then
      pg_dump --format=custom --no-owner --schema="$schema" --file="$out" "$base"
    else
      pg_dump --format=custom --no-owner --file="$out" "$base"
    fi
    ;;
  sqlite://*)
    file=${url#sqlite://}
    file=${file%%\?*}
    python3 - "$file" "$out" <<'PY'
import sqlite3, sys
source = sqlite3.connect(sys.argv[1])
target = sqlite3.connect(sys.argv[2])
with target:
    source.backup(target)
PY
    ;;
  *) echo "backup.sh: unsupported database url" >&2; exit 2 ;;
esac
echo "backup written to $out"
