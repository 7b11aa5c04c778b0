"""A refused, blackholed or slow OTLP endpoint never fails an inference, and the losses show.

Each case runs a real model server process exporting to a real endpoint of that kind, with
small span queues so that a slow endpoint makes them overflow.
"""

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from tests.model_server.protocol import pixels_request, probe_request
from tests.model_server.server_process import ServerProcess
from tests.model_server.test_models import probe_config, write_probe
from tests.otel.otlp_receiver import OtlpGrpcReceiver
from tests.otel.support import Blackhole, free_port, sample_value

REQUESTS = 416
IN_FLIGHT = 32
"""Calls sent at once: well below the server's MAX_CONCURRENT_RPCS (128), which would refuse the
rest with RESOURCE_EXHAUSTED, a limit this test is not about."""


@pytest.fixture(params=["refused", "blackholed", "slow"])
def endpoint(request: pytest.FixtureRequest) -> Iterator[str]:
    stop: Callable[[], None] = lambda: None  # noqa: E731 (nothing to stop for "refused")
    if request.param == "refused":
        url = f"http://127.0.0.1:{free_port()}"
    elif request.param == "blackholed":
        blackhole = Blackhole()
        url, stop = blackhole.endpoint, blackhole.stop
    else:
        receiver = OtlpGrpcReceiver(delay_s=0.5)
        url, stop = receiver.endpoint, receiver.stop
    yield url
    stop()


def test_inference_keeps_working_and_losses_are_counted(
    endpoint: str, repository: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    process = ServerProcess(
        tmp_path,
        "--grpc-port", "0", "--model-repository", str(repository),
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2",
            "OTEL_BSP_MAX_QUEUE_SIZE": "64",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "16",
            "OTEL_BSP_SCHEDULE_DELAY": "50",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
        },
    )  # fmt: skip
    try:
        with grpc.insecure_channel(process.wait_ready()) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            row = pixels_request(np.zeros((1, 64)))
            answered = []
            for _ in range(REQUESTS // IN_FLIGHT):
                futures = [stub.ModelInfer.future(row) for _ in range(IN_FLIGHT)]
                answered += [future.result(timeout=30) for future in futures]
        assert len(answered) == REQUESTS

        port = process.metrics_port
        lost = "inferwatch_telemetry_dropped_total"
        failed = "inferwatch_telemetry_export_failures_total"
        if request.node.callspec.params["endpoint"] == "slow":
            assert sample_value(port, lost, signal="traces", reason="queue_full") > 0
        else:
            deadline = time.monotonic() + 20
            while sample_value(port, failed, signal="traces") == 0:
                assert time.monotonic() < deadline, "no export failure counted"
                time.sleep(0.2)  # failures are counted when an export attempt gives up
            failures = sample_value(port, failed, signal="traces")
            # The spans of every failed export (at least one each) are lost, and counted.
            assert sample_value(port, lost, signal="traces", reason="export_failed") >= failures
        started = time.monotonic()
        assert process.terminate(timeout_s=30) == 0
        assert time.monotonic() - started < 20  # shutdown is bounded despite the endpoint
    finally:
        process.kill()


def test_log_lines_of_a_failing_batch_carry_its_trace(repository: Path, tmp_path: Path) -> None:
    write_probe(repository / "probe" / "1", probe_config())
    process = ServerProcess(tmp_path, "--grpc-port", "0", "--model-repository", str(repository))
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    try:
        with grpc.insecure_channel(process.wait_ready()) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            with pytest.raises(grpc.RpcError):
                stub.ModelInfer(
                    probe_request(np.full((1, 4), -5000.0)),
                    metadata=(("traceparent", f"00-{trace_id}-b7ad6b7169203331-01"),),
                )
        assert process.terminate() == 0
    finally:
        process.kill()
    records = [json.loads(line) for line in process.log if line.startswith("{")]
    failures = [r for r in records if "forward pass failed" in r["message"]]
    assert len(failures) == 1
    assert failures[0]["level"] == "ERROR"
    assert failures[0]["trace_id"] == trace_id
    assert len(failures[0]["span_id"]) == 16
    assert "asked to fail" in failures[0]["exception"]
