#!/usr/bin/env bash
# Restores a backup made by backup.sh into DATABASE_URL, replacing what is there. Stop the
# servers that use the database first.
#   scripts/restore.sh DATABASE_URL BACKUP_FILE
set -euo pipefail
url=${1:?usage: restore.sh DATABASE_URL BACKUP_FILE}
in=${2:?usage: restore.sh DATABASE_URL BACKUP_FILE}
[ -f "$in" ] || { echo "restore.sh: no such backup: $in" >&2; exit 2; }
case "$url" in
  postgres://* | postgresql://*)
    schema=$(printf '%s' "$url" | sed -n 's/.*options\[search_path\]=\([A-Za-z0-9_]*\).*/\1/p')
    base=${url%%\?*}
    if [ -n "$schema" ]; then
      psql -q -v ON_ERROR_STOP=1 "$base" -c "DROP SCHEMA IF EXISTS \"$schema\" CASCADE"
    fi
    pg_restore --no-owner --clean --if-exists --exit-on-error --dbname="$base" "$in"
    ;;
  sqlite://*)
    file=${url#sqlite://}
    file=${file%%\?*}
    rm -f "$file-wal" "$file-shm"
    cp "$in" "$file"
    ;;
  *) echo "restore.sh: unsupported database url" >&2; exit 2 ;;
esac
echo "restored $in"
