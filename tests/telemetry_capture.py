"""In-memory OpenTelemetry providers installed once per test session.

Library code only uses the OpenTelemetry API, so tests install providers globally (a process
can set them once): the tracer provider the servers run with (`LeanTracerProvider`) and the
SDK's meter provider, and read finished spans and collected metrics from memory.
"""

from collections.abc import Iterator
from dataclasses import dataclass

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel.histogram import LeanMeterProvider
from otel.tracing import LeanTracerProvider

DataPoint = NumberDataPoint | HistogramDataPoint


def data_points(reader: InMemoryMetricReader, metric_name: str) -> list[DataPoint]:
    """The data points of one metric in a collection by `reader` (empty when it has none)."""
    data = reader.get_metrics_data()
    found: list[DataPoint] = []
    if data is None:
        return found
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name == metric_name:
                    found.extend(metric.data.data_points)  # type: ignore[arg-type]
    return found


@dataclass
class TelemetryCapture:
    """Spans and metrics recorded through the global providers."""

    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished_spans(self) -> list[ReadableSpan]:
        """Every span ended since the last `clear`."""
        return list(self.spans.get_finished_spans())

    def points(self, metric_name: str) -> list[DataPoint]:
        """Current data points of one metric (cumulative since the session started)."""
        return data_points(self.metrics, metric_name)

    def total(self, metric_name: str, **attributes: str) -> float:
        """Sum of values (histograms: counts) of the points carrying these attributes."""
        total = 0.0
        for point in self.points(metric_name):
            point_attributes = point.attributes or {}
            if all(point_attributes.get(k) == v for k, v in attributes.items()):
                total += point.count if isinstance(point, HistogramDataPoint) else point.value
        return total

    def clear(self) -> None:
        """Forget finished spans (metrics are cumulative; compare before and after)."""
        self.spans.clear()


_capture: TelemetryCapture | None = None


def install() -> TelemetryCapture:
    """Install the in-memory providers globally, once per process."""
    global _capture
    if _capture is None:
        spans = InMemorySpanExporter()
        tracer_provider = LeanTracerProvider()  # the spans the servers make in production
        tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(tracer_provider)
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(LeanMeterProvider(metric_readers=[reader]))  # likewise
        _capture = TelemetryCapture(spans, reader)
    return _capture


def captured() -> Iterator[TelemetryCapture]:
    """Fixture body: the session's capture, with spans cleared before each test."""
    capture = install()
    capture.clear()
    yield capture
