#!/usr/bin/env bash
# The whole test suite: unit tests, the storage contract and the HTTP tests against SQLite,
# PostgreSQL and Redis (the last two are required, never skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
cargo test --locked --workspace "$@"
