"""Traces, metrics and logs leave a real model server process over OTLP/gRPC, correlated."""

from pathlib import Path

import grpc
import numpy as np
import pytest

from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from tests.model_server.protocol import pixels_request, probe_request
from tests.model_server.server_process import ServerProcess
from tests.model_server.test_models import probe_config, write_probe
from tests.otel.otlp_receiver import OtlpGrpcReceiver

TRACE_ID = "5b8efff798038103d269b633813fc60c"
TRACEPARENT = (("traceparent", f"00-{TRACE_ID}-eee19b7ec3c1b174-01"),)


def test_all_three_signals_arrive_with_the_resource_and_one_trace_id(
    repository: Path, tmp_path: Path
) -> None:
    write_probe(repository / "probe" / "1", probe_config())
    receiver = OtlpGrpcReceiver()
    process = ServerProcess(
        tmp_path,
        "--grpc-port", "0", "--model-repository", str(repository),
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_BLRP_SCHEDULE_DELAY": "100",
            "OTEL_METRIC_EXPORT_INTERVAL": "300",
        },
    )  # fmt: skip
    try:
        with grpc.insecure_channel(process.wait_ready()) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            stub.ModelInfer(pixels_request(np.zeros((2, 64))), metadata=TRACEPARENT)
            with pytest.raises(grpc.RpcError):  # the probe raises: an ERROR log inside the trace
                stub.ModelInfer(probe_request(np.full((1, 4), -5000.0)), metadata=TRACEPARENT)

        def ours(record_trace_id: bytes) -> bool:
            return record_trace_id.hex() == TRACE_ID

        receiver.received.wait_for(
            lambda r: (
                any(ours(span.trace_id) for _, span in r.spans())
                and any(ours(log.trace_id) for _, log in r.log_records())
                and any(m.name == "inferwatch.server.request.duration" for _, m in r.metrics())
            ),
            timeout_s=20,
        )
    finally:
        process.kill()
        receiver.stop()

    received = receiver.received
    for resource, _ in received.spans() + received.log_records() + received.metrics():
        assert resource["service.name"] == "inferwatch-model-server"
        assert resource["deployment.environment.name"] == "development"
        assert resource["service.instance.id"]
    span_names = {span.name for _, span in received.spans() if ours(span.trace_id)}
    assert {"inference.GRPCInferenceService/ModelInfer", "infer.forward"} <= span_names
    (failure,) = [log for _, log in received.log_records() if ours(log.trace_id)]
    assert "forward pass failed" in failure.body.string_value
    assert failure.severity_text == "ERROR"
    span_ids = {span.span_id for _, span in received.spans()}
    assert failure.span_id in span_ids
    exemplar_traces = {
        exemplar.trace_id.hex()
        for _, metric in received.metrics()
        if metric.name == "inferwatch.server.request.duration"
        for point in metric.histogram.data_points
        for exemplar in point.exemplars
    }
    assert TRACE_ID in exemplar_traces
