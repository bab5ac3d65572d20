"""Validates docker-compose.yml without a Docker engine: against the Compose specification's
JSON schema (as shipped in the docker-compose 1.29.2 wheel from PyPI), then the stack's own
rules: its seven services, public and backend networks, named volumes, a health check on every
service, depends_on with conditions, and the monitoring files it mounts present.

    python3 compose_check.py COMPOSE_SPEC_JSON docker-compose.yml
"""
import json
import os
import sys

import jsonschema
import yaml

schema_path, compose_path = sys.argv[1], sys.argv[2]
with open(schema_path) as f:
    schema = json.load(f)
with open(compose_path) as f:
    compose = yaml.safe_load(f)

errors = []
validator = jsonschema.Draft7Validator(schema)
for error in validator.iter_errors(compose):
    where = "/".join(str(p) for p in error.path)
    errors.append(f"schema: {where}: {error.message}")

services = compose.get("services", {})
expected = {
    "atoms-auth", "postgres", "redis", "postgres-exporter", "redis-exporter", "prometheus", "grafana",
}
if set(services) != expected:
    errors.append(f"services are {sorted(services)}, expected {sorted(expected)}")
if set(compose.get("networks", {})) != {"public", "backend"}:
    errors.append("networks must be public and backend")
for name, service in services.items():
    if "healthcheck" not in service:
        errors.append(f"{name}: no health check")
    for dep, how in (service.get("depends_on") or {}).items():
        if not isinstance(how, dict) or "condition" not in how:
            errors.append(f"{name}: depends_on {dep} without a condition")
        if dep not in services:
            errors.append(f"{name}: depends on unknown service {dep}")
    for volume in service.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("./"):
            if not os.path.exists(os.path.join(os.path.dirname(compose_path) or ".", source)):
                errors.append(f"{name}: mounts missing {source}")
        elif source not in compose.get("volumes", {}):
            errors.append(f"{name}: volume {source} is not declared")
for store in ("postgres", "redis"):
    if services.get(store, {}).get("networks") != ["backend"]:
        errors.append(f"{store} must be on the backend network only")

for e in errors:
    print(e)
print(f"compose: {len(services)} services, {len(errors)} problems")
sys.exit(1 if errors else 0)
