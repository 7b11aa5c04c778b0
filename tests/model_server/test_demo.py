"""`make run` (model_server.demo) as a real process: it starts everything, says where to look,
sends true labels (wrong ones on purpose with `--wrong-labels`, which the accuracy alert sees),
and stops every child it started, on `--duration` or on Ctrl-C."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_until
from tests.otel.support import free_port

_STARTED = re.compile(r"started (\S+) \(pid (\d+)\)")
_TRACE = re.compile(r"its logs:   grep ([0-9a-f]{32}) (\S+)")


class Demo:
    """`python -m model_server.demo` on free ports in `tmp_path`, its output kept in `lines`."""

    def __init__(
        self, tmp_path: Path, repository: Path, *args: str, gateway_port: int | None = None
    ) -> None:
        self.ports = {
            name: free_port()
            for name in ("grpc", "gateway", "server_metrics", "gateway_metrics", "prom", "am")
        }
        if gateway_port is not None:
            self.ports["gateway"] = gateway_port
        self.run_dir = tmp_path / "run"
        self.lines: list[str] = []
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "MODEL_SERVER_GRPC_PORT": str(self.ports["grpc"]),
            "MODEL_SERVER_METRICS_PORT": str(self.ports["server_metrics"]),
            "MODEL_SERVER_MODEL_REPOSITORY": str(repository),
            "GATEWAY_PORT": str(self.ports["gateway"]),
            "GATEWAY_METRICS_PORT": str(self.ports["gateway_metrics"]),
        }
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "model_server.demo", "--run-dir", str(self.run_dir)),
                *("--prometheus-port", str(self.ports["prom"])),
                *("--alertmanager-port", str(self.ports["am"])),
                *args,
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def children(self) -> dict[str, int]:
        """Name -> pid of every child the demo said it started."""
        return {m.group(1): int(m.group(2)) for m in _STARTED.finditer(self.output)}

    def wait(self, timeout_s: float) -> int:
        code = self.process.wait(timeout_s)
        self._reader.join(10)
        return code

    def kill(self) -> None:
        """Teardown: the demo and anything it left behind."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for pid in self.children().values():
            if psutil.pid_exists(pid):
                psutil.Process(pid).kill()


def _assert_no_child_left(demo: Demo) -> None:
    for name, pid in demo.children().items():
        assert not psutil.pid_exists(pid), f"{name} (pid {pid}) still runs"


def _assert_everything_stopped(demo: Demo, names: set[str]) -> None:
    assert set(demo.children()) == names
    _assert_no_child_left(demo)
    for name in names:
        assert f"{name} stopped (exit code 0)" in demo.output


def test_runs_for_a_duration_and_says_where_to_look(tmp_path: Path, repository: Path) -> None:
    demo = Demo(
        tmp_path,
        repository,
        *("--duration", "6", "--no-monitoring", "--rate", "20"),
        *("--label-ratio", "0.5", "--label-delay", "1"),
    )
    try:
        assert demo.wait(180) == 0, demo.output
    finally:
        demo.kill()

    output = demo.output
    assert f"http://127.0.0.1:{demo.ports['server_metrics']}/metrics" in output
    assert f"http://127.0.0.1:{demo.ports['gateway_metrics']}/metrics" in output
    # Each path replays half of the test split; on either half the model is right 0.9+ of the time.
    high = r"(?:0\.9\d+|1\.000)"
    assert re.search(rf"gRPC\s+\d+ req/s  p50 .* accuracy {high}  errors 0", output), output
    assert re.search(rf"gateway\s+\d+ req/s  p50 .* accuracy {high}  errors 0", output), output
    assert "sending true labels for 50% of the answers, 1 s after each" in output
    for path in ("gRPC", "gateway"):
        labels = (
            rf"{path}\s+\d+ req/s .* labels [1-9]\d* ok 0 failed \(accuracy by the labels {high}"
        )
        assert re.search(labels, output), output
    match = _TRACE.search(output)
    assert match is not None, output
    trace_id, logs = match.groups()
    assert logs == f"{demo.run_dir}/*.log"
    gateway_log = (demo.run_dir / "gateway.log").read_text(encoding="utf-8")
    traced = [json.loads(line) for line in gateway_log.splitlines() if trace_id in line]
    assert traced
    assert traced[0]["message"].startswith("POST /v2/models/digits/infer 200")
    assert "prometheus" not in demo.children()
    _assert_everything_stopped(demo, {"model-server", "gateway"})


def test_trains_the_default_model_and_reports_sparse_traffic(tmp_path: Path) -> None:
    """An empty repository gets the digits model; at 2 requests a second the drift window
    stays too small for a score all run long, and the status lines say so."""
    repository = tmp_path / "models"
    demo = Demo(tmp_path, repository, *("--duration", "6", "--no-monitoring", "--rate", "2"))
    try:
        assert demo.wait(180) == 0, demo.output
    finally:
        demo.kill()

    assert (repository / "digits" / "1" / "model.pt").is_file()
    assert re.search(r"drift    insufficient_data  window \d+ rows", demo.output), demo.output
    assert "Traceback" not in demo.output
    _assert_everything_stopped(demo, {"model-server", "gateway"})


def test_a_child_that_cannot_start_is_named_without_a_traceback(
    tmp_path: Path, repository: Path
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        demo = Demo(tmp_path, repository, "--no-monitoring", gateway_port=taken.getsockname()[1])
        try:
            code = demo.wait(180)
        finally:
            demo.kill()

    assert code == 1, demo.output
    assert f"gateway exited with code 3; see {demo.run_dir / 'gateway.log'}" in demo.output
    assert "Traceback" not in demo.output
    _assert_no_child_left(demo)


@pytest.fixture
def alertmanager_binary() -> str:
    """Path of the Alertmanager binary; skip without it, unless under CI."""
    binary = shutil.which("prometheus-alertmanager")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus-alertmanager missing under CI (apt-get install it)")
        pytest.skip("prometheus-alertmanager missing (apt-get install prometheus-alertmanager)")
    return binary


def _accuracy_alerts(prometheus_port: int) -> dict[str, str]:
    """Model name -> state (pending, firing) of the accuracy alert in the demo's Prometheus."""
    url = f"http://127.0.0.1:{prometheus_port}/api/v1/alerts"
    with urllib.request.urlopen(url, timeout=5) as response:
        alerts = json.load(response)["data"]["alerts"]
    return {
        alert["labels"]["model_name"]: alert["state"]
        for alert in alerts
        if alert["labels"]["alertname"] == "InferWatchAccuracyBelowFloor"
    }


def _scraped(prometheus_port: int) -> set[str]:
    url = f"http://127.0.0.1:{prometheus_port}/api/v1/targets"
    with urllib.request.urlopen(url, timeout=5) as response:
        targets = json.load(response)["data"]["activeTargets"]
    return {target["labels"]["job"] for target in targets if target["health"] == "up"}


@pytest.mark.usefixtures("prometheus_binary", "alertmanager_binary")
def test_wrong_labels_raise_the_accuracy_alert_and_ctrl_c_stops_everything(
    tmp_path: Path, repository: Path
) -> None:
    demo = Demo(tmp_path, repository, "--rate", "10", "--label-ratio", "1", "--wrong-labels")
    try:
        wait_until(lambda: "sending demo traffic" in demo.output, timeout_s=180)
        jobs = {"inferwatch-model-server", "inferwatch-gateway"}
        wait_until(lambda: _scraped(demo.ports["prom"]) == jobs, timeout_s=60)
        # 20 wrong labels a second: 100 in the window within seconds; pending (the hold is 10 min)
        wait_until(lambda: "digits" in _accuracy_alerts(demo.ports["prom"]), timeout_s=90)
        alertmanager = f"http://127.0.0.1:{demo.ports['am']}/-/ready"
        with urllib.request.urlopen(alertmanager, timeout=5) as response:
            assert response.status == 200
        demo.process.send_signal(signal.SIGINT)
        assert demo.wait(150) == 0, demo.output
    finally:
        demo.kill()

    config = (demo.run_dir / "prometheus.yml").read_text(encoding="utf-8")
    assert f"127.0.0.1:{demo.ports['am']}" in config
    _assert_everything_stopped(demo, {"model-server", "gateway", "prometheus", "alertmanager"})
