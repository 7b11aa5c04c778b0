"""`python -m gateway` as a real process: settings, JSON logs with trace ids, /metrics, SIGTERM."""

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import entry_points
from pathlib import Path

import httpx

from tests.conftest import Serve, wait_until
from tests.gateway.servers import GatewayProcess
from tests.model_server.test_models import probe_config, write_probe
from tests.otel.support import sample_value
from tests.telemetry_capture import TelemetryCapture

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SLOW = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0] * 4}]}


def test_serves_logs_with_trace_ids_and_drains_on_sigterm(
    repository: Path, serve: Serve, tmp_path: Path, telemetry: TelemetryCapture
) -> None:
    write_probe(repository / "slow" / "1", probe_config(delay_ms=300))
    server = serve(repository)
    process = GatewayProcess(
        tmp_path, "--backend", server.address, env={"GATEWAY_ACCESS_LOG": "true"}
    )
    try:
        url = process.wait_ready()
        with httpx.Client(base_url=url, timeout=30) as http, ThreadPoolExecutor(1) as pool:
            traced = http.get(
                "/v2/health/live", headers={"traceparent": f"00-{TRACE_ID}-b7ad6b7169203331-01"}
            )
            in_flight = pool.submit(http.post, "/v2/models/slow/infer", json=SLOW)
            wait_until(
                lambda: (
                    telemetry.total(
                        "inferwatch.server.requests.in_flight", **{"model.name": "slow"}
                    )
                    == 1
                )
            )
            requests = sample_value(
                process.metrics_port,
                "http_server_request_duration_seconds_count",
                http_route="/v2/health/live",
            )
            code = process.terminate()
            assert in_flight.result().status_code == 200
    finally:
        process.kill()
    assert traced.headers["x-trace-id"] == TRACE_ID
    assert requests == 1
    assert code == 0
    records = [json.loads(line) for line in process.log if line.startswith("{")]
    [access] = [r for r in records if r["message"].startswith("GET /v2/health/live 200")]
    assert (access["trace_id"], access["service.name"]) == (TRACE_ID, "inferwatch-gateway")
    assert records[-1]["message"] == "gateway stopped"
    assert [r for r in records if r["level"] in ("ERROR", "CRITICAL")] == []
    # Long-lived objects are frozen out of the garbage collector before serving.
    assert any("exempted from garbage collection" in r["message"] for r in records)


def test_invalid_settings_exit_2_naming_the_setting(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=tmp_path,
        env={**os.environ, "GATEWAY_TRAFFIC_SPLIT": '{"digits": {"1": 0}}'},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("invalid gateway settings:")
    assert "traffic_split.digits.1" in run.stderr


def test_the_console_script() -> None:
    [script] = entry_points(group="console_scripts", name="inferwatch-gateway")
    assert script.value == "gateway.cli:main"
