#!/usr/bin/env bash
# Line coverage of the whole test suite with cargo-tarpaulin (LLVM source-based coverage: the
# server processes the tests start write their own profiles, so they count too). Fails under
# 85%. The report goes to target/coverage/ (HTML, Cobertura XML, JSON); docs/coverage.md
# says what is not covered and why.
#   bash scripts/coverage.sh [tarpaulin options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
if ! command -v cargo-tarpaulin >/dev/null 2>&1; then
  cargo install --locked cargo-tarpaulin@0.37.5
fi
export ATOMS_AUTH_REQUIRE_PROMTOOL=1 ATOMS_AUTH_REQUIRE_BROWSER=1
cargo tarpaulin --workspace --engine llvm --skip-clean --target-dir target/tarpaulin \
  --out Html --out Xml --out Json --output-dir target/coverage --timeout 900 \
  --fail-under 85 "$@"
