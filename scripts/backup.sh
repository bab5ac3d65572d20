#!/usr/bin/env bash
# Backs up an atoms-auth database to a file: pg_dump (custom format) for PostgreSQL, the
# online backup API (sqlite3 .backup, consistent while the server runs) for SQLite's two
# files, in a tar archive. Redis
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
    # Two databases: the main file and the audit log's beside it (atoms-auth.db:
    # atoms-auth-audit.db), each backed up on its own, in one tar archive.
    file=${url#sqlite://}
    file=${file%%\?*}
    python3 - "$file" "$out" <<'PY'
import os, sqlite3, sys, tarfile, tempfile
main, out = sys.argv[1], sys.argv[2]
root, extension = os.path.splitext(main)
with tempfile.TemporaryDirectory() as work, tarfile.open(out, "w") as archive:
    for name, path in (("main.db", main), ("audit.db", root + "-audit" + extension)):
        if not os.path.exists(path):
            continue
        copy = os.path.join(work, name)
        source, target = sqlite3.connect(path), sqlite3.connect(copy)
        with target:
            source.backup(target)
        source.close()
        target.close()
        archive.add(copy, arcname=name)
PY
    ;;
  *) echo "backup.sh: unsupported database url" >&2; exit 2 ;;
esac
echo "backup written to $out"
