"""InferWatch's alert rules: one Python source (`rules.py`), rendered as Prometheus rule files and
as Grafana-managed alert rules (`python -m monitoring.alerts` writes both into monitoring/stack/).

Importing this package pulls in nothing but the standard library: `webhook.py` runs in the
service image, where the generators' YAML dependency is not installed.
"""
