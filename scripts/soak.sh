#!/usr/bin/env bash
# The soak: a mixed load (refresh, client_credentials, introspection, session listing) at a
# fixed rate for a while against one release server on PostgreSQL, sampling every 10 s the
# server's resident memory, open file descriptors, pool connections and the p99 of the
# requests of those 10 s (from its own latency histogram). Writes the samples as CSV and a
# plot; docs/reliability.md has a run's figures.
#   bash scripts/soak.sh [SECONDS] [RATE_PER_SCENARIO] [OUT_DIR]
#   defaults: 1800 s, 600/s each (2,400/s in all: about half of what this server does on
#   PostgreSQL on a 2-core machine), target/soak
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-1800}
rate=${2:-600}
out=${3:-target/soak}
mkdir -p "$out"
bin=target/release/atoms-auth
bench=target/release/bench
if [ ! -x "$bin" ] || [ ! -x "$bench" ]; then
  cargo build --release -p atoms-auth -p atoms-auth-bench --bin atoms-auth --bin bench
fi
schema="soak_$(date +%s)"
base_url=${ATOMS_AUTH_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}
psql "$base_url" -qc "CREATE SCHEMA $schema"
database="$base_url?options[search_path]=$schema"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
server_url=http://127.0.0.1:$port
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  psql "$base_url" -qc "DROP SCHEMA $schema CASCADE" || true
}
trap cleanup EXIT
# The load's access tokens are made once, at the start: they must outlive the run.
ATOMS_AUTH_ACCESS_TOKEN_TTL_SECS=$((seconds + 600)) \
  ATOMS_AUTH_DATABASE_URL=$database ATOMS_AUTH_LISTEN=127.0.0.1:$port ATOMS_AUTH_LOG=warn \
  ATOMS_AUTH_RATE_LIMIT_CLIENT_PER_SEC=0 ATOMS_AUTH_RATE_LIMIT_IP_PER_SEC=0 \
  "$bin" serve >"$out/server.log" 2>&1 &
pids+=($!)
server_pid=$!
for _ in $(seq 1 100); do
  curl -fsS "$server_url/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
"$bench" --backend postgres --database-url "$database" --url "$server_url" --no-floor \
  --scenarios "" --open-scenarios refresh,client_credentials,introspect,sessions --mixed \
  --rate "$rate" -d "$seconds" --warmup 5 -c 8 --json "$out/bench.json" >"$out/bench.log" 2>&1 &
pids+=($!)
python3 scripts/soak_sample.py "$server_url" "$server_pid" "$seconds" "$out/samples.csv"
wait "${pids[@]:1}" || true
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install -q matplotlib
python3 scripts/soak_sample.py --plot "$out/samples.csv" "$out/soak.png"
echo "soak: $out/samples.csv, $out/soak.png"
