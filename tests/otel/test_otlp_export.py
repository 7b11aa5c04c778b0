"""Traces, metrics and logs reach a real OTLP receiver with our resource, correlated by trace."""

import logging
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

from otel import DURATION_BUCKETS_S, TelemetrySettings, build_resource, otlp
from otel.span_batching import ENCODING_GROUP
from otel.tracing import LeanSpan
from tests.otel.otlp_receiver import OtlpGrpcReceiver, OtlpHttpReceiver, attributes
from tests.otel.support import MakeTelemetry

Receiver = OtlpGrpcReceiver | OtlpHttpReceiver


@pytest.fixture(params=["grpc", "http/protobuf"])
def receiver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A receiver speaking the protocol OTEL_EXPORTER_OTLP_PROTOCOL names; the endpoint set."""
    receiver: Receiver = OtlpGrpcReceiver() if request.param == "grpc" else OtlpHttpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", request.param)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    yield receiver
    receiver.stop()


@pytest.mark.parametrize("encode_spans_at_end", [True, False])
def test_span_histogram_and_log_arrive_correlated(
    receiver: Receiver,
    encode_spans_at_end: bool,
    make_telemetry: MakeTelemetry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=replica-7,team=ml")
    telemetry = make_telemetry(
        deployment_environment="staging", encode_spans_at_end=encode_spans_at_end
    )
    tracer = telemetry.tracer_provider.get_tracer("tests.otel")
    duration = telemetry.meter_provider.get_meter("tests.otel").create_histogram(
        "inferwatch.request.duration",
        unit="s",
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
    )

    with tracer.start_as_current_span("predict") as span:
        duration.record(0.02, {"model": "digits"})
        logging.getLogger("tests.otel").warning("predicted %s", "digits", extra={"model": "digits"})
    for _ in range(ENCODING_GROUP - 1):  # spans are encoded at the end a group at a time
        tracer.start_span("filler").end()
    trace_id = span.get_span_context().trace_id.to_bytes(16, "big")
    span_id = span.get_span_context().span_id.to_bytes(8, "big")
    # Only our OTLP/gRPC exporter has an encoder to share; over HTTP the SDK's encodes.
    assert isinstance(span, LeanSpan)
    assert bool(span.encoded) is (encode_spans_at_end and isinstance(receiver, OtlpGrpcReceiver))
    assert telemetry.force_flush()

    received = receiver.received
    received.wait_for(lambda r: r.spans() and r.log_records() and r.metrics())
    [(resource, exported)] = [
        (res, span) for res, span in received.spans() if span.name == "predict"
    ]
    assert (exported.trace_id, exported.span_id) == (trace_id, span_id)
    assert {
        "service.name": "otel-test",
        "service.version": "1.2.3",
        "deployment.environment.name": "staging",
        "service.instance.id": "replica-7",
        "team": "ml",
    }.items() <= resource.items()
    resource_keys = [
        pair.key for pair in received.trace_requests[0].resource_spans[0].resource.attributes
    ]
    assert resource_keys.count("service.instance.id") == 1

    [(log_resource, record)] = [
        (res, rec)
        for res, rec in received.log_records()
        if rec.body.string_value == "predicted digits"
    ]
    assert (record.trace_id, record.span_id) == (trace_id, span_id)
    assert record.severity_text == "WARN"
    assert attributes(record.attributes)["model"] == "digits"
    assert log_resource == resource

    [point] = [
        point
        for res, metric in received.metrics()
        if metric.name == "inferwatch.request.duration"
        for point in metric.histogram.data_points
    ]
    assert list(point.explicit_bounds) == list(DURATION_BUCKETS_S)
    assert [(e.trace_id, e.span_id, e.as_double) for e in point.exemplars] == [
        (trace_id, span_id, 0.02)
    ]


def test_shutdown_exports_the_spans_and_logs_still_waiting(
    receiver: Receiver, make_telemetry: MakeTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("OTEL_BSP_SCHEDULE_DELAY", "OTEL_BLRP_SCHEDULE_DELAY"):
        monkeypatch.setenv(variable, "600000")  # no scheduled export within the test
    telemetry = make_telemetry()
    tracer = telemetry.tracer_provider.get_tracer("tests.otel")
    with tracer.start_as_current_span("last words") as span:  # fewer than a group to encode
        logging.getLogger("tests.otel").warning("shutting down")
    trace_id = span.get_span_context().trace_id.to_bytes(16, "big")

    telemetry.shutdown()

    received = receiver.received
    received.wait_for(lambda r: r.spans() and r.log_records())
    assert [exported.trace_id for _, exported in received.spans()] == [trace_id]
    [record] = [
        rec for _, rec in received.log_records() if rec.body.string_value == "shutting down"
    ]
    assert record.trace_id == trace_id


def test_without_endpoint_nothing_is_exported() -> None:
    assert (otlp.span_exporter(), otlp.metric_exporter(), otlp.log_exporter()) == (None, None, None)


def test_protocol_and_per_signal_switches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    assert isinstance(otlp.span_exporter(), GrpcSpans)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    assert isinstance(otlp.span_exporter(), HttpSpans)
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert otlp.span_exporter() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        otlp.metric_exporter()


def test_resource_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = TelemetrySettings(deployment_environment="prod")
    resource = build_resource(settings, service_name="model-server", service_version="0.1.0")
    assert resource.attributes["service.name"] == "model-server"
    assert resource.attributes["deployment.environment.name"] == "prod"
    assert len(str(resource.attributes["service.instance.id"])) == 36  # the SDK's random UUID

    monkeypatch.setenv("OTEL_SERVICE_NAME", "renamed")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=pod-1,service.version=9")
    resource = build_resource(settings, service_name="model-server", service_version="0.1.0")
    assert resource.attributes["service.name"] == "renamed"
    assert resource.attributes["service.version"] == "9"
    assert resource.attributes["service.instance.id"] == "pod-1"
