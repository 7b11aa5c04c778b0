"""`BucketExemplarReservoir` keeps what the SDK's aligned reservoir keeps, and the bootstrap's
histograms use it."""

from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import (
    AlignedHistogramBucketExemplarReservoir,
    ExemplarReservoir,
    SimpleFixedSizeExemplarReservoir,
)
from opentelemetry.sdk.metrics._internal.aggregation import (
    _ExplicitBucketHistogramAggregation,
    _ExponentialBucketHistogramAggregation,
    _LastValueAggregation,
    _SumAggregation,
)
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel.exemplars import BucketExemplarReservoir, bucket_exemplar_reservoirs
from tests.otel.support import MakeTelemetry
from tests.telemetry_capture import data_points

BOUNDARIES = (0.001, 0.01, 0.1, 1.0)
POINT = {"model": "digits"}


def _in_span(trace_id: int, span_id: int) -> Context:
    span = NonRecordingSpan(SpanContext(trace_id, span_id, False, TraceFlags(TraceFlags.SAMPLED)))
    return trace.set_span_in_context(span)


def _exemplars(reservoir: ExemplarReservoir) -> list[tuple[Any, ...]]:
    return [
        (e.value, e.time_unix_nano, e.trace_id, e.span_id, e.filtered_attributes)
        for e in reservoir.collect(POINT)
    ]


def test_each_bucket_keeps_its_latest_measurement_as_the_sdk_reservoir_does() -> None:
    offers = [
        # below the first boundary, on boundaries (upper bounds are inclusive), past the last
        (0.0005, 1, {**POINT, "pod": "a"}, _in_span(1, 11)),
        (0.01, 2, POINT, _in_span(2, 12)),
        (0.05, 3, {"pod": "b"}, _in_span(3, 13)),
        (0.1, 4, POINT, _in_span(4, 14)),  # replaces 0.05
        (0.07, 5, None, _in_span(5, 15)),  # replaces 0.1 in the (0.01, 0.1] bucket
        (7.0, 6, POINT, _in_span(6, 16)),
        (2.0, 7, {}, _in_span(7, 17)),  # replaces 7.0 in the overflow bucket
    ]
    ours = BucketExemplarReservoir(boundaries=BOUNDARIES)
    sdk = AlignedHistogramBucketExemplarReservoir(boundaries=BOUNDARIES)
    for reservoir in (ours, sdk):
        for offer in offers:
            reservoir.offer(*offer)

    collected = _exemplars(ours)

    assert collected == _exemplars(sdk)
    assert collected == [
        (0.0005, 1, 1, 11, {"pod": "a"}),
        (0.01, 2, 2, 12, {}),
        (0.07, 5, 5, 15, None),
        (2.0, 7, 7, 17, None),
    ]


def test_a_collection_starts_a_new_sampling_period() -> None:
    reservoir = BucketExemplarReservoir(boundaries=BOUNDARIES)
    reservoir.offer(0.05, 1, POINT, _in_span(1, 11))
    assert len(_exemplars(reservoir)) == 1
    assert _exemplars(reservoir) == []
    reservoir.offer(0.5, 2, POINT, _in_span(2, 12))
    assert _exemplars(reservoir) == [(0.5, 2, 2, 12, {})]


def test_an_exemplar_never_carries_another_measurements_trace() -> None:
    """A measurement outside any span leaves its bucket's exemplar without ids (the SDK's
    reservoir keeps the ids of the bucket's previous measurement)."""
    reservoir = BucketExemplarReservoir(boundaries=BOUNDARIES)
    reservoir.offer(0.05, 1, POINT, _in_span(1, 11))
    reservoir.offer(0.06, 2, POINT, Context())
    assert _exemplars(reservoir) == [(0.06, 2, None, None, {})]


def test_the_factory_chooses_it_for_explicit_bucket_histograms_only() -> None:
    assert bucket_exemplar_reservoirs(_ExplicitBucketHistogramAggregation) is (
        BucketExemplarReservoir
    )
    for aggregation in (
        _SumAggregation,
        _LastValueAggregation,
        _ExponentialBucketHistogramAggregation,
    ):
        assert bucket_exemplar_reservoirs(aggregation) is SimpleFixedSizeExemplarReservoir


def test_the_bootstrap_histograms_use_it(make_telemetry: MakeTelemetry) -> None:
    reader = InMemoryMetricReader()
    telemetry = make_telemetry(metric_readers=[reader])
    tracer = telemetry.tracer_provider.get_tracer("tests.otel")
    histogram = telemetry.meter_provider.get_meter("tests.otel").create_histogram(
        "inferwatch.test.duration", unit="s", explicit_bucket_boundaries_advisory=BOUNDARIES
    )
    with tracer.start_as_current_span("request") as span:
        histogram.record(0.05, POINT)
    histogram.record(0.06, POINT)  # no span: its exemplar has no ids

    [point] = data_points(reader, "inferwatch.test.duration")
    assert span.get_span_context().is_valid
    assert isinstance(point, HistogramDataPoint)
    assert list(point.bucket_counts) == [0, 0, 2, 0, 0]  # the advisory boundaries still apply
    assert [(e.value, e.trace_id, e.span_id) for e in point.exemplars] == [(0.06, None, None)]
