#!/usr/bin/env bash
# Shared by the measuring scripts (audit-instructions.sh, thread-cpu.sh), which source it from
# the repository's root: every audit event type, and a release server started and stopped
# with a given set of them excluded.

# Every audit event type, comma-separated (the server's `events::ALL`; a test compares them).
# shellcheck disable=SC2034 # used by the scripts that source this file
all_events=user.created,user.login.succeeded,user.login.failed,user.locked,token.issued
all_events=$all_events,token.refreshed,token.revoked,token.reuse_detected,session.created
all_events=$all_events,session.revoked,session.expired,device.registered,client.created,key.rotated
all_events=$all_events,consent.granted,resource.created,resource.deleted,client.registered
all_events=$all_events,client.updated,client.deleted,user.role_changed,user.erased

server=""

# Starts target/release/atoms-auth on 127.0.0.1:$1 with the storage URL $3 and the audit
# event types $2 excluded, logging to $4, run under the command given after them (if any);
# returns once it is ready, with its pid in $server.
serve() {
    local port=$1 exclude=$2 database=$3 log=$4
    shift 4
    ATOMS_AUTH_AUDIT_EXCLUDE="$exclude" ATOMS_AUTH_DATABASE_URL="$database" \
        ATOMS_AUTH_LISTEN="127.0.0.1:$port" ATOMS_AUTH_LOG=warn \
        ATOMS_AUTH_RATE_LIMIT_CLIENT_PER_SEC=0 ATOMS_AUTH_RATE_LIMIT_IP_PER_SEC=0 \
        "$@" target/release/atoms-auth >"$log" 2>&1 &
    server=$!
    for _ in $(seq 1 240); do
        curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && return 0
        sleep 0.5
    done
    echo "the server did not become ready; its log: $log" >&2
    return 1
}

# Stops the server started by `serve`, if one is running.
stop_server() {
    if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
    server=""
}
