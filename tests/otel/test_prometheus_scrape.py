"""A real Prometheus scrapes `/metrics` and stores our exemplars with the spans' trace ids.

Needs the `prometheus` binary (Debian: `apt-get install -y prometheus`). Skipped when it is
missing, except under CI (CI=true), where that is a failure.
"""

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.otel.support import MakeTelemetry, free_port

START_TIMEOUT_S = 30
EXEMPLAR_TIMEOUT_S = 30


class Prometheus:
    """A `prometheus` process with exemplar storage, scraping one target every second."""

    def __init__(self, binary: str, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: inferwatch\n"
            "    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self._log = (workdir / "prometheus.log").open("w")
        self._process = subprocess.Popen(
            [
                binary,
                "--enable-feature=exemplar-storage",
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.log_path = workdir / "prometheus.log"

    def get(self, path: str) -> Any:
        """The decoded JSON of a GET on Prometheus' HTTP API (None while it cannot answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return json.loads(r.read()) if path.startswith("/api/") else r.status
        except (urllib.error.URLError, ConnectionError):
            return None

    def poll(self, path: str, accept: Any, timeout_s: float) -> Any:
        """Repeats GET `path` (every 0.2 s) until `accept(answer)`; fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process.poll() is None, self.log_path.read_text()
            answer = self.get(path)
            if accept(answer):
                return answer
            time.sleep(0.2)  # Prometheus offers nothing to wait on; poll its API
        raise AssertionError(f"{path}: no acceptable answer in {timeout_s} s")

    def stop(self) -> None:
        """Terminates the process (kills it if it lingers)."""
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()


@pytest.fixture
def prometheus_binary() -> str:
    """Path of the prometheus binary; skip without it, unless under CI."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus binary missing under CI (apt-get install -y prometheus)")
        pytest.skip("prometheus binary missing (apt-get install -y prometheus)")
    return binary


@pytest.fixture
def start_prometheus(prometheus_binary: str, tmp_path: Path) -> Iterator[Any]:
    """`start_prometheus(target_port)` -> a ready Prometheus scraping that port."""
    started: list[Prometheus] = []

    def start(target_port: int) -> Prometheus:
        prometheus = Prometheus(prometheus_binary, tmp_path, target_port)
        started.append(prometheus)
        prometheus.poll("/-/ready", lambda status: status == 200, START_TIMEOUT_S)
        return prometheus

    yield start
    for prometheus in started:
        prometheus.stop()


def test_prometheus_stores_exemplars_with_our_trace_ids(
    make_telemetry: MakeTelemetry, start_prometheus: Any
) -> None:
    telemetry = make_telemetry()
    assert telemetry.metrics_port
    tracer = telemetry.tracer_provider.get_tracer("tests.otel")
    duration = telemetry.meter_provider.get_meter("tests.otel").create_histogram(
        "inferwatch.request.duration", unit="s"
    )
    trace_ids = set()
    for value in (0.002, 0.03, 0.7):  # three different buckets: one exemplar each
        with tracer.start_as_current_span("predict") as span:
            duration.record(value, {"model": "digits"})
        trace_ids.add(f"{span.get_span_context().trace_id:032x}")

    prometheus = start_prometheus(telemetry.metrics_port)
    now = time.time()
    query = urllib.parse.urlencode(
        {
            "query": "inferwatch_request_duration_seconds_bucket",
            "start": now - 600,
            "end": now + 600,
        }
    )

    def stored_trace_ids(answer: Any) -> set[str]:
        if not answer or answer.get("status") != "success":
            return set()
        return {
            exemplar["labels"]["trace_id"]
            for series in answer["data"]
            for exemplar in series["exemplars"]
        }

    answer = prometheus.poll(
        f"/api/v1/query_exemplars?{query}",
        lambda answer: len(stored_trace_ids(answer)) >= len(trace_ids),
        EXEMPLAR_TIMEOUT_S,
    )
    assert stored_trace_ids(answer) == trace_ids
