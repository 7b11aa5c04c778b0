"""`PeriodicExport`: OTLP metric export from the aggregation the `/metrics` endpoint reads.

The SDK aggregates every measurement once per metric reader. A second reader just for OTLP
(the SDK's `PeriodicExportingMetricReader`) doubles the cost of each histogram record on the
request path, for data that differs from the scrape endpoint's only in when it is collected.
When the OTLP exporter wants what `PrometheusReader` aggregates anyway (cumulative
temporality, default aggregations; the SDK's defaults), this thread collects from that reader
every `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60000) and exports, within
`OTEL_METRIC_EXPORT_TIMEOUT` ms (default 30000). Any other preference (delta temporality,
exponential histograms) gets the SDK's own reader instead: see `shares_aggregation`.

The SDK hands each exemplar out once, to whichever collection comes first, a scrape or an
export. So the exemplars of every collection are kept (the latest per histogram bucket, or per
series for other points) and the next export carries those it would otherwise have missed.
"""

import bisect
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from opentelemetry.sdk.environment_variables import (
    OTEL_METRIC_EXPORT_INTERVAL,
    OTEL_METRIC_EXPORT_TIMEOUT,
)
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.metrics.view import (
    Aggregation,
    DefaultAggregation,
    ExplicitBucketHistogramAggregation,
)

from otel.prometheus import PrometheusReader

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_MS = 60_000.0
DEFAULT_TIMEOUT_MS = 30_000.0


def shares_aggregation(exporter: MetricExporter) -> bool:
    """Whether the exporter wants exactly what `PrometheusReader` aggregates: cumulative
    temporality, and default aggregations (the OTLP exporters name an explicit-bucket histogram
    with no bounds of its own, which takes each instrument's advised bounds like the default)."""
    temporalities = (exporter._preferred_temporality or {}).values()
    aggregations = (exporter._preferred_aggregation or {}).values()
    return all(t is AggregationTemporality.CUMULATIVE for t in temporalities) and all(
        map(_is_default, aggregations)
    )


def _is_default(aggregation: Aggregation) -> bool:
    if isinstance(aggregation, DefaultAggregation):
        return True
    return (
        type(aggregation) is ExplicitBucketHistogramAggregation
        and aggregation._boundaries is None
        and aggregation._record_min_max
    )


def _milliseconds(name: str, default: float) -> float:
    value = os.environ.get(name, "")
    try:
        parsed = float(value) if value.strip() else default
    except ValueError:
        parsed = -1.0
    if parsed <= 0:
        logger.warning("%s=%r is not a positive number of ms; using %s", name, value, default)
        return default
    return parsed


_ExemplarSlot = tuple[str, str, frozenset[tuple[str, Any]], int]
"""(scope name, metric name, point attributes, bucket index or 0) of one kept exemplar."""


class _ExemplarsSinceExport:
    """The exemplars every collection carried since the last export."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._kept: dict[_ExemplarSlot, Exemplar] = {}

    def observe(self, data: MetricsData) -> None:
        """Keeps the exemplars of one collection (a scrape's or an export's)."""
        with self._lock:
            for scope, metric, point in _points(data):
                for exemplar in point.exemplars:
                    self._kept[_slot(scope, metric, point, exemplar)] = exemplar

    def attach(self, data: MetricsData) -> MetricsData:
        """`data` with each point carrying the exemplars kept for it; forgets them all."""
        with self._lock:
            kept, self._kept = self._kept, {}
        if not kept:
            return data
        by_series: dict[tuple[str, str, frozenset[tuple[str, Any]]], list[Exemplar]] = {}
        for (scope, metric, series, _), exemplar in kept.items():
            by_series.setdefault((scope, metric, series), []).append(exemplar)

        def with_exemplars(scope: str, metric: Metric) -> Metric:
            if not isinstance(metric.data, (Histogram, Sum, Gauge)):
                return metric
            points = [
                replace(point, exemplars=by_series.get((scope, metric.name, _series(point)), []))
                for point in metric.data.data_points
            ]
            data: Any = metric.data  # one of three point types; replace() is the same for all
            return replace(metric, data=replace(data, data_points=points))

        return replace(
            data,
            resource_metrics=[
                replace(
                    resource_metrics,
                    scope_metrics=[
                        replace(
                            scope_metrics,
                            metrics=[
                                with_exemplars(scope_metrics.scope.name, metric)
                                for metric in scope_metrics.metrics
                            ],
                        )
                        for scope_metrics in resource_metrics.scope_metrics
                    ],
                )
                for resource_metrics in data.resource_metrics
            ],
        )


def _points(data: MetricsData) -> Iterator[tuple[str, str, Any]]:
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if isinstance(metric.data, (Histogram, Sum, Gauge)):
                    for point in metric.data.data_points:
                        yield scope_metrics.scope.name, metric.name, point


def _series(point: Any) -> frozenset[tuple[str, Any]]:
    return frozenset(
        (key, tuple(value) if isinstance(value, list) else value)
        for key, value in (point.attributes or {}).items()
    )


def _slot(scope: str, metric: str, point: Any, exemplar: Exemplar) -> _ExemplarSlot:
    bucket = 0
    if isinstance(point, HistogramDataPoint):
        bucket = bisect.bisect_left(point.explicit_bounds, exemplar.value)
    return scope, metric, _series(point), bucket


class PeriodicExport:
    """Exports `reader`'s metrics to `exporter` every interval, from a daemon thread."""

    def __init__(self, reader: PrometheusReader, exporter: MetricExporter) -> None:
        self._reader = reader
        self._exporter = exporter
        self._exemplars = _ExemplarsSinceExport()
        reader.on_collect(self._exemplars.observe)
        self._interval_s = _milliseconds(OTEL_METRIC_EXPORT_INTERVAL, DEFAULT_INTERVAL_MS) / 1000
        self._timeout_ms = _milliseconds(OTEL_METRIC_EXPORT_TIMEOUT, DEFAULT_TIMEOUT_MS)
        self._stop = threading.Event()
        self._export_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="otlp-metric-export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.export_once()

    def export_once(self) -> bool:
        """Collects now and exports; False when the export failed (it is counted by the
        exporter's self-metrics) or raised."""
        with self._export_lock:
            try:
                data = self._reader.collect_data(self._timeout_ms)
                if data is None:
                    return True
                data = self._exemplars.attach(data)
                result = self._exporter.export(data, timeout_millis=self._timeout_ms)
            except Exception:
                logger.exception("Exporting metrics over OTLP failed")
                return False
        return result is MetricExportResult.SUCCESS

    def force_flush(self) -> bool:
        """Exports what the reader holds now."""
        return self.export_once()

    def shutdown(self) -> None:
        """Stops the thread, exports a last time, and shuts the exporter down."""
        self._stop.set()
        self._thread.join()
        self.export_once()
        self._exporter.shutdown(timeout_millis=self._timeout_ms)
