"""Our `/metrics`: OpenMetrics with exemplars, Prometheus text without, names and units."""

import urllib.error

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from otel import DURATION_BUCKETS_S, Telemetry
from otel.prometheus import prefers_openmetrics
from tests.otel.support import MakeTelemetry, parse_openmetrics, samples, scrape


def _record_in_span(telemetry: Telemetry, value: float) -> tuple[str, str]:
    """Records `value` on the request-duration histogram inside a span; (trace_id, span_id)."""
    tracer = telemetry.tracer_provider.get_tracer("tests.otel")
    histogram = telemetry.meter_provider.get_meter("tests.otel").create_histogram(
        "inferwatch.request.duration",
        unit="s",
        description="Time to answer a request.",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
    )
    with tracer.start_as_current_span("predict") as span:
        histogram.record(value, {"model": "digits"})
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def test_openmetrics_scrape_carries_the_span_exemplar(make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry()
    assert telemetry.metrics_port
    trace_id, span_id = _record_in_span(telemetry, 0.004)

    content_type, body = scrape(telemetry.metrics_port, openmetrics=True)

    assert content_type == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    assert body.endswith("# EOF\n")
    [family] = [
        f for f in parse_openmetrics(body) if f.name == "inferwatch_request_duration_seconds"
    ]
    assert family.type == "histogram"
    assert family.unit == "seconds"
    buckets = {s.labels["le"]: s for s in family.samples if s.name.endswith("_bucket")}
    assert list(buckets) == [
        "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5",
        "5.0", "10.0", "+Inf",
    ]  # fmt: skip
    assert [s.value for s in buckets.values()] == [0, 0] + [1] * 12
    exemplars = {le: s.exemplar for le, s in buckets.items() if s.exemplar}
    assert list(exemplars) == ["0.005"]
    assert exemplars["0.005"].labels == {"trace_id": trace_id, "span_id": span_id}
    assert exemplars["0.005"].value == 0.004
    assert buckets["+Inf"].labels == {
        "model": "digits",
        "otel_scope_name": "tests.otel",
        "le": "+Inf",
    }


def test_a_histogram_keeps_the_buckets_it_advises(make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry()
    assert telemetry.metrics_port
    delay = telemetry.meter_provider.get_meter("tests.otel").create_histogram(
        "label.delay", unit="s", explicit_bucket_boundaries_advisory=(1, 60, 3600, 86400)
    )
    delay.record(120)

    body = scrape(telemetry.metrics_port, openmetrics=True)[1]

    [family] = [f for f in parse_openmetrics(body) if f.name == "label_delay_seconds"]
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert buckets == {"1.0": 0, "60.0": 0, "3600.0": 1, "86400.0": 1, "+Inf": 1}


def test_exemplar_stays_until_replaced(make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry()
    assert telemetry.metrics_port
    first, _ = _record_in_span(telemetry, 0.004)
    assert telemetry.force_flush()  # collects too: the SDK hands the exemplar out only once
    assert first in scrape(telemetry.metrics_port, openmetrics=True)[1]
    assert first in scrape(telemetry.metrics_port, openmetrics=True)[1]

    second, _ = _record_in_span(telemetry, 0.003)
    body = scrape(telemetry.metrics_port, openmetrics=True)[1]
    assert second in body
    assert first not in body


def test_prometheus_text_has_no_exemplars(make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry()
    assert telemetry.metrics_port
    trace_id, _ = _record_in_span(telemetry, 0.004)

    content_type, body = scrape(telemetry.metrics_port)

    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert trace_id not in body
    assert " # {" not in body
    assert "# EOF" not in body
    families = {f.name: f for f in parse_prometheus(body)}
    histogram = families["inferwatch_request_duration_seconds"]
    assert histogram.type == "histogram"
    assert {s.name for s in histogram.samples} == {
        "inferwatch_request_duration_seconds_bucket",
        "inferwatch_request_duration_seconds_count",
        "inferwatch_request_duration_seconds_sum",
    }


@pytest.mark.parametrize("openmetrics", [False, True], ids=["prometheus", "openmetrics"])
def test_counters_gauges_units_and_target_info(
    make_telemetry: MakeTelemetry, openmetrics: bool
) -> None:
    telemetry = make_telemetry()
    assert telemetry.metrics_port
    meter = telemetry.meter_provider.get_meter("tests.otel", "2.0")
    meter.create_counter("inferwatch.requests", unit="{request}").add(3, {"grpc.status": "OK"})
    meter.create_counter("payload.size", unit="By").add(1024)
    meter.create_up_down_counter("requests.in-flight").add(2)
    meter.create_gauge("gpu.busy", unit="1").set(0.25)

    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for s in samples(telemetry.metrics_port, openmetrics=openmetrics)
    }

    scope = (("otel_scope_name", "tests.otel"), ("otel_scope_version", "2.0"))
    assert found[("inferwatch_requests_total", (("grpc_status", "OK"), *scope))] == 3
    assert found[("payload_size_bytes_total", scope)] == 1024
    assert found[("requests_in_flight", scope)] == 2
    assert found[("gpu_busy_ratio", scope)] == 0.25
    [target] = [dict(labels) for name, labels in found if name == "target_info"]
    assert {
        "service_name": "otel-test",
        "service_version": "1.2.3",
        "deployment_environment_name": "development",
    }.items() <= target.items()
    assert "service_instance_id" in target
    self_scope = ("otel_scope_name", "inferwatch.telemetry")
    assert (
        found[("inferwatch_telemetry_export_failures_total", (self_scope, ("signal", "traces")))]
        == 0
    )
    assert any(name == "process_cpu_time_seconds_total" for name, _ in found)
    assert any(name == "process_memory_usage_bytes" for name, _ in found)


def test_unsampled_spans_leave_no_exemplar(
    make_telemetry: MakeTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    spans = InMemorySpanExporter()
    telemetry = make_telemetry(span_processors=[SimpleSpanProcessor(spans)])
    assert telemetry.metrics_port
    trace_id, _ = _record_in_span(telemetry, 0.004)

    assert spans.get_finished_spans() == ()
    body = scrape(telemetry.metrics_port, openmetrics=True)[1]
    assert "inferwatch_request_duration_seconds_count" in body
    assert trace_id not in body


def test_other_paths_are_not_found(make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry()
    assert telemetry.metrics_port
    with pytest.raises(urllib.error.HTTPError, match="404"):
        scrape(telemetry.metrics_port, path="/")


@pytest.mark.parametrize("openmetrics", [False, True], ids=["prometheus", "openmetrics"])
def test_awkward_names_and_label_values_stay_parseable(
    make_telemetry: MakeTelemetry, openmetrics: bool
) -> None:
    telemetry = make_telemetry()
    assert telemetry.metrics_port
    meter = telemetry.meter_provider.get_meter("tests.otel")
    awkward = 'say "hi"\\\nbye'
    meter.create_counter("http-2xx..responses_total").add(1, {"path": awkward, "1st": True})
    meter.create_histogram("queue.wait", unit="ms").record(5, {"model.name": awkward})

    found = {s.name: s.labels for s in samples(telemetry.metrics_port, openmetrics=openmetrics)}

    assert found["http_2xx_responses_total"] == {
        "path": awkward,
        "key_1st": "true",
        "otel_scope_name": "tests.otel",
    }
    assert found["queue_wait_milliseconds_count"]["model_name"] == awkward


def test_without_a_span_consumer_spans_are_not_recorded_but_exemplars_remain(
    make_telemetry: MakeTelemetry,
) -> None:
    telemetry = make_telemetry()  # no OTLP endpoint, no extra span processor
    assert telemetry.metrics_port
    tracer = telemetry.tracer_provider.get_tracer("tests.otel")
    with tracer.start_as_current_span("predict") as span:
        assert not span.is_recording()
        assert span.get_span_context().is_valid  # log lines still get a trace id
    trace_id, span_id = _record_in_span(telemetry, 0.004)

    body = scrape(telemetry.metrics_port, openmetrics=True)[1]
    assert f'trace_id="{trace_id}",span_id="{span_id}"' in body


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        ("", False),
        ("text/plain", False),
        ("application/openmetrics-text; version=1.0.0", True),
        # What Prometheus 2.x sends: OpenMetrics first, text as the fallback.
        (
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            True,
        ),
        ("application/openmetrics-text;q=0", False),
        ("text/plain;version=0.0.4,application/openmetrics-text;q=0.5", False),
        ("text/plain;q=0.2, application/openmetrics-text;q=0.9", True),
    ],
)
def test_the_format_follows_the_accept_header_by_quality(accept: str, openmetrics: bool) -> None:
    assert prefers_openmetrics(accept) is openmetrics
