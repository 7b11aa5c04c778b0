"""Start-up with the embedded default model, and graceful shutdown with requests in flight."""

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from model_server import digits
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from monitoring.drift import REFERENCE_FILE
from tests.conftest import Serve, wait_until
from tests.model_server.protocol import outputs, pixels_request, probe_request
from tests.model_server.server_process import ServerProcess
from tests.model_server.test_batching_grpc import batcher_of
from tests.model_server.test_models import probe_config, write_probe


@pytest.fixture
def processes() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for process in started:
        process.kill()


def test_no_arguments_serves_models_and_creates_digits(
    tmp_path: Path, processes: list[ServerProcess]
) -> None:
    process = ServerProcess(tmp_path, env={"MODEL_SERVER_GRPC_PORT": "0"})
    processes.append(process)
    address = process.wait_ready()

    version_dir = tmp_path / "models" / "digits" / "1"
    assert {p.name for p in version_dir.iterdir()} == {
        "model.pt",
        "config.json",
        REFERENCE_FILE,
    }
    assert any("test accuracy 0.9" in line for line in process.log)
    with grpc.insecure_channel(address) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            pixels_request(digits.load_split().x_test[:4])
        )
    assert outputs(response)["label"].shape == (4,)
    assert process.terminate() == 0


def test_sigterm_answers_requests_in_flight_then_exits_zero(
    repository: Path, tmp_path: Path, processes: list[ServerProcess]
) -> None:
    write_probe(repository / "slow" / "1", probe_config(max_batch_size=64, delay_ms=1500))
    process = ServerProcess(tmp_path, "--grpc-port", "0", "--model-repository", str(repository))
    processes.append(process)
    address = process.wait_ready()

    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        in_flight = [stub.ModelInfer.future(probe_request(np.ones((1, 4)), "slow")) for _ in "abc"]
        # Calls on one channel arrive in order: once this answers, the three are queued.
        assert stub.ModelReady(pb.ModelReadyRequest(name="slow")).ready
        exit_code = process.terminate()
        results = [outputs(future.result(timeout=10)) for future in in_flight]

    assert exit_code == 0
    assert [int(result["batch"][0]) for result in results] == [3, 3, 3]
    assert any("draining" in line for line in process.log)


def test_stop_finishes_in_flight_requests_and_refuses_new_ones(
    repository: Path, serve: Serve
) -> None:
    write_probe(repository / "slow" / "1", probe_config(max_batch_size=64, delay_ms=1000))
    server = serve(repository)
    in_flight = [
        server.stub.ModelInfer.future(probe_request(np.full((1, 4), i), "slow")) for i in range(3)
    ]
    wait_until(lambda: batcher_of(server, "slow").queue_depth == 3)

    server.stop()

    for i, future in enumerate(in_flight):
        np.testing.assert_array_equal(
            outputs(future.result(timeout=10))["y"], np.full((1, 4), 2 * i)
        )
    with grpc.insecure_channel(server.address) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.GRPCInferenceServiceStub(channel).ServerReady(pb.ServerReadyRequest(), timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
