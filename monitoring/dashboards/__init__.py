"""Grafana dashboards as code: `python -m monitoring.dashboards` writes them as JSON into
monitoring/stack/grafana/dashboards/ (committed; a test fails when the JSON is stale).

Every query uses only the metrics of docs/telemetry.md and the stack's own metrics listed in
docs/stack.md; tests/monitoring/stack checks that, and runs each query on a real Prometheus.
"""
