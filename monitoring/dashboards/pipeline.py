"""Telemetry pipeline health: the services' export failures and drops, scrape targets, and the
OpenTelemetry Collector's own metrics."""

from monitoring.dashboards.model import Dashboard, Panel, Query, Row

_SIGNALS = (("spans", "traces"), ("log_records", "logs"), ("metric_points", "metrics"))


def _collector(metric: str, by: str) -> tuple[Query, ...]:
    """One query per signal of a Collector counter family, e.g. otelcol_exporter_sent_*."""
    return tuple(
        Query(
            f"sum by ({by}) (rate(otelcol_{metric}_{item}_total[$__rate_interval]))",
            f"{signal} {{{{{by}}}}}",
        )
        for item, signal in _SIGNALS
    )


SERVICES = Row(
    "InferWatch services",
    (
        Panel(
            "Scrape targets up",
            (Query("up", "{{job}} {{instance}}"),),
            description="1 when Prometheus scraped the target at its last attempt.",
        ),
        Panel(
            "OTLP export failures per second",
            (
                Query(
                    "sum by (job, signal) "
                    "(rate(inferwatch_telemetry_export_failures_total[$__rate_interval]))",
                    "{{job}} {{signal}}",
                ),
            ),
        ),
        Panel(
            "Spans and log records dropped per second",
            (
                Query(
                    "sum by (job, signal, reason) "
                    "(rate(inferwatch_telemetry_dropped_total[$__rate_interval]))",
                    "{{job}} {{signal}} {{reason}}",
                ),
            ),
            width=24,
        ),
    ),
)

COLLECTOR = Row(
    "OpenTelemetry Collector",
    (
        Panel("Accepted per second", _collector("receiver_accepted", "receiver")),
        Panel("Refused per second", _collector("receiver_refused", "receiver")),
        Panel("Sent per second", _collector("exporter_sent", "exporter")),
        Panel("Failed sends per second", _collector("exporter_send_failed", "exporter")),
        Panel(
            "Exporter queue fill",
            (
                Query(
                    "max by (exporter) (otelcol_exporter_queue_size) / "
                    "max by (exporter) (otelcol_exporter_queue_capacity)",
                    "{{exporter}}",
                ),
            ),
            unit="percentunit",
            width=24,
        ),
    ),
)

DASHBOARD = Dashboard(
    uid="inferwatch-telemetry",
    title="InferWatch / Telemetry pipeline",
    description="Is the telemetry itself complete? Export failures, drops, the Collector.",
    rows=(SERVICES, COLLECTOR),
    model_filter=False,
)
