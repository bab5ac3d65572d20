#!/usr/bin/env bash
# Walks the main paths of a running atoms-auth: login, refresh, introspection, the session
# list, revocation, health and metrics. Needs a user and a confidential client that allows
# the password and refresh_token grants.
#   SMOKE_CLIENT_ID=... SMOKE_CLIENT_SECRET=... SMOKE_USERNAME=... SMOKE_PASSWORD=... \
#     scripts/smoke_test.sh [BASE_URL]
set -euo pipefail
base=${1:-http://127.0.0.1:8080}
: "${SMOKE_CLIENT_ID:?set SMOKE_CLIENT_ID}" "${SMOKE_CLIENT_SECRET:?set SMOKE_CLIENT_SECRET}"
: "${SMOKE_USERNAME:?set SMOKE_USERNAME}" "${SMOKE_PASSWORD:?set SMOKE_PASSWORD}"

fail() { echo "smoke: FAIL: $*" >&2; exit 1; }
step() { echo "smoke: $*"; }
field() { python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$1"; }
token() {
  curl -sS --fail-with-body -u "$SMOKE_CLIENT_ID:$SMOKE_CLIENT_SECRET" "$base/auth/token" "$@"
}

step "login"
login=$(token --data-urlencode grant_type=password --data-urlencode "username=$SMOKE_USERNAME" \
  --data-urlencode "password=$SMOKE_PASSWORD") || fail "login: $login"
access=$(printf '%s' "$login" | field access_token)
refresh=$(printf '%s' "$login" | field refresh_token)
[ -n "$access" ] && [ -n "$refresh" ] || fail "login answered no tokens"

step "refresh"
refreshed=$(token --data-urlencode grant_type=refresh_token --data-urlencode "refresh_token=$refresh") \
  || fail "refresh: $refreshed"
access=$(printf '%s' "$refreshed" | field access_token)
refresh=$(printf '%s' "$refreshed" | field refresh_token)

step "introspect"
active=$(curl -sS -u "$SMOKE_CLIENT_ID:$SMOKE_CLIENT_SECRET" --data-urlencode "token=$access" \
  "$base/auth/introspect" | field active)
[ "$active" = "True" ] || fail "a fresh access token introspects inactive"

step "sessions"
sessions=$(curl -sS --fail-with-body -H "Authorization: Bearer $access" "$base/auth/sessions") \
  || fail "sessions: $sessions"
printf '%s' "$sessions" | grep -q '"current":true' || fail "the session list lacks the current session"

step "revoke"
curl -sS --fail-with-body -u "$SMOKE_CLIENT_ID:$SMOKE_CLIENT_SECRET" \
  --data-urlencode "token=$refresh" "$base/auth/revoke" >/dev/null || fail "revoke"
again=$(curl -sS -o /dev/null -w '%{http_code}' -u "$SMOKE_CLIENT_ID:$SMOKE_CLIENT_SECRET" \
  --data-urlencode grant_type=refresh_token --data-urlencode "refresh_token=$refresh" "$base/auth/token")
[ "$again" = "400" ] || fail "a revoked refresh token still works ($again)"

step "health"
"$(dirname "$0")/health_check.sh" "$base" >/dev/null || fail "health"

step "metrics"
curl -sS --fail "$base/metrics" | grep -q '^atoms_auth_tokens_issued_total' || fail "metrics"

echo "smoke: OK ($base)"
