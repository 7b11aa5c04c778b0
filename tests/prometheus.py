"""A real Prometheus (Debian package `prometheus`) for tests, with exemplar storage on.

Tests get it through the `start_prometheus` fixture; it is skipped when the binary is missing,
except under CI (CI=true), where that is a failure.
"""

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.otel.support import free_port

START_TIMEOUT_S = 30
"""Seconds Prometheus gets to become ready."""


class Prometheus:
    """A `prometheus` process with exemplar storage, scraping one target every second.

    With `config` (the text of a prometheus.yml) it runs that configuration instead, on `port`
    (a free one by default): the stack tests run the shipped configuration that way.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        target_port: int = 0,
        *,
        config: str | None = None,
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        config_path = workdir / "prometheus.yml"
        config_path.write_text(
            config
            or (
                "global:\n"
                "  scrape_interval: 1s\n"
                "  scrape_timeout: 1s\n"
                "scrape_configs:\n"
                "  - job_name: inferwatch\n"
                "    static_configs:\n"
                f"      - targets: ['127.0.0.1:{target_port}']\n"
            )
        )
        self._log = (workdir / "prometheus.log").open("w")
        self._process = subprocess.Popen(
            [
                binary,
                "--enable-feature=exemplar-storage",
                "--web.enable-remote-write-receiver",
                f"--config.file={config_path}",
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
