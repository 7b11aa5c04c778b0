"""Start-up with the embedded default model, and graceful shutdown with requests in flight."""

import secrets
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from model_server import cli
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from monitoring.drift import REFERENCE_FILE
from tests.conftest import Serve, wait_until
from tests.model_server.protocol import infer_labels, outputs, pixels_request, probe_request
from tests.model_server.server_process import ServerProcess
from tests.model_server.test_batching_grpc import batcher_of
from tests.model_server.test_models import probe_config, write_probe
from tests.otel.otlp_receiver import OtlpGrpcReceiver
from tests.otel.support import sample_value


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
        assert infer_labels(channel).shape == (3,)
    assert any("serving on the uvloop event loop" in line for line in process.log)
    assert process.terminate() == 0


def test_the_asyncio_event_loop_serves_and_stops_cleanly(
    repository: Path, tmp_path: Path, processes: list[ServerProcess]
) -> None:
    process = ServerProcess(
        tmp_path,
        "--grpc-port",
        "0",
        "--model-repository",
        str(repository),
        env={"MODEL_SERVER_EVENT_LOOP": "asyncio"},
    )
    processes.append(process)
    address = process.wait_ready()

    with grpc.insecure_channel(address) as channel:
        assert infer_labels(channel).shape == (3,)
    assert any("serving on the asyncio event loop" in line for line in process.log)
    assert process.terminate() == 0


def test_an_unknown_event_loop_is_one_clear_error_and_exit_code_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODEL_SERVER_EVENT_LOOP", "trio")

    code = cli.main([])

    stderr = capsys.readouterr().err
    assert code == 2
    assert stderr.startswith("invalid model server settings:")
    assert "event_loop\n  Input should be 'uvloop' or 'asyncio'" in stderr


def test_a_grpc_port_in_use_is_one_clear_line_and_exit_code_2(
    repository: Path, tmp_path: Path, processes: list[ServerProcess]
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = ServerProcess(
            tmp_path, "--grpc-port", str(port), "--model-repository", str(repository)
        )
        processes.append(process)
        code = process.wait(timeout_s=60)

    assert code == 2
    assert [line for line in process.log if "grpc_port" in line] == [
        f"cannot start the model server: grpc_port {port}: cannot listen on 127.0.0.1:{port} "
        "(another process listens there, or host '127.0.0.1' is no address of this machine)\n"
    ]
    assert not any("Traceback" in line for line in process.log)


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
        # Started calls only: one that has arrived but not begun is cancelled by the stop.
        wait_until(
            lambda: (
                sample_value(
                    process.metrics_port, "inferwatch_batch_queue_depth", model_name="slow"
                )
                == 3
            )
        )
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


def test_sigterm_under_load_answers_every_accepted_call_and_flushes_its_spans(
    repository: Path, tmp_path: Path, processes: list[ServerProcess]
) -> None:
    receiver = OtlpGrpcReceiver()
    try:
        process = ServerProcess(
            tmp_path,
            "--grpc-port",
            "0",
            "--model-repository",
            str(repository),
            env={
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
                "OTEL_BSP_SCHEDULE_DELAY": "5000",
            },
        )
        processes.append(process)
        address = process.wait_ready()
        answered: list[str] = []  # trace ids of the calls that got an answer
        failed: list[tuple[grpc.StatusCode, str]] = []  # (status, trace id) of the others
        stop = threading.Event()

        def client(channel: grpc.Channel) -> None:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                trace_id = secrets.token_hex(16)
                metadata = (("traceparent", f"00-{trace_id}-{secrets.token_hex(8)}-01"),)
                try:
                    stub.ModelInfer(
                        pixels_request(np.zeros((1, 64))), metadata=metadata, timeout=10
                    )
                except grpc.RpcError as exc:
                    failed.append((exc.code(), trace_id))
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        return  # the server has stopped taking calls
                    continue
                answered.append(trace_id)

        with grpc.insecure_channel(address) as channel, ThreadPoolExecutor(8) as pool:
            clients = [pool.submit(client, channel) for _ in range(8)]
            wait_until(lambda: len(answered) >= 200)
            signalled = time.monotonic()
            exit_code = process.terminate()
            stopped_after_s = time.monotonic() - signalled
            stop.set()
            for done in clients:
                done.result(timeout=30)

        assert exit_code == 0
        # MODEL_SERVER_SHUTDOWN_GRACE_S, the default; the log says which step took the time.
        assert stopped_after_s < 10, "\n".join(process.log[-20:])
        # Every call the server started (it has a server span) was answered, and the final
        # flush exported those spans (batched for 5 s: most of them left only at shutdown).
        # Calls that reached the server after it stopped taking calls were never started:
        # grpc answers them UNAVAILABLE, or CANCELLED when they had arrived but not yet begun.
        started = {
            span.trace_id.hex()
            for _, span in receiver.received.spans()
            if span.name.endswith("/ModelInfer")
        }
        assert set(answered) <= started
        assert {code for code, _ in failed} <= {
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.CANCELLED,
        }
        assert not started & {trace_id for _, trace_id in failed}
    finally:
        receiver.stop()
