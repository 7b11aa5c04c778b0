"""Where the shipped stack files live."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
STACK = REPO / "monitoring" / "stack"
PROMETHEUS_CONFIG = STACK / "prometheus" / "prometheus.yml"
PROMETHEUS_RULES = STACK / "prometheus" / "rules" / "inferwatch.rules.yml"
ALERTMANAGER_CONFIG = STACK / "alertmanager" / "alertmanager.yml"
GRAFANA_PROVISIONING = STACK / "grafana" / "provisioning"
GRAFANA_DASHBOARDS = STACK / "grafana" / "dashboards"
COLLECTOR_CONFIG = REPO / "otel" / "collector" / "config.yaml"
TEMPO_CONFIG = STACK / "tempo" / "tempo.yaml"
LOKI_CONFIG = STACK / "loki" / "loki.yaml"
COMPOSE_FILE = REPO / "docker-compose.yml"
TELEMETRY_DOC = REPO / "docs" / "telemetry.md"
STACK_DOC = REPO / "docs" / "stack.md"
RUNBOOKS_DOC = REPO / "docs" / "runbooks.md"
