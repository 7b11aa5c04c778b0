"""Renders the SDK's collected `MetricsData` as Prometheus text 0.0.4 or OpenMetrics 1.0 text.

Follows the OpenTelemetry-to-Prometheus compatibility rules: names sanitised (dots to
underscores), unit suffixes (`s` -> `_seconds`), `_total` on monotonic sums, cumulative
histogram buckets with `le`, `otel_scope_*` labels, and resource attributes in `target_info`.
OpenMetrics output also carries each histogram bucket's latest exemplar (trace_id, span_id).
"""

import bisect
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import Attributes, AttributeValue

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

logger = logging.getLogger(__name__)

_UNIT_WORDS = {
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "min": "minutes",
    "h": "hours",
    "d": "days",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "Hz": "hertz",
    "W": "watts",
    "J": "joules",
    "Cel": "celsius",
    "%": "percent",
}
_PER_UNIT_WORDS = {"s": "second", "min": "minute", "h": "hour", "d": "day"}
_INVALID_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")
_UNIT_ANNOTATION = re.compile(r"\{[^}]*\}")

ExemplarKey = tuple[str, str, str, int]
"""(scope name, metric name, rendered point attributes, bucket index) of one bucket."""


@dataclass
class _Family:
    name: str
    kind: str
    """OpenMetrics type: counter, gauge, histogram or info."""
    help: str
    unit: str
    lines: list[str] = field(default_factory=list)

    def header(self, openmetrics: bool) -> list[str]:
        name, kind = self.name, self.kind
        if not openmetrics:
            name += {"counter": "_total", "info": "_info"}.get(kind, "")
            kind = "gauge" if kind == "info" else kind
        lines = [f"# HELP {name} {_escape(self.help, quotes=openmetrics)}"] if self.help else []
        lines.append(f"# TYPE {name} {kind}")
        if openmetrics and self.unit:
            lines.append(f"# UNIT {name} {self.unit}")
        return lines


class Exposition:
    """The latest collection, rendered on demand, plus each histogram bucket's latest exemplar.

    The SDK hands out an exemplar once (its reservoir resets on every collection, a
    `force_flush` included), while a scraper expects a bucket's exemplar on every scrape until
    a newer one replaces it. Not thread-safe: the caller serialises `update` and `render`.
    """

    def __init__(self) -> None:
        self._latest: MetricsData | None = None
        self._exemplars: dict[ExemplarKey, Exemplar] = {}

    def update(self, data: MetricsData) -> None:
        """Takes a new collection and remembers the exemplars it carries."""
        self._latest = data
        for (scope, metric), point in _histogram_points(data):
            series = _labels(_attribute_labels(point.attributes))
            for exemplar in point.exemplars:
                if exemplar.trace_id and exemplar.span_id:
                    index = bisect.bisect_left(point.explicit_bounds, exemplar.value)
                    self._exemplars[(scope, metric, series, index)] = exemplar

    def render(self, *, openmetrics: bool) -> str:
        """The text body of one scrape."""
        families: dict[str, _Family] = {}
        for resource_metrics in self._latest.resource_metrics if self._latest else ():
            info = families.setdefault("target", _Family("target", "info", "Target metadata", ""))
            labels = _labels(_attribute_labels(resource_metrics.resource.attributes))
            info.lines.append(f"target_info{labels} 1")
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    self._add(families, scope_metrics.scope, metric, openmetrics)
        lines = [
            line for fam in families.values() for line in (*fam.header(openmetrics), *fam.lines)
        ]
        if openmetrics:
            lines.append("# EOF")
        return "\n".join(lines) + "\n"

    def _add(
        self,
        families: dict[str, _Family],
        scope: InstrumentationScope,
        metric: Metric,
        openmetrics: bool,
    ) -> None:
        data = metric.data
        if isinstance(data, Sum):
            kind = "counter" if data.is_monotonic else "gauge"
        elif isinstance(data, Gauge):
            kind = "gauge"
        elif isinstance(data, Histogram):
            kind = "histogram"
        else:
            logger.debug("Not rendering %s: %s is not supported", metric.name, type(data).__name__)
            return
        unit = _unit_word(metric.unit or "", kind)
        name = _family_name(metric.name, unit, kind)
        family = families.setdefault(name, _Family(name, kind, metric.description or "", unit))
        if family.kind != kind:
            logger.warning(
                "Not rendering %s as %s: %s is a %s", metric.name, kind, name, family.kind
            )
            return
        scope_labels = {"otel_scope_name": scope.name}
        if scope.version:
            scope_labels["otel_scope_version"] = scope.version
        if isinstance(data, Histogram):
            origin = (scope.name, metric.name)
            for point in data.data_points:
                family.lines.extend(self._histogram(name, point, scope_labels, origin, openmetrics))
            return
        sample = f"{name}_total" if kind == "counter" else name
        for number in data.data_points:
            labels = _labels({**_attribute_labels(number.attributes), **scope_labels})
            family.lines.append(f"{sample}{labels} {_number(number.value)}")

    def _histogram(
        self,
        name: str,
        point: HistogramDataPoint,
        scope_labels: Mapping[str, str],
        origin: tuple[str, str],
        openmetrics: bool,
    ) -> Iterator[str]:
        """Cumulative `le` buckets (OpenMetrics: with exemplars), then `_count` and `_sum`.

        `origin` is the (scope name, metric name) the exemplars were remembered under.
        """
        attributes = _attribute_labels(point.attributes)
        series = _labels(attributes)
        labels = {**attributes, **scope_labels}
        bounds = point.explicit_bounds
        cumulative = 0
        for index, count in enumerate(point.bucket_counts):
            cumulative += count
            le = _number(float(bounds[index])) if index < len(bounds) else "+Inf"
            line = f"{name}_bucket{_labels({**labels, 'le': le})} {cumulative}"
            exemplar = self._exemplars.get((*origin, series, index)) if openmetrics else None
            yield line + _exemplar_suffix(exemplar) if exemplar else line
        yield f"{name}_count{_labels(labels)} {point.count}"
        yield f"{name}_sum{_labels(labels)} {_number(point.sum)}"


def _histogram_points(data: MetricsData) -> Iterator[tuple[tuple[str, str], HistogramDataPoint]]:
    """((scope name, metric name), point) for every histogram data point."""
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if isinstance(metric.data, Histogram):
                    for point in metric.data.data_points:
                        yield (scope_metrics.scope.name, metric.name), point


def _family_name(name: str, unit: str, kind: str) -> str:
    base = re.sub("_+", "_", _INVALID_NAME_CHARS.sub("_", name))  # OTel names start with a letter
    if kind == "counter":
        base = base.removesuffix("_total")
    if unit and not base.endswith(f"_{unit}"):
        base = f"{base}_{unit}"
    return base


def _unit_word(unit: str, kind: str) -> str:
    unit = _UNIT_ANNOTATION.sub("", unit).strip()
    if unit == "1":
        return "ratio" if kind == "gauge" else ""
    if not unit:
        return ""
    main, _, per = unit.partition("/")
    word = _UNIT_WORDS.get(main, main)
    if per:
        word = f"{word}_per_{_PER_UNIT_WORDS.get(per, per)}"
    return re.sub("_+", "_", _INVALID_LABEL_CHARS.sub("_", word)).strip("_")


def _attribute_labels(attributes: Attributes) -> dict[str, str]:
    """Label names sanitised; attributes that collide after sanitising are joined with `;`."""
    labels: dict[str, str] = {}
    for key, value in (attributes or {}).items():
        name = _INVALID_LABEL_CHARS.sub("_", key)
        if name[:1].isdigit():
            name = f"key_{name}"
        text = _attribute_text(value)
        labels[name] = f"{labels[name]};{text}" if name in labels else text
    return labels


def _attribute_text(value: AttributeValue) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, default=str)


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    pairs = ",".join(f'{key}="{_escape(value, quotes=True)}"' for key, value in labels.items())
    return f"{{{pairs}}}"


def _escape(text: str, *, quotes: bool) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quotes else text


def _number(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _exemplar_suffix(exemplar: Exemplar) -> str:
    labels = _labels(
        {"trace_id": f"{exemplar.trace_id:032x}", "span_id": f"{exemplar.span_id:016x}"}
    )
    seconds, nanos = divmod(exemplar.time_unix_nano, 1_000_000_000)
    return f" # {labels} {_number(exemplar.value)} {seconds}.{nanos:09d}"
