"""`LeanMeterProvider` collects what the SDK's `MeterProvider` collects, point for point.

Every scenario records the same measurements through both providers, with the same readers,
views and exemplar filter, inside the same sampled span, and compares what the readers collect:
every data point field but the timestamps, and every exemplar.
"""

import logging
import math
from collections.abc import Callable
from typing import Any, cast

import pytest
from opentelemetry import trace
from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import (
    AlwaysOffExemplarFilter,
    AlwaysOnExemplarFilter,
    Histogram,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel.histogram import MAX_BINDINGS, LeanHistogram, LeanMeterProvider

PROVIDERS = (MeterProvider, LeanMeterProvider)
BUCKETS = (0.001, 0.01, 0.1, 1.0)
SPAN = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0x00F067AA0BA902B7,
    is_remote=False,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)
OK = {"model": "digits", "status": "OK"}
FAILED = {"model": "digits", "status": "INTERNAL"}
Scenario = Callable[[Meter, Callable[[], None]], None]
"""Records through the meter; the second argument collects (a reader's collection)."""


def _collect(provider_class: type[MeterProvider], scenario: Scenario, **options: Any) -> list[Any]:
    """Every point the scenario's collections saw, without timestamps."""
    temporality = options.pop("temporality", AggregationTemporality.CUMULATIVE)
    reader = InMemoryMetricReader(preferred_temporality={Histogram: temporality})
    provider = provider_class(metric_readers=[reader], **options)
    collected: list[Any] = []

    def collect() -> None:
        data = reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    for point in metric.data.data_points:
                        collected.append((metric.name, _point(point)))
        collected.append("collected")

    with trace.use_span(NonRecordingSpan(SPAN)):
        scenario(provider.get_meter("test"), collect)
    collect()
    provider.shutdown()
    return collected


def _point(point: Any) -> dict[str, Any]:
    fields = {
        name: value
        for name, value in vars(point).items()
        if name not in ("start_time_unix_nano", "time_unix_nano", "exemplars")
    }
    fields["exemplars"] = [
        (e.value, e.trace_id, e.span_id, e.filtered_attributes) for e in point.exemplars
    ]
    return fields


def _same(scenario: Scenario, **options: Any) -> list[Any]:
    sdk, lean = (_collect(provider, scenario, **dict(options)) for provider in PROVIDERS)
    assert lean == sdk
    return lean


def _durations(meter: Meter, collect: Callable[[], None]) -> None:
    histogram = meter.create_histogram("d", "s", explicit_bucket_boundaries_advisory=BUCKETS)
    for value in (0.0005, 0.003, 0.003, 0.2, 5.0, 0.001, 0):
        histogram.record(value, OK)
    histogram.record(0.05, FAILED)
    collect()
    for value in (0.02, 0.7):
        histogram.record(value, OK)
    histogram.record(0.03)
    histogram.record(0.04, {})
    collect()


@pytest.mark.parametrize(
    "temporality", [AggregationTemporality.CUMULATIVE, AggregationTemporality.DELTA]
)
@pytest.mark.parametrize(
    "exemplar_filter",
    [AlwaysOnExemplarFilter(), TraceBasedExemplarFilter(), AlwaysOffExemplarFilter()],
    ids=["always-on", "trace-based", "always-off"],
)
def test_histograms_collect_what_the_sdk_collects(
    temporality: AggregationTemporality, exemplar_filter: Any
) -> None:
    points = _same(_durations, temporality=temporality, exemplar_filter=exemplar_filter)
    assert len([p for p in points if p != "collected"]) >= 3  # the scenario did record


def test_the_bound_path_is_taken_and_matches_the_sdk() -> None:
    provider = LeanMeterProvider(metric_readers=[InMemoryMetricReader()])
    histogram = provider.get_meter("test").create_histogram("d")
    assert isinstance(histogram, LeanHistogram)
    histogram.record(1.0, OK)
    [binding] = histogram._bindings.values()  # the second record of OK no longer passes the SDK
    assert binding.aggregations is not None
    assert _same(_durations, exemplar_filter=AlwaysOnExemplarFilter())[0][1]["count"] == 7


def test_under_delta_temporality_every_measurement_takes_the_sdk_path() -> None:
    reader = InMemoryMetricReader(preferred_temporality={Histogram: AggregationTemporality.DELTA})
    histogram = LeanMeterProvider(metric_readers=[reader]).get_meter("t").create_histogram("d")
    assert isinstance(histogram, LeanHistogram)
    histogram.record(1.0, OK)
    [binding] = histogram._bindings.values()  # the SDK drops its aggregations at collection
    assert binding.aggregations is None


def test_unbounded_attribute_sets_do_not_grow_the_cache_without_bound() -> None:
    reader = InMemoryMetricReader()
    histogram = LeanMeterProvider(metric_readers=[reader]).get_meter("t").create_histogram("d")
    assert isinstance(histogram, LeanHistogram)
    for request in range(MAX_BINDINGS + 100):  # an id as an attribute: what not to do
        histogram.record(0.5, {"request.id": request})
        histogram.record(0.5, {"request.id": str(request)})
    assert len(histogram._bindings) <= MAX_BINDINGS
    histogram.record(0.5, OK)
    histogram.record(0.5, OK)
    assert histogram._bindings[tuple(OK.items())].aggregations is None  # past the SDK's limit


def test_views_filter_keys_limit_cardinality_and_choose_aggregations() -> None:
    def scenario(meter: Meter, collect: Callable[[], None]) -> None:
        for name in ("keys", "limited", "exponential"):
            histogram = meter.create_histogram(name, explicit_bucket_boundaries_advisory=BUCKETS)
            for model in ("a", "b", "c", "a", "d", "b"):
                histogram.record(0.01, {"model": model, "status": "OK"})
                histogram.record(0.5, {"model": model, "status": "OK"})
            collect()
            if isinstance(histogram, LeanHistogram):  # which sets took the short way
                bound[name] = sorted(
                    str(dict(key)["model"])
                    for key, binding in histogram._bindings.items()
                    if binding.aggregations is not None
                )

    bound: dict[str, list[str]] = {}

    _same(
        scenario,
        exemplar_filter=AlwaysOnExemplarFilter(),
        views=[
            View(instrument_name="keys", attribute_keys={"status"}),
            View(instrument_name="limited", aggregation_cardinality_limit=2),
            View(
                instrument_name="exponential", aggregation=ExponentialBucketHistogramAggregation()
            ),
        ],
    )
    # past the limit of two sets, c and d go to the SDK's overflow point, on the SDK's path
    assert bound == {"keys": ["a", "b", "c", "d"], "limited": ["a", "b"], "exponential": []}


def test_values_the_sdk_refuses_are_refused_with_its_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def scenario(meter: Meter, collect: Callable[[], None]) -> None:
        histogram = meter.create_histogram("d")
        histogram.record(0.5, OK)
        for amount in (-1.0, math.nan, math.inf):
            histogram.record(amount, OK)

    with caplog.at_level(logging.WARNING):
        points = _same(scenario)
    assert points[0][1]["count"] == 1
    assert len([r for r in caplog.records if "Histogram d" in r.getMessage()]) == 2 * 3


def test_attributes_are_keyed_by_value_not_by_object() -> None:
    def scenario(meter: Meter, collect: Callable[[], None]) -> None:
        histogram = meter.create_histogram("d")
        attributes = {"status": "OK"}
        histogram.record(0.5, attributes)
        histogram.record(0.5, attributes)
        attributes["status"] = "INTERNAL"
        histogram.record(0.5, attributes)
        # equal values of other types are other series: True == 1 == 1.0 in Python
        for value in (1, True, 1.0, "1", (1, 2)):
            histogram.record(0.5, {"status": value})
            histogram.record(0.5, {"status": value})

    points = _same(scenario)
    assert sorted(p[1]["count"] for p in points if p != "collected") == [1, 2, 2, 2, 2, 2, 2]


def test_a_reader_added_later_gets_every_measurement_after_it() -> None:
    for provider_class in PROVIDERS:
        first = InMemoryMetricReader()
        provider = provider_class(metric_readers=[first])
        histogram = provider.get_meter("test").create_histogram("d")
        histogram.record(0.5, OK)
        histogram.record(0.5, OK)
        late = InMemoryMetricReader()
        provider.add_metric_reader(late)
        histogram.record(0.5, OK)
        counts = [_only_point(reader)["count"] for reader in (first, late)]
        assert counts == [3, 1], provider_class.__name__
        provider.shutdown()


def _only_point(reader: InMemoryMetricReader) -> dict[str, Any]:
    data = reader.get_metrics_data()
    assert data is not None
    [metric] = data.resource_metrics[0].scope_metrics[0].metrics
    [point] = metric.data.data_points
    return vars(point)


def test_one_meter_and_one_histogram_per_identity_and_the_other_instruments_work() -> None:
    reader = InMemoryMetricReader()
    provider = LeanMeterProvider(metric_readers=[reader])
    meter = provider.get_meter("test", "1.0")
    assert provider.get_meter("test", "1.0") is meter
    assert provider.get_meter("other") is not meter
    assert meter.create_histogram("d") is meter.create_histogram("d")
    meter.create_counter("c").add(2, OK)
    meter.create_up_down_counter("u").add(-1, OK)
    meter.create_gauge("g").set(7, OK)
    meter.create_observable_counter("oc", [lambda _: []])
    meter.create_observable_gauge("og", [lambda _: []])
    meter.create_observable_up_down_counter("ou", [lambda _: []])
    data = reader.get_metrics_data()
    assert data is not None
    values = {
        metric.name: cast(NumberDataPoint, metric.data.data_points[0]).value
        for metric in data.resource_metrics[0].scope_metrics[0].metrics
    }
    assert values == {"c": 2, "u": -1, "g": 7}


def test_a_span_from_a_tracer_provider_gives_the_exemplar_its_ids() -> None:
    reader = InMemoryMetricReader()
    provider = LeanMeterProvider(metric_readers=[reader])
    histogram = provider.get_meter("test").create_histogram("d")
    tracer = TracerProvider().get_tracer("test")
    for _ in range(3):
        with tracer.start_as_current_span("request") as span:
            histogram.record(0.5, OK)
    point = _only_point(reader)
    [exemplar] = point["exemplars"]
    assert (exemplar.trace_id, exemplar.span_id) == (
        span.get_span_context().trace_id,
        span.get_span_context().span_id,
    )
