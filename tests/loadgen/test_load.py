"""inferwatch-load against a real model server (gRPC) and a real gateway (REST)."""

import json
from pathlib import Path
from typing import Any

import pytest

from loadgen.cli import main
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

    assert steady["measured_s"] == pytest.approx(2.0)
    assert 30 <= steady["requests"] <= 50
    assert bursty["measured_s"] == pytest.approx(2.0)
    assert bursty["requests"] >= 90  # one second at 20/s and one at 100/s, as scheduled
