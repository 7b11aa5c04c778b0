"""The correlated searches an alert links to: a model's error logs in Loki, its traces in Tempo.

Both are kept as parts (labels, filters, conditions) rather than finished query strings so the
tests can check every part against what the services really emit (the `service_name` index
label, the `severity_text` structured metadata, span attribute names).
"""

from dataclasses import dataclass

from monitoring.alerts.grafana import LOKI_UID, TEMPO_UID, explore_link


@dataclass(frozen=True)
class LogSearch:
    """`{service_name="…"} | severity_text=~"…" |= "…"` over Loki's OTLP-ingested logs."""

    service: str
    """Value of the `service_name` index label (the OTel `service.name` resource attribute)."""
    severities: tuple[str, ...]
    """`severity_text` values kept (structured metadata of each OTLP log record)."""
    contains: str = ""
    """A line filter; empty for none."""

    def logql(self) -> str:
        """The LogQL query."""
        query = f'{{service_name="{self.service}"}} | severity_text=~"{"|".join(self.severities)}"'
        return query + (f' |= "{self.contains}"' if self.contains else "")

    def link(self, since: str, label: str) -> str:
        """Grafana Explore on the Loki datasource."""
        return explore_link(("loki", LOKI_UID), {"expr": self.logql()}, since, label)


@dataclass(frozen=True)
class TraceCondition:
    """One TraceQL comparison, e.g. `span.model.name = "digits"`."""

    field: str
    operator: str
    value: str

    def traceql(self) -> str:
        """The comparison as TraceQL."""
        return f"{self.field} {self.operator} {self.value}"


@dataclass(frozen=True)
class TraceSearch:
    """`{ a && b && … }`: spans matching every condition, in Tempo."""

    conditions: tuple[TraceCondition, ...]

    def traceql(self) -> str:
        """The TraceQL query."""
        return "{ " + " && ".join(c.traceql() for c in self.conditions) + " }"

    def link(self, since: str, label: str) -> str:
        """Grafana Explore on the Tempo datasource."""
        query = {"queryType": "traceql", "query": self.traceql()}
        return explore_link(("tempo", TEMPO_UID), query, since, label)
