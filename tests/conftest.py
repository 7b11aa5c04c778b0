"""Fixtures shared by every test package: the digits model and a real in-process server."""

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from model_server import digits
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from model_server.server import ModelServer
from model_server.settings import ModelServerSettings
from tests import telemetry_capture
from tests.prometheus import START_TIMEOUT_S, Prometheus
from tests.telemetry_capture import TelemetryCapture

# Before any test: the API's global providers can be set only once per process.
telemetry_capture.install()


@pytest.fixture
def telemetry() -> Iterator[TelemetryCapture]:
    """Spans (cleared per test) and metrics recorded through the global providers."""
    yield from telemetry_capture.captured()


@pytest.fixture(scope="session")
def digits_version_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained digits version, shared by the whole session (training takes ~2 s)."""
    version_dir = tmp_path_factory.mktemp("digits-model") / "1"
    digits.save_version(version_dir)
    return version_dir


@pytest.fixture
def repository(tmp_path: Path, digits_version_dir: Path) -> Path:
    """A fresh model repository holding digits version 1; tests add more models."""
    root = tmp_path / "models"
    shutil.copytree(digits_version_dir, root / "digits" / "1")
    return root


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll a condition the test cannot be notified of; fail after the timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


class ServerThread:
    """A real ModelServer on 127.0.0.1:0, running on its own event loop thread."""

    def __init__(self, settings: ModelServerSettings) -> None:
        self.server = ModelServer(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stopped = False
        self.address = ""
        self.channel: grpc.Channel | None = None

    def start(self) -> None:
        """Start and wait until the server is ready."""
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(60)
        self.address = f"127.0.0.1:{port}"
        self.channel = grpc.insecure_channel(self.address)

    @property
    def stub(self) -> pb_grpc.GRPCInferenceServiceStub:
        """Inference service stub on this server's channel."""
        assert self.channel is not None
        return pb_grpc.GRPCInferenceServiceStub(self.channel)

    def stop(self) -> None:
        """Graceful stop, then end the loop thread; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(60)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        if self.channel is not None:
            self.channel.close()


def server_settings(repository: Path, **overrides: object) -> ModelServerSettings:
    """Settings for a test server on a free loopback port."""
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "grpc_port": 0,
        "model_repository": repository,
        "create_default_model": False,
        "shutdown_grace_s": 5.0,
    }
    values.update(overrides)
    return ModelServerSettings.model_validate(values)


Serve = Callable[..., ServerThread]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """`serve(repository, **setting_overrides)` starts a server; all stop at teardown."""
    servers: list[ServerThread] = []

    def _serve(repository: Path, **overrides: object) -> ServerThread:
        server = ServerThread(server_settings(repository, **overrides))
        servers.append(server)
        server.start()
        return server

    yield _serve
    for server in servers:
        server.stop()


@pytest.fixture
def prometheus_binary() -> str:
    """Path of the prometheus binary; skip without it, unless under CI."""
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus binary missing under CI (apt-get install -y prometheus)")
        pytest.skip("prometheus binary missing (apt-get install -y prometheus)")
    return binary


StartPrometheus = Callable[[int], Prometheus]


@pytest.fixture
def start_prometheus(prometheus_binary: str, tmp_path: Path) -> Iterator[StartPrometheus]:
    """`start_prometheus(target_port)` -> a ready Prometheus scraping that port every second."""
    started: list[Prometheus] = []

    def start(target_port: int) -> Prometheus:
        prometheus = Prometheus(prometheus_binary, tmp_path, target_port)
        started.append(prometheus)
        prometheus.poll("/-/ready", lambda status: status == 200, START_TIMEOUT_S)
        return prometheus

    yield start
    for prometheus in started:
        prometheus.stop()
