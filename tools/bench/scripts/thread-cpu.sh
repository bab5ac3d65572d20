#!/usr/bin/env bash
# Where the embedded SQLite server spends its CPU, per thread and per request: runs the
# release server on a fresh SQLite database twice, audited and with every audit event type
# excluded, drives one bench scenario at it for 12 s, and prints each busy thread's CPU time
# (user and system, from /proc/<pid>/task/<tid>/schedstat) over a 6 s window divided by the
# requests the server counted in it. SQLite runs inside the server, so this tells the main
# file's single writer, the audit log's writer and the request threads apart.
#
#   cargo build --release --workspace --bins
#   bash tools/bench/scripts/thread-cpu.sh refresh        # or client_credentials, introspect, ...
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-refresh}
port=${PORT:-18090}
work=$(mktemp -d /tmp/atoms-thread-cpu.XXXXXX)
# shellcheck source=tools/bench/scripts/measure-lib.sh
source tools/bench/scripts/measure-lib.sh

cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT

# Each thread's name-tid and CPU nanoseconds so far.
threads() {
    for task in /proc/"$server"/task/*; do
        printf '%s-%s %s\n' "$(tr -d ' ' <"$task/comm")" "${task##*/}" "$(cut -d' ' -f1 "$task/schedstat")"
    done | sort
}

requests() {
    curl -sf "http://127.0.0.1:$port/metrics" | awk '/^atoms_auth_http_requests_total/ {s += $2} END {print s + 0}'
}

# One run; $1 is the excluded event types, $2 its label.
run() {
    rm -f "$work"/db*
    local database="sqlite://$work/db?mode=rwc"
    serve "$port" "$1" "$database" "$work/server.log"
    target/release/bench --url "http://127.0.0.1:$port" --database-url "$database" \
        --backend sqlite --scenarios "$scenario" --no-floor -d 12 --warmup 0 \
        --json "$work/bench.json" >/dev/null 2>&1 &
    local bench=$! first last
    sleep 4
    threads >"$work/before"; first=$(requests)
    sleep 6
    threads >"$work/after"; last=$(requests)
    wait "$bench"
    stop_server
    echo "## $2: $(((last - first) / 6)) req/s"
    join "$work/before" "$work/after" | awk -v n=$((last - first)) '
        { us = ($3 - $2) / 1000 / n; total += us; if (us >= 0.05) printf "%-30s %8.2f µs/request\n", $1, us }
        END { printf "%-30s %8.2f µs/request\n", "all threads", total }'
}

run "" audited
run "$all_events" unaudited
