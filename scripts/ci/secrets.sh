#!/usr/bin/env bash
# The secret scan: every committed file, by detect-secrets, against the reviewed findings in
# .secrets.baseline (test vectors and example values); a new finding fails.
#   bash scripts/ci/secrets.sh [BIN]   (BIN: the folder of detect-secrets and its python)
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-$(dirname "$(command -v detect-secrets)")}
scan=$(mktemp)
trap 'rm -f "$scan"' EXIT
secret_scan_exclude='^(\.secrets\.baseline|target|Cargo\.lock|deploy/terraform/\.terraform|fuzz/target|fuzz/artifacts)'
# Compared by file and hashed secret, so lines that move do not count as new.
"$bin/detect-secrets" scan --exclude-files "$secret_scan_exclude" >"$scan"
"$bin/python" - "$scan" .secrets.baseline <<'PY'
import json, sys
found, known = (json.load(open(path))["results"] for path in sys.argv[1:3])
key = lambda results: {(f, s["hashed_secret"]) for f, items in results.items() for s in items}
new = sorted(key(found) - key(known))
for f, _ in new:
    print(f"secrets: a new finding in {f} (review it; add it to .secrets.baseline only if it is not a secret)")
sys.exit(1 if new else 0)
PY
