"""From a latency histogram to the exact request's trace: exemplars end to end.

A real model server process exports spans over OTLP to a real receiver, a real Prometheus
scrapes its /metrics with exemplar storage on, and the exemplars Prometheus stores point at
the server spans of the requests that were sent.
"""

import time
import urllib.parse
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from tests.conftest import StartPrometheus
from tests.model_server.protocol import pixels_request
from tests.model_server.server_process import ServerProcess
from tests.otel.otlp_receiver import OtlpGrpcReceiver

INFER_SPAN = "inference.GRPCInferenceService/ModelInfer"


def _exemplars(answer: Any) -> list[dict[str, str]]:
    if not answer or answer.get("status") != "success":
        return []
    return [exemplar["labels"] for series in answer["data"] for exemplar in series["exemplars"]]


def test_prometheus_exemplars_are_the_trace_ids_of_our_requests(
    repository: Path, tmp_path: Path, start_prometheus: StartPrometheus
) -> None:
    receiver = OtlpGrpcReceiver()
    process = ServerProcess(
        tmp_path,
        "--grpc-port", "0", "--model-repository", str(repository),
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"},
    )  # fmt: skip
    try:
        address = process.wait_ready()
        prometheus = start_prometheus(process.metrics_port)
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for rows in (1, 8, 64) * 5:
                stub.ModelInfer(pixels_request(np.zeros((rows, 64))))

        def sent_spans() -> dict[str, str]:
            return {
                span.trace_id.hex(): span.span_id.hex()
                for _, span in receiver.received.spans()
                if span.name == INFER_SPAN
            }

        receiver.received.wait_for(lambda _: len(sent_spans()) == 15, timeout_s=20)
        now = time.time()
        query = urllib.parse.urlencode(
            {
                "query": "inferwatch_server_request_duration_seconds_bucket",
                "start": now - 600,
                "end": now + 600,
            }
        )
        answer = prometheus.poll(
            f"/api/v1/query_exemplars?{query}", lambda a: bool(_exemplars(a)), timeout_s=30
        )
    finally:
        process.kill()
        receiver.stop()

    spans = sent_spans()
    exemplars = _exemplars(answer)
    assert exemplars
    for labels in exemplars:
        assert labels["trace_id"] in spans
        assert labels["span_id"] == spans[labels["trace_id"]]
