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
    # A tar archive of the main file and the audit log's (backup.sh), or, from before the
    # audit log had a file of its own, the main file alone: migrating moves its audit log out.
    file=${url#sqlite://}
    file=${file%%\?*}
    python3 - "$file" "$in" <<'PY'
import os, shutil, sys, tarfile
main, backup = sys.argv[1], sys.argv[2]
root, extension = os.path.splitext(main)
audit = root + "-audit" + extension
for path in (main, audit):
    for stale in (path, path + "-wal", path + "-shm"):
        if os.path.exists(stale):
            os.remove(stale)
if not tarfile.is_tarfile(backup):
    shutil.copyfile(backup, main)
    sys.exit(0)
with tarfile.open(backup) as archive:
    for name, path in (("main.db", main), ("audit.db", audit)):
        try:
            member = archive.getmember(name)
        except KeyError:
            continue
        with archive.extractfile(member) as source, open(path, "wb") as target:
            shutil.copyfileobj(source, target)
PY
    ;;
  *) echo "restore.sh: unsupported database url" >&2; exit 2 ;;
esac
echo "restored $in"
