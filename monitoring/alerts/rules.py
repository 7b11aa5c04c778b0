"""Every InferWatch alert, once. The Prometheus rule file and the Grafana-managed rules are both
rendered from `RULES` (`python -m monitoring.alerts`); nothing else defines an alert.

A rule is a PromQL *value* compared with a *threshold*: Prometheus gets `value > threshold`,
Grafana gets the value as query A, reduced (B) and compared (C). Metric names and labels are
those of docs/telemetry.md. Summaries name labels with `{{ .Labels.x }}`, which Prometheus and
Grafana both render, and never use a raw `$` (Grafana's provisioning would expand it).
"""

from dataclasses import dataclass
from typing import Literal

from monitoring.alerts.grafana import MODEL_SERVER_SERVICE, label_placeholder
from monitoring.alerts.searches import LogSearch, TraceCondition, TraceSearch

SERVER_FAULTS = (
    "UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
)  # fmt: skip
"""gRPC codes that are the server's fault (the same set that marks a server span ERROR)."""

_SUBJECT = label_placeholder()


@dataclass(frozen=True)
class AlertRule:
    """One alert, rendered for both Prometheus and Grafana."""

    name: str
    """The `alertname`, e.g. InferWatchHighLatency."""
    title: str
    """Human title; also the runbook section heading in docs/runbooks.md."""
    severity: Literal["critical", "warning"]
    value: str
    """PromQL whose result is compared with the threshold."""
    comparison: Literal[">", "<"]
    threshold: float
    hold: str
    """How long the comparison must hold before the alert fires (`for`)."""
    window: str
    """Longest range the value looks back over, plus the hold: the span the links open."""
    subject: str
    """The label naming what is alerting (model_name or job); the links filter on it."""
    summary: str
    description: str
    logs: LogSearch
    traces: TraceSearch

    @property
    def expr(self) -> str:
        """The full alerting expression."""
        return f"{self.value} {self.comparison} {self.threshold:g}"

    @property
    def runbook_anchor(self) -> str:
        """The GitHub anchor of the `## <title>` section in docs/runbooks.md."""
        kept = "".join(c for c in self.title.lower() if c.isalnum() or c in " -")
        return kept.replace(" ", "-")

    def annotations(self) -> dict[str, str]:
        """summary, description, runbook and the correlated searches (logs, traces)."""
        return {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": f"docs/runbooks.md#{self.runbook_anchor}",
            "logs_url": self.logs.link(self.window, self.subject),
            "traces_url": self.traces.link(self.window, self.subject),
        }


# OTLP log records carry the data model's display names: Python's WARNING is WARN, CRITICAL FATAL.
_ERRORS = ("ERROR", "FATAL")
_WARNINGS = ("WARN", *_ERRORS)


def _model_logs() -> LogSearch:
    """The model server's error lines about the model (they read `model <name>:<version>…`)."""
    return LogSearch(MODEL_SERVER_SERVICE, _ERRORS, f"model {_SUBJECT}:")


def _model_traces(*extra: TraceCondition) -> TraceSearch:
    return TraceSearch((TraceCondition("span.model.name", "=", f'"{_SUBJECT}"'), *extra))


def _service_logs() -> LogSearch:
    return LogSearch(_SUBJECT, _WARNINGS)


def _service_traces() -> TraceSearch:
    return TraceSearch((TraceCondition("resource.service.name", "=", f'"{_SUBJECT}"'),))


_BY_VERSION = "model_name, model_version"
_STATUSES = "|".join(SERVER_FAULTS)

ACCURACY_FLOOR = 0.85
"""Live accuracy below this pages. digits scores about 0.97 on held-out data: the floor is 12
points under it, 7 standard errors at the minimum sample (sqrt(0.97 * 0.03 / 100) = 0.017)."""
MIN_WINDOW_LABELS = 100
"""Fewest true labels in a version's quality window before its accuracy is believed."""
_LABELS = f"sum by ({_BY_VERSION}) (inferwatch_feedback_window_labels)"
_POOLED_ACCURACY = (
    f"(sum by ({_BY_VERSION}) "
    "(inferwatch_feedback_accuracy_ratio * inferwatch_feedback_window_labels) "
    f"/ {_LABELS} and {_LABELS} >= {MIN_WINDOW_LABELS})"
)
"""Accuracy of a version over the labels of every model server (each keeps its own window),
only where they number at least MIN_WINDOW_LABELS. Parenthesised: `and` binds looser than `<`."""

RULES: tuple[AlertRule, ...] = (
    AlertRule(
        name="InferWatchHighLatency",
        title="High p95 latency",
        severity="warning",
        value=(
            f"histogram_quantile(0.95, sum by ({_BY_VERSION}, le) "
            "(rate(inferwatch_server_request_duration_seconds_bucket[5m])))"
        ),
        comparison=">",
        threshold=0.25,
        hold="5m",
        window="15m",
        subject="model_name",
        summary="p95 latency of model {{ .Labels.model_name }} is above 250 ms",
        description="95% of ModelInfer calls should be answered within 250 ms (5 min window).",
        logs=_model_logs(),
        traces=_model_traces(TraceCondition("duration", ">", "250ms")),
    ),
    AlertRule(
        name="InferWatchHighErrorRatio",
        title="Error ratio",
        severity="critical",
        value=(
            f"sum by ({_BY_VERSION}) "
            f'(rate(inferwatch_server_requests_total{{status=~"{_STATUSES}"}}[5m])) / '
            f"sum by ({_BY_VERSION}) (rate(inferwatch_server_requests_total[5m]))"
        ),
        comparison=">",
        threshold=0.05,
        hold="5m",
        window="15m",
        subject="model_name",
        summary="more than 5% of calls to model {{ .Labels.model_name }} fail with server errors",
        description=f"Share of ModelInfer calls answered {', '.join(SERVER_FAULTS)} (5 min).",
        logs=_model_logs(),
        traces=_model_traces(TraceCondition("status", "=", "error")),
    ),
    AlertRule(
        name="InferWatchQueueRejections",
        title="Queue rejections",
        severity="warning",
        value=(
            f"sum by ({_BY_VERSION}, reason) (rate(inferwatch_server_requests_rejected_total[5m]))"
        ),
        comparison=">",
        threshold=0.1,
        hold="5m",
        window="15m",
        subject="model_name",
        summary="model {{ .Labels.model_name }} refuses requests before computing them "
        "({{ .Labels.reason }})",
        description="More than one request in 10 s refused with a full queue or a passed deadline.",
        logs=_model_logs(),
        traces=_model_traces(),
    ),
    AlertRule(
        name="InferWatchModelNotReady",
        title="Model not ready",
        severity="critical",
        value=f"min by (job, instance, {_BY_VERSION}) (inferwatch_model_ready)",
        comparison="<",
        threshold=1,
        hold="2m",
        window="15m",
        subject="model_name",
        summary="model {{ .Labels.model_name }} cannot serve on {{ .Labels.instance }}",
        description="The version failed to load or is stuck loading; its requests are refused.",
        logs=_model_logs(),
        traces=_model_traces(),
    ),
    AlertRule(
        name="InferWatchDataDrift",
        title="Data drift",
        severity="warning",
        value=f"max by ({_BY_VERSION}) (inferwatch_drift_features_drifted)",
        comparison=">",
        threshold=0,
        hold="10m",
        window="30m",
        subject="model_name",
        summary="inputs of model {{ .Labels.model_name }} drifted from its training data",
        description="At least one monitored input feature is called drifted "
        "(1% false-alarm budget per evaluation).",
        logs=_model_logs(),
        traces=_model_traces(),
    ),
    AlertRule(
        name="InferWatchPredictionDrift",
        title="Prediction drift",
        severity="warning",
        value=f"max by ({_BY_VERSION}) (inferwatch_drift_prediction_score)",
        comparison=">",
        threshold=1,
        hold="10m",
        window="30m",
        subject="model_name",
        summary="predicted labels of model {{ .Labels.model_name }} shifted from the reference",
        description="The predicted-label chi-squared statistic is above its critical value.",
        logs=_model_logs(),
        traces=_model_traces(),
    ),
    AlertRule(
        name="InferWatchLowConfidence",
        title="Low confidence",
        severity="warning",
        value=(
            f"sum by ({_BY_VERSION}) "
            '(rate(inferwatch_model_confidence_bucket{le="0.5"}[15m])) / '
            f"sum by ({_BY_VERSION}) (rate(inferwatch_model_confidence_count[15m]))"
        ),
        comparison=">",
        threshold=0.2,
        hold="10m",
        window="30m",
        subject="model_name",
        summary="model {{ .Labels.model_name }} is unsure of more than 20% of its answers",
        description="Share of predictions whose top class probability is at most 0.5 (15 min).",
        logs=_model_logs(),
        traces=_model_traces(),
    ),
    AlertRule(
        name="InferWatchAccuracyBelowFloor",
        title="Accuracy below floor",
        severity="critical",
        value=_POOLED_ACCURACY,
        comparison="<",
        threshold=ACCURACY_FLOOR,
        hold="10m",
        window="70m",
        subject="model_name",
        summary="true labels say model {{ .Labels.model_name }} v{{ .Labels.model_version }} "
        f"is right less than {ACCURACY_FLOOR:.0%} of the time",
        description="Accuracy over the true labels that arrived in the version's quality window "
        f"(default 1 h), pooled over model servers, below {ACCURACY_FLOOR:g} while the window "
        f"holds at least {MIN_WINDOW_LABELS} labels, for 10 minutes. The floor is 12 points under "
        "the held-out accuracy of digits (0.97), 7 standard errors at 100 labels, so sampling "
        "noise alone does not reach it; fewer labels say too little. The hold keeps one short "
        "burst of bad labels (a single upstream batch) from paging.",
        logs=_model_logs(),
        traces=_model_traces(),
    ),
    AlertRule(
        name="InferWatchTelemetryDrops",
        title="Telemetry drops",
        severity="warning",
        value="sum by (job, instance, signal) (rate(inferwatch_telemetry_dropped_total[5m]))",
        comparison=">",
        threshold=0,
        hold="5m",
        window="15m",
        subject="job",
        summary="{{ .Labels.job }} loses {{ .Labels.signal }} before export",
        description="Spans or log records are dropped (queue full or export failed): "
        "the traces and logs you will look at are incomplete.",
        logs=_service_logs(),
        traces=_service_traces(),
    ),
    AlertRule(
        name="InferWatchTargetDown",
        title="Target down",
        severity="critical",
        value="min by (job, instance) (up)",
        comparison="<",
        threshold=1,
        hold="2m",
        window="15m",
        subject="job",
        summary="Prometheus cannot scrape {{ .Labels.job }} at {{ .Labels.instance }}",
        description="The process is down or unreachable; its metrics and alerts are blind.",
        logs=_service_logs(),
        traces=_service_traces(),
    ),
)
