"""The console command as a person runs it: a live progress line on a terminal, Ctrl-C."""

import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Serve, wait_until
from tests.telemetry_capture import TelemetryCapture


def _command(address: str, *argv: str) -> list[str]:
    return [sys.executable, "-m", "loadgen", "--target", f"grpc://{address}", *argv]


@pytest.mark.parametrize(
    ("amount", "goal"),
    [(("--duration", "2"), r"\d+\.\d/2 s"), (("--requests", "3000"), r"[\d,]+/3,000 requests")],
)
def test_progress_line_on_a_terminal(
    repository: Path, serve: Serve, amount: tuple[str, str], goal: str
) -> None:
    server = serve(repository)
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        _command(server.address, "--concurrency", "2", *amount),
        stdout=subprocess.PIPE,
        stderr=terminal,
        text=True,
    )
    os.close(terminal)
    stdout, _ = process.communicate(timeout=60)
    screen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal's other side is closed once the process is gone
            break
        if not chunk:
            break
        screen += chunk
    os.close(controller)

    assert process.returncode == 0
    lines = [line for line in screen.decode().split("\r") if line.strip()]
    assert len(lines) >= 2  # redrawn in place
    assert re.match(rf"\[[#.]{{20}}\] +{goal}  ", lines[-1]), lines[-1]
    assert re.match(r"\[#+\.*\]", lines[-1])  # the bar has moved
    assert "req/s  p99" in lines[-1]
    assert "errors 0 (0.0%)" in lines[-1]
    assert "closed loop, concurrency 2" in stdout


def test_no_progress_line_without_a_terminal(repository: Path, serve: Serve) -> None:
    server = serve(repository)

    done = subprocess.run(
        _command(server.address, "--requests", "20"), capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0
    assert done.stderr == ""
    assert "requests    20 at" in done.stdout


def test_ctrl_c_stops_early_with_a_summary(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    server = serve(repository)
    served = "inferwatch.server.requests"
    before = telemetry.total(served, **{"model.name": "digits"})
    process = subprocess.Popen(
        _command(server.address, "--rate", "50", "--duration", "60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    wait_until(lambda: telemetry.total(served, **{"model.name": "digits"}) > before + 10, 60)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)

    assert process.returncode == 0, stderr
    assert time.monotonic() - started < 50
    assert "open loop, 50 req/s" in stdout
    assert "0 errors" in stdout
