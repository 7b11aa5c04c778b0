"""Runs `python -m model_server` as a real child process and finds its port in the log."""

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

_LISTENING = re.compile(r"gRPC server listening on [^:\s]+:(\d+)")
_METRICS = re.compile(r"Serving Prometheus metrics on http://[^:\s]+:(\d+)/metrics")
_READY = "server ready with models"


class ServerProcess:
    """A model server child process; its combined output is kept in `log`."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log: list[str] = []
        self.port = 0
        self.metrics_port = 0
        self._ready = threading.Event()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "model_server", *args],
            cwd=cwd,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "MODEL_SERVER_METRICS_PORT": "0",
                **(env or {}),
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.log.append(line)
            match = _LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
            metrics = _METRICS.search(line)
            if metrics:
                self.metrics_port = int(metrics.group(1))
            if _READY in line:
                self._ready.set()
        self._ready.set()  # the process ended: wake any waiter

    def wait_ready(self, timeout_s: float = 120.0) -> str:
        """Block until the server is ready; returns its address."""
        if not self._ready.wait(timeout_s) or self._process.poll() is not None:
            raise AssertionError("server did not become ready:\n" + "".join(self.log))
        return f"127.0.0.1:{self.port}"

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then wait for the exit code."""
        self._process.send_signal(signal.SIGTERM)
        return self.wait(timeout_s)

    def wait(self, timeout_s: float) -> int:
        """Wait for exit; returns the exit code."""
        code = self._process.wait(timeout_s)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """Last resort at teardown."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
