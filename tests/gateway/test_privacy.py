"""A canary sent inside request payloads never reaches a log line, a span or a metric.

The model server and the gateway run in this process, so every log record (captured at DEBUG),
every finished span and every metric point of both is inspected after valid and malformed
requests, over gRPC and REST, carrying the canary in tensor values and request ids.
"""

import logging
from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.conftest import Serve
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.model_server.protocol import pixels_request
from tests.telemetry_capture import TelemetryCapture

CANARY_VALUE = 271828.1828
CANARY_TEXT = "canary-5e1f0c"


def _everything(telemetry: TelemetryCapture, caplog: pytest.LogCaptureFixture) -> str:
    texts = [record.getMessage() + repr(record.__dict__) for record in caplog.records]
    for span in telemetry.finished_spans():
        texts.append(repr(dict(span.attributes or {})) + span.name)
        texts += [repr(event.attributes) for event in span.events]
        texts += [repr(link.attributes) for link in span.links]
        texts.append(repr(span.status.description))
    data = telemetry.metrics.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    texts.append(repr(point.attributes))
                    exemplars = getattr(point, "exemplars", None) or []
                    texts += [repr(exemplar.filtered_attributes) for exemplar in exemplars]
    return "\n".join(texts)


def test_a_canary_in_payloads_never_reaches_telemetry(
    repository: Path,
    serve: Serve,
    start_gateway: StartGateway,
    telemetry: TelemetryCapture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(repository)
    gateway = start_gateway([server.address], access_log=True)
    pixels = np.full((1, 64), CANARY_VALUE)
    with caplog.at_level(logging.DEBUG):
        server.stub.ModelInfer(pixels_request(pixels, request_id=CANARY_TEXT))
        with pytest.raises(grpc.RpcError):  # one value short: refused, naming the field
            server.stub.ModelInfer(pixels_request(pixels[:, :63], request_id=CANARY_TEXT))
        with client(gateway) as http:
            ok = http.post("/v2/models/digits/infer", json=infer_body(pixels, id=CANARY_TEXT))
            bad_body = infer_body(pixels, id=CANARY_TEXT)
            bad_body["inputs"][0]["data"][5] = CANARY_TEXT  # type: ignore[index]
            bad = http.post("/v2/models/digits/infer", json=bad_body)

    assert ok.status_code == 200
    assert bad.status_code == 400
    assert CANARY_TEXT in bad.json()["error"]  # the caller is told which value was wrong
    everything = _everything(telemetry, caplog)
    assert "271828" not in everything
    assert CANARY_TEXT not in everything
    assert telemetry.finished_spans()  # the inspection saw spans at all
