"""A real Alertmanager (Debian `prometheus-alertmanager`) for tests, on a free loopback port."""

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.otel.support import free_port


class Alertmanager:
    """`prometheus-alertmanager` with the given configuration text, clustering off."""

    def __init__(self, binary: str, workdir: Path, config: str) -> None:
        self.port = free_port()
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(config, encoding="utf-8")
        self.log_path = workdir / "alertmanager.log"
        self._log = self.log_path.open("w")
        self._process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.path={workdir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float) -> None:
        """Polls /-/ready (Alertmanager offers nothing to wait on)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process.poll() is None, self.log_path.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2):
                    return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise AssertionError(f"alertmanager not ready in {timeout_s} s")

    def stop(self) -> None:
        """Terminates the process (kills it if it lingers)."""
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
