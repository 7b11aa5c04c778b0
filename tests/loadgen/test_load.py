"""inferwatch-load against a real model server (gRPC) and a real gateway (REST)."""

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest

from loadgen.cli import main
from model_server.proto import grpc_service_pb2 as pb
from tests.conftest import Serve, ServerThread
from tests.gateway.servers import GatewayThread, gateway_settings


def _load(tmp_path: Path, target: str, *argv: str) -> dict[str, Any]:
    out = tmp_path / "summary.json"
    assert main(["--target", target, *argv, "--json", str(out)]) == 0
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


@pytest.fixture
def faulty(repository: Path, serve: Serve) -> ServerThread:
    return serve(repository, fault_injection=True)


@pytest.fixture
def gateway(faulty: ServerThread) -> Any:
    gateway = GatewayThread(gateway_settings([faulty.address]))
    yield gateway
    gateway.stop()


def test_grpc_closed_loop_with_malformed_and_failing_requests(
    faulty: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = _load(
        tmp_path,
        f"grpc://{faulty.address}",
        *("--concurrency", "4", "--requests", "300"),
        *("--malformed-ratio", "0.2", "--fault-error-ratio", "0.1"),
    )

    assert result["requests"] == 300
    kinds = result["kinds"]
    assert set(kinds) == {"clean", "malformed", "fault_error"}
    assert kinds["malformed"]["statuses"] == {"INVALID_ARGUMENT": kinds["malformed"]["sent"]}
    assert kinds["fault_error"]["statuses"] == {"INTERNAL": kinds["fault_error"]["sent"]}
    assert kinds["clean"]["statuses"] == {"OK": kinds["clean"]["sent"]}
    assert 30 <= kinds["malformed"]["sent"] <= 90  # 20% of 300, drawn
    assert all(kind["unexpected"] == 0 for kind in kinds.values())
    assert result["errors"] == kinds["malformed"]["sent"] + kinds["fault_error"]["sent"]
    assert result["accuracy"] > 0.9
    assert set(result["latency_ms"]) == {"p50", "p90", "p99", "p99.9", "max", "mean"}
    assert "holds 252 bytes" in result["error_details"]["INVALID_ARGUMENT"]
    table = capsys.readouterr().out
    assert "malformed" in table
    assert "INTERNAL: injected fault (parameters.inferwatch_fault_error is true)" in table


def test_faults_are_refused_by_a_server_without_fault_injection(
    repository: Path, serve: Serve, tmp_path: Path
) -> None:
    server = serve(repository)

    result = _load(tmp_path, f"grpc://{server.address}", "--requests", "40", "--fault-delay", "5")

    assert result["kinds"]["fault_delay"] == {
        "sent": 40,
        "statuses": {"INVALID_ARGUMENT": 40},
        "unexpected": 40,
    }
    assert "MODEL_SERVER_FAULT_INJECTION" in result["error_details"]["INVALID_ARGUMENT"]


def test_rest_open_loop_with_drift_and_injected_latency(
    gateway: GatewayThread, tmp_path: Path
) -> None:
    result = _load(
        tmp_path,
        gateway.url,
        *("--rate", "100", "--requests", "60", "--drift", "invert"),
        *("--fault-delay", "50", "--fault-delay-ratio", "0.5"),
    )

    assert result["loop"] == "open"
    assert result["requests"] == 60
    assert set(result["kinds"]) == {"clean", "fault_delay"}
    assert result["statuses"] == {"OK": 60}
    assert result["latency_ms"]["p90"] >= 50
    assert result["accuracy"] < 0.5  # inverted digits fool the model


def test_rest_errors_keep_their_http_status(gateway: GatewayThread, tmp_path: Path) -> None:
    result = _load(
        tmp_path,
        gateway.url,
        *("--requests", "40", "--malformed-ratio", "0.5", "--fault-error-ratio", "0.5"),
    )

    kinds = result["kinds"]
    assert kinds["malformed"]["statuses"] == {"HTTP 400": kinds["malformed"]["sent"]}
    assert kinds["fault_error"]["statuses"] == {"HTTP 500": kinds["fault_error"]["sent"]}
    assert "inputs[0].data: holds 63 values" in result["error_details"]["HTTP 400"]


def test_duration_with_warmup_and_bursts(faulty: ServerThread, tmp_path: Path) -> None:
    steady = _load(tmp_path, f"grpc://{faulty.address}", "--rate", "20", "--duration", "2")
    bursty = _load(
        tmp_path,
        f"grpc://{faulty.address}",
        *("--rate", "20", "--duration", "2", "--warmup", "0.5", "--burst", "5:1:2"),
    )

    # The open loop's schedule says how many requests fall due in the measured window.
    assert 40 <= steady["requests"] <= 41  # 2 s at 20/s
    # 0.5 s at 20/s, the burst's second at 100/s, 0.5 s at 20/s; the warmup's 0.5 s at 20/s
    # would add 10.
    assert 115 <= bursty["requests"] <= 122  # 116 to 121, by rounding
    assert bursty["throughput_rps"] == pytest.approx(bursty["requests"] / 2.0)


def test_a_closed_loop_burst_adds_clients(faulty: ServerThread, tmp_path: Path) -> None:
    # Each call waits 100 ms in the server, so a client makes about 10 calls a second.
    paced = ("--concurrency", "2", "--duration", "2", "--fault-delay", "100")
    steady = _load(tmp_path, f"grpc://{faulty.address}", *paced)
    bursty = _load(tmp_path, f"grpc://{faulty.address}", *paced, "--burst", "4:1:2")

    # 2 clients for 2 s: about 40 calls; the burst's second has 8 clients: about 100.
    assert steady["requests"] <= 44
    assert bursty["requests"] >= 1.8 * steady["requests"]


def test_answers_after_the_window_are_recorded(faulty: ServerThread, tmp_path: Path) -> None:
    target = f"grpc://{faulty.address}"
    # Each client's first answer comes 1 s in, after the 0.5 s window.
    slow = _load(
        tmp_path, target, "--concurrency", "2", "--duration", "0.5", "--fault-delay", "1000"
    )
    # Every request times out; those due in the window's last 0.3 s time out after it.
    hung = _load(
        tmp_path,
        target,
        *("--rate", "10", "--duration", "1", "--timeout", "0.3", "--fault-delay", "1000"),
    )

    assert slow["statuses"] == {"OK": 2}
    assert slow["latency_ms"]["p50"] >= 1000
    assert slow["drain_s"] >= 0.4
    assert set(hung["statuses"]) == {"DEADLINE_EXCEEDED"}
    assert 10 <= hung["requests"] <= 11  # 1 s at 10/s
    assert hung["throughput_rps"] == pytest.approx(hung["requests"] / 1.0)


def test_an_api_key_from_the_environment_opens_a_keyed_gateway(
    faulty: ServerThread,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = "load-key-4711"
    monkeypatch.setenv("LOAD_API_KEY", key)
    gateway = GatewayThread(gateway_settings([faulty.address], api_keys=[key]))
    try:
        keyed = _load(
            tmp_path,
            gateway.url,
            *("--requests", "20", "--api-key-env", "LOAD_API_KEY"),
            *("--label-ratio", "1", "--label-delay", "0"),
        )
        without = main(["--target", gateway.url, "--requests", "5", "--wait-ready", "0"])
    finally:
        gateway.stop()

    assert keyed["statuses"] == {"OK": 20}
    assert keyed["labels"]["results"] == {"ok": 20}  # the feedback route needs the key too
    assert without == 1
    out = capsys.readouterr()
    assert "not ready after 0 s: HTTP 401 missing API key" in out.out
    assert key not in out.out + out.err + (tmp_path / "summary.json").read_text(encoding="utf-8")


def test_the_api_key_goes_as_metadata_with_every_grpc_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gRPC server that records each call's authorization metadata (the model server
    takes no key, and shows none it got)."""
    seen: list[tuple[str, str | None]] = []

    def answering(method: str, answer: bytes) -> grpc.RpcMethodHandler:
        def handle(_: bytes, context: grpc.ServicerContext) -> bytes:
            seen.append((method, dict(context.invocation_metadata()).get("authorization")))
            return answer

        return grpc.unary_unary_rpc_method_handler(handle)

    server = grpc.server(ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "inference.GRPCInferenceService",
                {
                    "ModelReady": answering(
                        "ModelReady", pb.ModelReadyResponse(ready=True).SerializeToString()
                    ),
                    "ModelInfer": answering(
                        "ModelInfer", pb.ModelInferResponse().SerializeToString()
                    ),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("LOAD_API_KEY", "grpc-key")
    try:
        _load(
            tmp_path, f"grpc://127.0.0.1:{port}", "--requests", "3", "--api-key-env", "LOAD_API_KEY"
        )
    finally:
        server.stop(None)

    assert seen == [("ModelReady", "Bearer grpc-key")] + [("ModelInfer", "Bearer grpc-key")] * 3
