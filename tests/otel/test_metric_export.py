"""OTLP metrics come from the aggregation `/metrics` reads, unless the exporter wants another
temporality; either way they reach a real OTLP receiver, periodically and at flush."""

from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel import DURATION_BUCKETS_S, Telemetry
from otel.metric_export import shares_aggregation
from tests.otel.otlp_receiver import OtlpGrpcReceiver
from tests.otel.support import MakeTelemetry, sample_value, scrape

NAME = "inferwatch.test.duration"
SCRAPED = "inferwatch_test_duration_seconds"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpGrpcReceiver]:
    receiver = OtlpGrpcReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    monkeypatch.setenv("OTEL_LOGS_EXPORTER", "none")
    yield receiver
    receiver.stop()


def _record(make_telemetry: MakeTelemetry, values: list[float]) -> tuple[int, Telemetry]:
    telemetry = make_telemetry()
    histogram = telemetry.meter_provider.get_meter("tests.export").create_histogram(
        NAME, unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S
    )
    for value in values:
        histogram.record(value, {"model": "digits"})
    return telemetry.metrics_port or 0, telemetry


def _points(receiver: OtlpGrpcReceiver) -> list[tuple[int, int, float]]:
    """(temporality, count, sum) of every exported point of the test histogram, in order."""
    return [
        (metric.histogram.aggregation_temporality, point.count, point.sum)
        for _, metric in receiver.received.metrics()
        if metric.name == NAME
        for point in metric.histogram.data_points
    ]


@pytest.mark.parametrize(
    ("preference", "temporality"),
    [
        # The default: exported from the aggregation /metrics reads.
        (None, AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE),
        # An exporter that wants delta gets the SDK's own reader.
        ("delta", AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA),
    ],
)
def test_the_export_and_the_scrape_report_the_same_histogram(
    preference: str | None,
    temporality: int,
    receiver: OtlpGrpcReceiver,
    make_telemetry: MakeTelemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if preference:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", preference)
    port, telemetry = _record(make_telemetry, [0.002, 0.02, 0.2])
    scraped = sample_value(port, f"{SCRAPED}_count", model="digits")
    assert telemetry.force_flush()

    receiver.received.wait_for(lambda received: _points(receiver))
    [(exported_temporality, count, total)] = _points(receiver)
    assert exported_temporality == temporality
    assert count == 3
    assert total == pytest.approx(0.222)
    assert scraped == 3


def test_the_export_runs_every_interval_without_a_flush(
    receiver: OtlpGrpcReceiver, make_telemetry: MakeTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "100")
    _record(make_telemetry, [0.5])

    receiver.received.wait_for(lambda received: len(_points(receiver)) >= 2)
    assert {point[1] for point in _points(receiver)} == {1}  # cumulative: the same one value


def test_shutdown_exports_what_was_recorded_since_the_last_export(
    receiver: OtlpGrpcReceiver, make_telemetry: MakeTelemetry
) -> None:
    _, telemetry = _record(make_telemetry, [0.01, 0.01])

    telemetry.shutdown()

    receiver.received.wait_for(lambda received: _points(receiver))
    assert [point[1] for point in _points(receiver)] == [2]


@pytest.mark.parametrize(
    ("variable", "value", "shared"),
    [
        (None, None, True),
        ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "cumulative", True),
        ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta", False),
        ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "lowmemory", False),
        (
            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
            "base2_exponential_bucket_histogram",
            False,
        ),
    ],
)
def test_only_an_exporter_wanting_what_prometheus_aggregates_shares_it(
    variable: str | None, value: str | None, shared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if variable and value:
        monkeypatch.setenv(variable, value)

    assert shares_aggregation(OTLPMetricExporter()) is shared


def test_an_exemplar_a_scrape_collected_first_still_reaches_the_export(
    receiver: OtlpGrpcReceiver, make_telemetry: MakeTelemetry
) -> None:
    telemetry = make_telemetry(span_processors=[SimpleSpanProcessor(InMemorySpanExporter())])
    histogram = telemetry.meter_provider.get_meter("tests.export").create_histogram(
        NAME, unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S
    )
    with telemetry.tracer_provider.get_tracer("tests.export").start_as_current_span("slow") as span:
        histogram.record(0.3, {"model": "digits"})
    _, body = scrape(telemetry.metrics_port or 0, openmetrics=True)  # the SDK's one hand-out
    assert f"{span.get_span_context().trace_id:032x}" in body

    assert telemetry.force_flush()

    receiver.received.wait_for(lambda received: _points(receiver))
    [point] = [
        point
        for _, metric in receiver.received.metrics()
        if metric.name == NAME
        for point in metric.histogram.data_points
    ]
    assert [(e.trace_id, e.span_id, e.as_double) for e in point.exemplars] == [
        (
            span.get_span_context().trace_id.to_bytes(16, "big"),
            span.get_span_context().span_id.to_bytes(8, "big"),
            0.3,
        )
    ]
