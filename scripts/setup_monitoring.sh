#!/usr/bin/env bash
# Brings monitoring up against a running atoms-auth: Prometheus with the repository's
# recording and alerting rules, scraping the server (and the PostgreSQL and Redis exporters
# when their addresses are given), then waits until the server's target is up.
#
#   scripts/setup_monitoring.sh SERVER_URL [--dir DIR] [--port PORT]
#       [--postgres-exporter HOST:PORT] [--redis-exporter HOST:PORT]
#   scripts/setup_monitoring.sh --compose     # the compose stack's Prometheus, exporters
#                                             # and Grafana (needs a Docker engine)
#   scripts/setup_monitoring.sh --stop [--dir DIR]
#
# Without --compose it runs the `prometheus` binary of this host (Debian's `prometheus`
# package) in the background, its data and generated configuration in DIR (default
# ./monitoring-data); SCRAPE_INTERVAL (default 15s) sets how often it scrapes. Grafana can
# then be pointed at http://127.0.0.1:PORT with the dashboards in monitoring/dashboards/.
set -euo pipefail
cd "$(dirname "$0")/.."

dir=monitoring-data
port=9090
server=""
postgres_exporter=""
redis_exporter=""
action=start
while [ $# -gt 0 ]; do
  case "$1" in
    --compose) action=compose ;;
    --stop) action=stop ;;
    --dir) dir=$2; shift ;;
    --port) port=$2; shift ;;
    --postgres-exporter) postgres_exporter=$2; shift ;;
    --redis-exporter) redis_exporter=$2; shift ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) server=$1 ;;
  esac
  shift
done

case "$action" in
  compose)
    docker compose up -d postgres-exporter redis-exporter prometheus grafana
    echo "monitoring: Prometheus on the backend network, Grafana on http://127.0.0.1:3000"
    exit 0
    ;;
  stop)
    if [ -f "$dir/prometheus.pid" ]; then
      kill "$(cat "$dir/prometheus.pid")" 2>/dev/null || true
      rm -f "$dir/prometheus.pid"
      echo "monitoring: stopped"
    fi
    exit 0
    ;;
esac

if [ -z "$server" ]; then
  echo "usage: $0 SERVER_URL [--dir DIR] [--port PORT] (or --compose, --stop)" >&2
  exit 2
fi
if ! command -v prometheus >/dev/null 2>&1; then
  echo "monitoring: prometheus is not installed (apt-get install prometheus), or use --compose" >&2
  exit 1
fi
scheme=${server%%://*}
target=${server#*://}
target=${target%%/*}
mkdir -p "$dir/data"
rules=$(cd monitoring/rules && pwd)

{
  echo "global:"
  echo "  scrape_interval: ${SCRAPE_INTERVAL:-15s}"
  echo "  evaluation_interval: ${SCRAPE_INTERVAL:-15s}"
  echo "rule_files:"
  echo "  - $rules/recording.yml"
  echo "  - $rules/alerts.yml"
  echo "scrape_configs:"
  echo "  - job_name: atoms-auth"
  echo "    scheme: $scheme"
  echo "    static_configs:"
  echo "      - targets: [\"$target\"]"
  if [ -n "$postgres_exporter" ]; then
    echo "  - job_name: postgres"
    echo "    static_configs:"
    echo "      - targets: [\"$postgres_exporter\"]"
  fi
  if [ -n "$redis_exporter" ]; then
    echo "  - job_name: redis"
    echo "    static_configs:"
    echo "      - targets: [\"$redis_exporter\"]"
  fi
  echo "  - job_name: prometheus"
  echo "    static_configs:"
  echo "      - targets: [\"127.0.0.1:$port\"]"
} >"$dir/prometheus.yml"
promtool check config "$dir/prometheus.yml" >/dev/null

prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
  --web.listen-address="127.0.0.1:$port" >"$dir/prometheus.log" 2>&1 &
echo $! >"$dir/prometheus.pid"

api=http://127.0.0.1:$port/api/v1
for _ in $(seq 1 60); do
  if curl -fsS "$api/targets?state=active" 2>/dev/null | grep -q '"job":"atoms-auth".*"health":"up"\|"health":"up".*"job":"atoms-auth"'; then
    alerts=$(curl -fsS "$api/rules?type=alert" | grep -o '"type":"alerting"' | wc -l)
    echo "monitoring: Prometheus on http://127.0.0.1:$port scrapes $server ($alerts alerts loaded)"
    exit 0
  fi
  if ! kill -0 "$(cat "$dir/prometheus.pid")" 2>/dev/null; then
    echo "monitoring: prometheus exited; see $dir/prometheus.log" >&2
    exit 1
  fi
  sleep 1
done
echo "monitoring: $server was not scraped successfully within 60 s; see $dir/prometheus.log" >&2
exit 1
