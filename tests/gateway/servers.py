"""A real gateway for tests: uvicorn in a thread of the test process, or `python -m gateway`.

In-process, its spans and metrics reach the session's global providers (the `telemetry`
fixture). Either way it listens on a free loopback port: the listening socket exists before
the server starts, so a client may connect at once and is answered once the gateway is up.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from gateway.cli import server_config
from gateway.settings import GatewaySettings

_LISTENING = re.compile(r"gateway listening on http://[^:\s]+:(\d+)")
_METRICS = re.compile(r"Serving Prometheus metrics on http://[^:\s]+:(\d+)/metrics")
_READY = "gateway ready"


def gateway_settings(backends: Sequence[str], **overrides: object) -> GatewaySettings:
    """Settings for a test gateway in front of these model servers."""
    return GatewaySettings.model_validate({"backends": list(backends), **overrides})


class GatewayThread:
    """The gateway app served by uvicorn on its own event loop thread."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(server_config(settings))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Graceful stop (uvicorn checks the flag every 0.1 s); safe to call twice."""
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()


class GatewayProcess:
    """`python -m gateway` as a child process; its combined output is kept in `log`."""

    def __init__(self, cwd: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log: list[str] = []
        self.url = ""
        self.metrics_port = 0
        self._ready = threading.Event()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--port", "0", *args],
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "GATEWAY_METRICS_PORT": "0", **(env or {})},
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
            if match := _LISTENING.search(line):
                self.url = f"http://127.0.0.1:{match.group(1)}"
            if match := _METRICS.search(line):
                self.metrics_port = int(match.group(1))
            if _READY in line:
                self._ready.set()
        self._ready.set()  # the process ended: wake any waiter

    def wait_ready(self, timeout_s: float = 60.0) -> str:
        """Block until the gateway is ready; returns its URL."""
        if not self._ready.wait(timeout_s) or self._process.poll() is not None:
            raise AssertionError("gateway did not become ready:\n" + "".join(self.log))
        return self.url

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then wait for the exit code."""
        self._process.send_signal(signal.SIGTERM)
        code = self._process.wait(timeout_s)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        """Last resort at teardown."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(10)
