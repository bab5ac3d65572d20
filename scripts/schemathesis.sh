#!/usr/bin/env bash
# Schemathesis against the running server's own /openapi.json: every documented operation is
# called with generated input, once with a user's bearer token and once with an owner's
# admin token, and every answer is checked: no server error, and the status, headers and
# body the document declares. Zero failures pass.
#   bash scripts/schemathesis.sh [MAX_EXAMPLES]   (default 25 per operation)
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-25}
tools=target/ci-tools
if [ ! -x "$tools/st/bin/st" ]; then
  python3 -m venv "$tools/st"
  "$tools/st/bin/pip" install -q schemathesis==4.32.5
fi
cargo build --quiet --bin atoms-auth
bin=$PWD/target/debug/atoms-auth
work=$(mktemp -d)
server=""
# shellcheck disable=SC2329 # the EXIT trap calls it
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
export ATOMS_AUTH_DATABASE_URL="sqlite://$work/atoms.db?mode=rwc" ATOMS_AUTH_LOG=error
export ATOMS_AUTH_RATE_LIMIT_CLIENT_PER_SEC=0 ATOMS_AUTH_RATE_LIMIT_IP_PER_SEC=0
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base=http://127.0.0.1:$port
export ATOMS_AUTH_LISTEN=127.0.0.1:$port ATOMS_AUTH_ISSUER=$base
"$bin" migrate up >/dev/null
echo "schemathesis password 1" | "$bin" users create --username owner --role owner >/dev/null
echo "schemathesis password 2" | "$bin" users create --username member >/dev/null
client=$("$bin" clients create --name schemathesis --grant-types password,refresh_token \
  --scopes admin,account,read)
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])' <<<"$client")
secret=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])' <<<"$client")
"$bin" serve >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -fsS "$base/health/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
token() {
  curl -fsS -u "$id:$secret" -d grant_type=password -d "username=$1" -d "password=$2" \
    -d "scope=$3" "$base/auth/token" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}
user=$(token member "schemathesis password 2" "account read")
admin=$(token owner "schemathesis password 1" "admin account")
status=0
for who in user admin; do
  echo "== schemathesis as $who"
  bearer=$user
  if [ "$who" = admin ]; then bearer=$admin; fi
  "$tools/st/bin/st" run "$base/openapi.json" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --header "Authorization: Bearer $bearer" --max-examples "$examples" --seed 1 \
    --suppress-health-check all --workers 2 --phases examples,fuzzing,stateful || status=1
done
if [ "$status" -ne 0 ]; then
  echo "schemathesis: failures (server log: $work/server.log)" >&2
  trap - EXIT
  kill "$server" 2>/dev/null || true
fi
exit "$status"
