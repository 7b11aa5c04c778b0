"""Span shapes and metrics of the model server, read from in-memory exporters."""

from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from model_server.proto import grpc_service_pb2 as pb
from tests.conftest import Serve, ServerThread, wait_until
from tests.model_server.protocol import outputs, pixels_request, probe_request, raw_request
from tests.model_server.test_models import probe_config, write_probe, write_softmax
from tests.telemetry_capture import TelemetryCapture

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),)
INFER_SPAN = "inference.GRPCInferenceService/ModelInfer"
ROW4 = np.ones((1, 4))


@pytest.fixture
def server(repository: Path, serve: Serve) -> ServerThread:
    write_probe(repository / "probe" / "1", probe_config(max_batch_size=16, delay_ms=50))
    write_probe(repository / "slow" / "1", probe_config(max_batch_size=16, delay_ms=1000))
    return serve(repository)


def _named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def test_request_spans_continue_the_callers_trace(
    server: ServerThread, telemetry: TelemetryCapture
) -> None:
    server.stub.ModelInfer(pixels_request(np.zeros((2, 64))), metadata=TRACEPARENT)

    spans = telemetry.finished_spans()
    (root,) = _named(spans, INFER_SPAN)
    assert root.kind is SpanKind.SERVER
    assert f"{root.context.trace_id:032x}" == TRACE_ID
    assert root.parent is not None
    assert f"{root.parent.span_id:016x}" == PARENT_ID
    assert root.attributes is not None
    assert dict(root.attributes) == {
        "rpc.system": "grpc",
        "rpc.service": "inference.GRPCInferenceService",
        "rpc.method": "ModelInfer",
        "rpc.grpc.status_code": 0,
        "model.name": "digits",
        "model.version": "1",
    }
    for phase in ("infer.decode", "infer.queue", "infer.encode"):
        (span,) = _named(spans, phase)
        assert span.parent is not None
        assert span.parent.span_id == root.context.span_id, phase
    (forward,) = _named(spans, "infer.forward")
    assert forward.parent is not None
    assert forward.parent.span_id == root.context.span_id
    assert [link.context.span_id for link in forward.links] == [root.context.span_id]
    assert forward.attributes is not None
    assert forward.attributes["inferwatch.batch.size"] == 2
    assert forward.attributes["model.name"] == "digits"


def test_one_forward_span_links_every_request_of_its_batch(
    server: ServerThread, telemetry: TelemetryCapture
) -> None:
    futures = [server.stub.ModelInfer.future(probe_request(np.ones((2, 4)))) for _ in range(4)]
    for future in futures:
        future.result(timeout=10)

    spans = telemetry.finished_spans()
    requests = {span.context.span_id for span in _named(spans, INFER_SPAN)}
    forwards = _named(spans, "infer.forward")
    linked = [link.context.span_id for span in forwards for link in span.links]
    assert sorted(linked) == sorted(requests)
    assert sum(span.attributes["inferwatch.batch.size"] for span in forwards) == 8  # type: ignore[index, misc]
    assert len(forwards) < 4  # at least two requests shared a forward pass


def test_a_sampled_request_behind_an_unsampled_one_keeps_its_forward_span(
    server: ServerThread, telemetry: TelemetryCapture
) -> None:
    unsampled_trace, sampled_trace = "1" * 32, "2" * 32
    first = server.stub.ModelInfer.future(
        probe_request(ROW4, "slow"),
        metadata=(("traceparent", f"00-{unsampled_trace}-{PARENT_ID}-00"),),
    )
    wait_until(lambda: server.server.repository.resolve("slow", "").batcher.queue_depth == 1)  # type: ignore[union-attr]
    second = server.stub.ModelInfer.future(
        probe_request(ROW4, "slow"),
        metadata=(("traceparent", f"00-{sampled_trace}-{PARENT_ID}-01"),),
    )
    assert int(outputs(first.result(timeout=10))["batch"][0]) == 2  # one batch for both
    second.result(timeout=10)

    spans = telemetry.finished_spans()
    assert {f"{span.context.trace_id:032x}" for span in spans} == {sampled_trace}
    (root,) = _named(spans, INFER_SPAN)
    (forward,) = _named(spans, "infer.forward")
    assert forward.parent is not None
    assert forward.parent.span_id == root.context.span_id
    assert len(forward.links) == 2  # the unsampled request is linked too


def test_client_errors_are_not_span_errors_but_server_faults_are(
    server: ServerThread, telemetry: TelemetryCapture
) -> None:
    for request in (pixels_request(np.zeros((1, 3))), probe_request(np.full((1, 4), -5000.0))):
        with pytest.raises(grpc.RpcError):
            server.stub.ModelInfer(request)

    client_error, server_fault = _named(telemetry.finished_spans(), INFER_SPAN)
    assert client_error.attributes is not None
    assert server_fault.attributes is not None
    assert (
        client_error.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    )
    assert client_error.status.status_code is StatusCode.UNSET
    assert server_fault.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert server_fault.status.status_code is StatusCode.ERROR


def test_the_request_span_names_the_model_and_the_version_that_answered(
    server: ServerThread, telemetry: TelemetryCapture
) -> None:
    """What Tempo searches such as `{ span.model.name = "digits" }` find; bounded like the
    metrics: a name the repository does not know is `_unknown`, a version only from an answer."""
    server.stub.ModelInfer(probe_request(np.ones((1, 4))), metadata=TRACEPARENT)
    for request in (pixels_request(np.zeros((1, 3)), version="1"), probe_request(ROW4, "nope")):
        with pytest.raises(grpc.RpcError):
            server.stub.ModelInfer(request, metadata=TRACEPARENT)

    named = [
        {k: v for k, v in (span.attributes or {}).items() if k.startswith("model.")}
        for span in _named(telemetry.finished_spans(), INFER_SPAN)
    ]
    assert named == [
        {"model.name": "probe", "model.version": "1"},
        {"model.name": "digits"},
        {"model.name": "_unknown"},
    ]


def test_health_checks_are_not_traced(server: ServerThread, telemetry: TelemetryCapture) -> None:
    assert server.channel is not None
    server.stub.ServerLive(pb.ServerLiveRequest())
    server.stub.ServerReady(pb.ServerReadyRequest())
    server.stub.ModelReady(pb.ModelReadyRequest(name="digits"))
    health_pb2_grpc.HealthStub(server.channel).Check(health_pb2.HealthCheckRequest())
    assert telemetry.finished_spans() == []
    server.stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"))
    assert [s.name for s in telemetry.finished_spans()] == [
        "inference.GRPCInferenceService/ModelMetadata"
    ]


def test_no_payload_or_request_id_in_span_attributes(
    server: ServerThread, telemetry: TelemetryCapture
) -> None:
    canary = 1234.5678
    request = pixels_request(np.full((1, 64), canary), request_id="canary-request-id")
    server.stub.ModelInfer(request, metadata=TRACEPARENT)
    for span in telemetry.finished_spans():
        text = repr(dict(span.attributes or {})) + repr([e.attributes for e in span.events])
        assert "1234.5" not in text
        assert "canary-request-id" not in text


def test_request_metrics_have_bounded_attributes(
    server: ServerThread, telemetry: TelemetryCapture
) -> None:
    name = "inferwatch.server.requests"
    before_ok = telemetry.total(name, **{"model.name": "digits", "status": "OK"})
    before_unknown = telemetry.total(name, **{"model.name": "_unknown", "status": "NOT_FOUND"})
    before_duration = telemetry.total(
        "inferwatch.server.request.duration", **{"model.name": "digits", "model.version": "1"}
    )

    server.stub.ModelInfer(pixels_request(np.zeros((3, 64))))
    with pytest.raises(grpc.RpcError):
        server.stub.ModelInfer(probe_request(np.ones((1, 4)), model="no-such-model-xyz"))

    assert telemetry.total(name, **{"model.name": "digits", "status": "OK"}) == before_ok + 1
    unknown = telemetry.total(name, **{"model.name": "_unknown", "status": "NOT_FOUND"})
    assert unknown == before_unknown + 1
    names = {(p.attributes or {}).get("model.name") for p in telemetry.points(name)}
    assert "no-such-model-xyz" not in names
    duration = "inferwatch.server.request.duration"
    assert telemetry.total(duration, **{"model.name": "digits", "model.version": "1"}) == (
        before_duration + 1
    )


def test_model_quality_and_batch_metrics(server: ServerThread, telemetry: TelemetryCapture) -> None:
    digits_attributes = {"model.name": "digits", "model.version": "1"}
    confidence_before = telemetry.total("inferwatch.model.confidence", **digits_attributes)
    predictions_before = telemetry.total("inferwatch.model.predictions", **digits_attributes)
    batches_before = telemetry.total("inferwatch.batch.size", **digits_attributes)

    server.stub.ModelInfer(pixels_request(np.zeros((5, 64))))

    assert telemetry.total("inferwatch.model.confidence", **digits_attributes) == (
        confidence_before + 5
    )
    predictions = "inferwatch.model.predictions"
    assert telemetry.total(predictions, **digits_attributes) == predictions_before + 5
    labels = {
        (p.attributes or {}).get("label")
        for p in telemetry.points(predictions)
        if (p.attributes or {}).get("model.name") == "digits"
    }
    assert labels <= {str(d) for d in range(10)}
    assert telemetry.total("inferwatch.batch.size", **digits_attributes) == batches_before + 1
    assert telemetry.total("inferwatch.model.ready", **digits_attributes) == 1
    depth = telemetry.points("inferwatch.batch.queue.depth")
    assert any(p.attributes == {"model.name": "probe", "model.version": "1"} for p in depth)


def test_in_flight_and_queue_depth_while_a_request_waits(
    server: ServerThread, telemetry: TelemetryCapture
) -> None:
    slow = {"model.name": "slow"}
    waiting = server.stub.ModelInfer.future(probe_request(np.ones((1, 4)), model="slow"))
    wait_until(lambda: telemetry.total("inferwatch.batch.queue.depth", **slow) == 1)
    assert telemetry.total("inferwatch.server.requests.in_flight", **slow) == 1
    waiting.result(timeout=10)
    assert telemetry.total("inferwatch.server.requests.in_flight", **slow) == 0
    assert telemetry.total("inferwatch.batch.queue.depth", **slow) == 0


def test_rows_with_nan_probabilities_are_no_prediction(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    write_softmax(repository / "softmax" / "1")
    server = serve(repository)
    attributes = {"model.name": "softmax", "model.version": "1"}

    def counts() -> tuple[float, float, float]:
        predictions = "inferwatch.model.predictions"
        return (
            telemetry.total(predictions, label="a", **attributes),
            telemetry.total(predictions, label="b", **attributes),
            telemetry.total("inferwatch.model.confidence", **attributes),
        )

    before = counts()
    rows = np.array([[np.nan, 0.0], [0.0, 5.0], [5.0, 0.0], [np.inf, 0.0]], dtype=np.float32)
    server.stub.ModelInfer(raw_request("softmax", {"x": rows}))

    assert np.subtract(counts(), before).tolist() == [1, 1, 2]  # label a, label b, confidence
