"""Dynamic batching observed end to end over gRPC."""

from pathlib import Path

import grpc
import numpy as np
import pytest

from model_server.batcher import DynamicBatcher
from tests.conftest import Serve, ServerThread, wait_until
from tests.model_server.protocol import outputs, probe_request
from tests.model_server.test_models import probe_config, write_probe
from tests.telemetry_capture import TelemetryCapture

INFER_SPAN = "inference.GRPCInferenceService/ModelInfer"
REJECTED = "inferwatch.server.requests.rejected"
ANSWERED = "inferwatch.server.requests"


def batcher_of(server: ServerThread, model: str) -> DynamicBatcher:
    batcher = server.server.repository.resolve(model, "").batcher
    assert batcher is not None
    return batcher


def _mixed_requests(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [np.full((int(rng.integers(1, 5)), 4), float(i), dtype=np.float32) for i in range(count)]


@pytest.mark.parametrize("batching", [True, False])
def test_concurrent_mixed_size_requests_each_get_their_own_rows(
    repository: Path, serve: Serve, batching: bool
) -> None:
    write_probe(
        repository / "probe" / "1",
        probe_config(max_batch_size=16, delay_ms=20.0, batching=batching),
    )
    server = serve(repository)
    requests = _mixed_requests(48)

    futures = [server.stub.ModelInfer.future(probe_request(x)) for x in requests]
    results = [outputs(future.result(timeout=30)) for future in futures]

    batch_sizes = []
    for x, result in zip(requests, results, strict=True):
        np.testing.assert_array_equal(result["y"], x * 2)
        batch_sizes.append(int(result["batch"][0]))
        assert batch_sizes[-1] >= len(x)
        assert batch_sizes[-1] <= 16
    if batching:
        assert max(b - len(x) for b, x in zip(batch_sizes, requests, strict=True)) > 0
    else:
        assert batch_sizes == [len(x) for x in requests]


def test_queue_full_is_resource_exhausted_at_once(repository: Path, serve: Serve) -> None:
    write_probe(
        repository / "slow" / "1", probe_config(max_batch_size=64, delay_ms=1000, queue_size=2)
    )
    server = serve(repository)
    queued = [server.stub.ModelInfer.future(probe_request(np.ones((1, 4)), "slow")) for _ in "ab"]
    wait_until(lambda: batcher_of(server, "slow").queue_depth == 2)

    with pytest.raises(grpc.RpcError) as rejected:
        server.stub.ModelInfer(probe_request(np.ones((1, 4)), "slow"), timeout=0.5)

    assert rejected.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in (rejected.value.details() or "")
    assert [int(outputs(f.result(timeout=10))["batch"][0]) for f in queued] == [2, 2]


def test_request_past_its_deadline_is_not_computed(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    write_probe(repository / "slow" / "1", probe_config(max_batch_size=64, delay_ms=300))
    server = serve(repository)
    before = int(outputs(server.stub.ModelInfer(probe_request(np.ones((1, 4)), "slow")))["seen"][0])
    telemetry.clear()
    model = {"model.name": "slow", "model.version": "1"}
    rejected_before = telemetry.total(REJECTED, reason="deadline", **model)
    answered_before = telemetry.total(
        ANSWERED, status="DEADLINE_EXCEEDED", **{"model.name": "slow"}
    )

    with pytest.raises(grpc.RpcError) as expired:
        server.stub.ModelInfer(probe_request(np.ones((5, 4)), "slow"), timeout=0.05)
    assert expired.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: batcher_of(server, "slow").queue_depth == 0)
    # Counted as what it was, though gRPC ends such a handler by cancelling it.
    wait_until(lambda: telemetry.total(REJECTED, reason="deadline", **model) > rejected_before)
    assert telemetry.total(REJECTED, reason="deadline", **model) == rejected_before + 1
    assert (
        telemetry.total(ANSWERED, status="DEADLINE_EXCEEDED", **{"model.name": "slow"})
        == answered_before + 1
    )
    (span,) = [s for s in telemetry.finished_spans() if s.name == INFER_SPAN]
    assert span.attributes is not None
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]

    after = int(outputs(server.stub.ModelInfer(probe_request(np.ones((2, 4)), "slow")))["seen"][0])
    assert after - before == 2  # the 5 expired rows never reached the model


def test_a_call_cancelled_by_its_client_is_not_a_deadline(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    write_probe(repository / "slow" / "1", probe_config(max_batch_size=64, delay_ms=300))
    server = serve(repository)
    model = {"model.name": "slow", "model.version": "1"}
    rejected_before = telemetry.total(REJECTED, reason="deadline", **model)
    cancelled_before = telemetry.total(ANSWERED, status="CANCELLED", **{"model.name": "slow"})

    call = server.stub.ModelInfer.future(probe_request(np.ones((1, 4)), "slow"), timeout=30)
    wait_until(lambda: batcher_of(server, "slow").queue_depth == 1)
    call.cancel()
    wait_until(
        lambda: (
            telemetry.total(ANSWERED, status="CANCELLED", **{"model.name": "slow"})
            > cancelled_before
        )
    )

    assert batcher_of(server, "slow").queue_depth == 0
    assert telemetry.total(REJECTED, reason="deadline", **model) == rejected_before
