"""The gateway's spans and metrics: semantic-convention names, bounded attributes, statuses."""

from pathlib import Path

import numpy as np
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from tests.conftest import Serve, wait_until
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.telemetry_capture import TelemetryCapture

MODEL_INFER = "inference.GRPCInferenceService/ModelInfer"


def _gateway_spans(telemetry: TelemetryCapture) -> list[ReadableSpan]:
    return [
        span
        for span in telemetry.finished_spans()
        if span.instrumentation_scope is not None and span.instrumentation_scope.name == "gateway"
    ]


def test_spans_follow_the_conventions_and_name_no_unknown_model(
    repository: Path, serve: Serve, start_gateway: StartGateway, telemetry: TelemetryCapture
) -> None:
    server = serve(repository)
    gateway = start_gateway([server.address])
    body = infer_body(np.zeros((1, 64)))
    with client(gateway) as http:
        http.post("/v2/models/digits/infer", json=body)
        http.post("/v2/models/invented-4711/infer", json=body)
    wait_until(
        lambda: len([s for s in _gateway_spans(telemetry) if s.kind is SpanKind.SERVER]) == 2
    )
    spans = _gateway_spans(telemetry)
    servers = [span for span in spans if span.kind is SpanKind.SERVER]
    clients = [span for span in spans if span.kind is SpanKind.CLIENT]
    assert [span.name for span in servers] == ["POST /v2/models/{model_name}/infer"] * 2
    assert [(span.attributes or {})["http.response.status_code"] for span in servers] == [200, 404]
    assert [span.status.status_code for span in servers] == [StatusCode.UNSET] * 2
    for span in servers:
        assert (span.attributes or {})["http.route"] == "/v2/models/{model_name}/infer"
        assert not {"url.path", "url.full", "client.address"} & set(span.attributes or {})
    ok, missing = clients
    assert ok.name == missing.name == MODEL_INFER
    assert ok.parent is not None
    assert ok.parent.span_id == servers[0].context.span_id
    assert dict(ok.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "inference.GRPCInferenceService",
        "rpc.method": "ModelInfer",
        "rpc.grpc.status_code": 0,
        "server.address": "127.0.0.1",
        "server.port": int(server.address.rsplit(":", 1)[1]),
        "model.name": "digits",
        "model.version": "1",
    }
    assert ok.status.status_code is StatusCode.UNSET
    assert (missing.attributes or {})["model.name"] == "_unknown"
    assert "model.version" not in (missing.attributes or {})
    assert (missing.attributes or {})["rpc.grpc.status_code"] == 5  # NOT_FOUND
    assert missing.status.status_code is StatusCode.ERROR


def test_metrics_carry_templates_backends_and_bounded_model_names(
    repository: Path, serve: Serve, start_gateway: StartGateway, telemetry: TelemetryCapture
) -> None:
    server = serve(repository)
    gateway = start_gateway([server.address])
    body = infer_body(np.zeros((1, 64)))
    routed = "inferwatch.gateway.routed"
    before = {
        "ok": telemetry.total(routed, **{"model.name": "digits", "status": "OK"}),
        "unknown": telemetry.total(routed, **{"model.name": "_unknown", "status": "NOT_FOUND"}),
        "upstream": telemetry.total(
            "inferwatch.gateway.upstream.duration", backend=server.address, status="NOT_FOUND"
        ),
    }
    with client(gateway) as http:
        http.post("/v2/models/digits/infer", json=body)
        http.post("/v2/models/invented-4712/infer", json=body)
        http.get("/not/a/route")
    assert telemetry.total(routed, **{"model.name": "digits", "status": "OK"}) - before["ok"] == 1
    assert (
        telemetry.total(routed, **{"model.name": "_unknown", "status": "NOT_FOUND"})
        - before["unknown"]
        == 1
    )
    upstream = telemetry.total(
        "inferwatch.gateway.upstream.duration", backend=server.address, status="NOT_FOUND"
    )
    assert upstream - before["upstream"] == 1
    wait_until(
        lambda: any(
            (point.attributes or {}).get("http.response.status_code") == 404
            and "http.route" not in (point.attributes or {})
            for point in telemetry.points("http.server.request.duration")
        )
    )
    values = {
        str(value)
        for point in telemetry.points("http.server.request.duration")
        for value in (point.attributes or {}).values()
    }
    assert not {value for value in values if "invented" in value or "not/a" in value}


def test_aliases_of_a_version_create_no_series(
    repository: Path, serve: Serve, start_gateway: StartGateway, telemetry: TelemetryCapture
) -> None:
    gateway = start_gateway([serve(repository).address])
    with client(gateway) as http:
        assert http.get("/v2/models/digits/versions/0001/ready").status_code == 200
        answer = http.post(
            "/v2/models/digits/versions/0001/infer", json=infer_body(np.zeros((1, 64)))
        )
    assert answer.headers["x-model-version"] == "1"
    versions = {
        (point.attributes or {}).get("model.version")
        for point in telemetry.points("inferwatch.gateway.routed")
    }
    assert "0001" not in versions
    assert "1" in versions
