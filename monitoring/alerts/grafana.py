"""The Grafana side every generator shares: datasource uids, the public URL, Explore links.

The uids are fixed in the provisioned datasources (monitoring/stack/grafana/provisioning/
datasources/datasources.yaml); dashboards, alert rules and the correlations between
datasources refer to them, and tests/monitoring/stack checks that every reference resolves.
"""

import json
import urllib.parse
from typing import Final

PROMETHEUS_UID: Final = "prometheus"
TEMPO_UID: Final = "tempo"
LOKI_UID: Final = "loki"

GRAFANA_URL: Final = "http://localhost:3000"
"""Where docker-compose publishes Grafana (`GF_SERVER_ROOT_URL`); alert links start with it."""

MODEL_SERVER_SERVICE: Final = "inferwatch-model-server"
GATEWAY_SERVICE: Final = "inferwatch-gateway"

_PLACEHOLDER = "@@LABEL@@"


def explore_link(datasource: tuple[str, str], query: dict[str, str], since: str, label: str) -> str:
    """A Grafana Explore URL running `query` on `datasource` (type, uid) over `now-since`..now.

    Any `@@LABEL@@` in the query's values becomes the alert's `label` value, URL-encoded by the
    alert template (`{{ .Labels.<label> | urlquery }}`): Prometheus and Grafana both render it.
    """
    kind, uid = datasource
    pane = {
        "datasource": uid,
        "queries": [{"refId": "A", **query, "datasource": {"type": kind, "uid": uid}}],
        "range": {"from": f"now-{since}", "to": "now"},
    }
    panes = urllib.parse.quote(json.dumps({"alert": pane}, separators=(",", ":")), safe="")
    template = "{{ .Labels.%s | urlquery }}" % label  # noqa: UP031 (Go template braces)
    panes = panes.replace(urllib.parse.quote(_PLACEHOLDER, safe=""), template)
    return f"{GRAFANA_URL}/explore?schemaVersion=1&orgId=1&panes={panes}"


def label_placeholder() -> str:
    """The marker `explore_link` replaces with the alert's label value."""
    return _PLACEHOLDER
