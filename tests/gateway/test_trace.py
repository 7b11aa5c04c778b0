"""One trace from the HTTP client through the gateway to the model server, across processes.

The model server is a real child process exporting its spans over OTLP to a real receiver;
the gateway runs in the test process (its spans reach the `telemetry` fixture). Real HTTP from
the client to the gateway, real gRPC from the gateway to the model server.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tests.conftest import wait_until
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.model_server.server_process import ServerProcess
from tests.otel.otlp_receiver import OtlpGrpcReceiver
from tests.telemetry_capture import TelemetryCapture

TRACE_ID = "5b8efff798038103d269b633813fc60c"
CALLER_SPAN_ID = "eee19b7ec3c1b174"
MODEL_INFER = "inference.GRPCInferenceService/ModelInfer"


@pytest.fixture
def receiver() -> Iterator[OtlpGrpcReceiver]:
    receiver = OtlpGrpcReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def model_server(
    repository: Path, tmp_path: Path, receiver: OtlpGrpcReceiver
) -> Iterator[ServerProcess]:
    process = ServerProcess(
        tmp_path,
        "--grpc-port", "0", "--model-repository", str(repository),
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        },
    )  # fmt: skip
    process.wait_ready()
    yield process
    process.terminate()


def _hex(span_id: int) -> str:
    return f"{span_id:016x}"


def test_one_trace_id_from_the_http_client_to_the_model(
    model_server: ServerProcess,
    receiver: OtlpGrpcReceiver,
    start_gateway: StartGateway,
    telemetry: TelemetryCapture,
) -> None:
    gateway = start_gateway([f"127.0.0.1:{model_server.port}"])
    with client(gateway) as http:
        answer = http.post(
            "/v2/models/digits/infer",
            json=infer_body(np.zeros((1, 64))),
            headers={"traceparent": f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"},
        )
    assert answer.status_code == 200
    assert answer.headers["x-trace-id"] == TRACE_ID

    def gateway_span(kind: SpanKind) -> ReadableSpan | None:
        found = [s for s in telemetry.finished_spans() if s.kind is kind]
        return found[0] if found else None

    wait_until(lambda: gateway_span(SpanKind.SERVER) is not None)
    http_span, grpc_span = gateway_span(SpanKind.SERVER), gateway_span(SpanKind.CLIENT)
    assert http_span is not None
    assert grpc_span is not None
    assert http_span.name == "POST /v2/models/{model_name}/infer"
    assert grpc_span.name == MODEL_INFER
    for span in (http_span, grpc_span):
        assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert http_span.parent is not None
    assert http_span.parent.is_remote
    assert _hex(http_span.parent.span_id) == CALLER_SPAN_ID
    assert grpc_span.parent is not None
    assert grpc_span.parent.span_id == http_span.context.span_id

    def model_server_spans() -> list[OtlpSpan]:
        return [span for _, span in receiver.received.spans() if span.trace_id.hex() == TRACE_ID]

    receiver.received.wait_for(
        lambda _: {"infer.forward", MODEL_INFER} <= {s.name for s in model_server_spans()}
    )
    spans = model_server_spans()
    [server_span] = [span for span in spans if span.name == MODEL_INFER]
    assert server_span.kind == OtlpSpan.SpanKind.SPAN_KIND_SERVER
    assert server_span.parent_span_id.hex() == _hex(grpc_span.context.span_id)
    assert {span.name for span in spans} >= {
        "infer.decode",
        "infer.queue",
        "infer.forward",
        "infer.encode",
    }
    services = {
        resource["service.name"]
        for resource, span in receiver.received.spans()
        if span.trace_id.hex() == TRACE_ID
    }
    assert services == {"inferwatch-model-server"}
