#!/usr/bin/env bash
# What an audit record costs the server, in instructions: runs the release server under
# callgrind twice on a fresh database, once audited and once with every audit event type
# excluded, drives client_credentials at it with the bench, and prints the instructions per
# request of each run and their difference. Instruction counts do not move with the load on
# the machine, so this resolves what a throughput comparison cannot (a few hundred
# instructions per request); the database's own work (PostgreSQL's processes) is not in it.
#
#   cargo build --release --workspace --bins
#   bash tools/bench/scripts/audit-instructions.sh sqlite      # or postgres
#
# Each run verifies the bench's client secret once (argon2id, tens of millions of
# instructions); those are subtracted, so that what remains is per request.
set -euo pipefail
cd "$(dirname "$0")/.."
backend=${1:-sqlite}
seconds=${SECONDS_PER_RUN:-15}
port=${PORT:-18080}
work=$(mktemp -d /tmp/atoms-audit-instructions.XXXXXX)
schema="audit_instructions_$$"
postgres=${ATOMS_AUTH_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
# shellcheck source=tools/bench/scripts/measure-lib.sh
source tools/bench/scripts/measure-lib.sh

cleanup() {
    stop_server
    if [ "$backend" = postgres ]; then
        psql "$postgres" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Prints "instructions requests" for one run; $1 is the excluded event types.
run() {
    local database
    case "$backend" in
        sqlite) rm -f "$work"/db*; database="sqlite://$work/db?mode=rwc" ;;
        postgres)
            psql "$postgres" -qc "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema" >/dev/null 2>&1
            database="$postgres?options[search_path]=$schema" ;;
        *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
    esac
    serve "$port" "$1" "$database" "$work/server.log" \
        valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out"
    callgrind_control -z "$server" >/dev/null 2>&1
    target/release/bench --url "http://127.0.0.1:$port" --database-url "$database" \
        --backend "$backend" --scenarios client_credentials --no-floor -d "$seconds" \
        --warmup 0 -c 4 --json "$work/bench.json" >/dev/null 2>&1
    # Records queued by the last requests are written within the writer's linger.
    sleep 1
    callgrind_control -d "$server" >/dev/null 2>&1
    stop_server
    local dump total argon2 requests
    # The dump asked for above is the first of the run.
    dump="$work/callgrind.out.1"
    total=$(awk '/^totals:/ {print $2}' "$dump")
    argon2=$(callgrind_annotate --auto=no --threshold=100 "$dump" 2>/dev/null \
        | awk '/argon2|blake2/ {gsub(",", "", $1); s += $1} END {print s + 0}')
    requests=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['runs'][0]['requests'])" "$work/bench.json")
    rm -f "$work"/callgrind.out*
    echo "$((total - argon2)) $requests"
}

read -r audited audited_requests < <(run "")
read -r unaudited unaudited_requests < <(run "$all_events")
python3 - "$backend" "$audited" "$audited_requests" "$unaudited" "$unaudited_requests" <<'EOF'
import sys
backend, on, n_on, off, n_off = sys.argv[1], *map(int, sys.argv[2:])
per_on, per_off = on / n_on, off / n_off
print(f"{backend}: audited {per_on:,.0f} instructions per request ({n_on} requests), "
      f"unaudited {per_off:,.0f} ({n_off}); a record costs {per_on - per_off:,.0f} "
      f"({(per_on / per_off - 1) * 100:.1f}%)")
EOF
