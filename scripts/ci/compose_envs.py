"""Checks what each compose environment promises, on the configuration `docker compose
config --format json` merged from docker-compose.yml and deploy/compose/<env>.yml:

- development: open registration and private targets allowed, readable logs;
- staging: two instances serving HTTPS from mounted files, sharing the Redis;
- production: CPU and memory limits and reservations on every service, restarts always,
  logs rotated, the server read-only without new privileges.

    python3 compose_envs.py FOLDER   (holding compose-<env>.json)
"""
import json
import sys

folder = sys.argv[1]
errors = []


def load(env):
    with open(f"{folder}/compose-{env}.json") as f:
        return json.load(f)["services"]


def expect(env, what, ok):
    if not ok:
        errors.append(f"{env}: {what}")


dev = load("development")
env = dev["atoms-auth"]["environment"]
expect("development", "registration is open", env.get("ATOMS_AUTH_REGISTRATION_POLICY") == "open")
expect("development", "private webhook targets", env.get("ATOMS_AUTH_WEBHOOK_ALLOW_PRIVATE_TARGETS") == "true")

staging = load("staging")
server = staging["atoms-auth"]
env = server["environment"]
expect("staging", "TLS certificate and key", env.get("ATOMS_AUTH_TLS_CERT") and env.get("ATOMS_AUTH_TLS_KEY"))
expect("staging", "an https issuer", env.get("ATOMS_AUTH_ISSUER", "").startswith("https://"))
expect("staging", "the shared Redis", env.get("ATOMS_AUTH_REDIS_URL") == "redis://redis:6379")
expect("staging", "two instances", server.get("deploy", {}).get("replicas") == 2)
expect("staging", "the TLS folder mounted", any(v.get("target") == "/run/tls" for v in server.get("volumes", [])))
expect("staging", "no plain 8080 on the host", all(p.get("published") != "8080" for p in server.get("ports", [])))

production = load("production")
for name, service in production.items():
    resources = service.get("deploy", {}).get("resources", {})
    for kind in ("limits", "reservations"):
        got = resources.get(kind, {})
        expect("production", f"{name}: {kind} of cpus and memory", got.get("cpus") and got.get("memory"))
    expect("production", f"{name}: restart always", service.get("restart") == "always")
    expect("production", f"{name}: logs rotated", service.get("logging", {}).get("options", {}).get("max-size"))
server = production["atoms-auth"]
expect("production", "read-only root file system", server.get("read_only") is True)
expect("production", "no new privileges", "no-new-privileges:true" in server.get("security_opt", []))

for e in errors:
    print(e)
print(f"compose environments: 3 checked, {len(errors)} problems")
sys.exit(1 if errors else 0)
