"""Hot reload over real gRPC: the model repository extension (RepositoryIndex,
RepositoryModelLoad, RepositoryModelUnload) and the polling of the repository directory.

No third-party client here: tritonclient.grpc calls Triton's own repository RPCs on
GRPCInferenceService, not the extension's ModelRepositoryService, and MLServer's client is
not installed.
"""

import asyncio
import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.metrics.export import NumberDataPoint

from model_server.model_config import CONFIG_FILE
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import model_repository_pb2 as repo_pb
from model_server.proto import model_repository_pb2_grpc as repo_grpc
from model_server.repository import ModelRepository, ModelState, ModelVersion
from model_server.telemetry import MODEL_NAME, MODEL_VERSION
from tests.conftest import Serve, ServerThread, wait_until
from tests.model_server.protocol import outputs, pixels_request, probe_request
from tests.model_server.test_batching_grpc import batcher_of
from tests.model_server.test_models import probe_config, write_probe
from tests.telemetry_capture import TelemetryCapture

PIXELS = np.zeros((1, 64))
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
POLL_S = 0.05


def publish(source: Path, version_dir: Path) -> None:
    """Copy a version next to its place, then rename it there: it appears whole at once."""
    version_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = version_dir.parent / f".{version_dir.name}.staging"
    shutil.copytree(source, staging)
    staging.rename(version_dir)


def repository_stub(server: ServerThread) -> repo_grpc.ModelRepositoryServiceStub:
    assert server.channel is not None
    return repo_grpc.ModelRepositoryServiceStub(server.channel)


def index(server: ServerThread, ready: bool = False) -> list[tuple[str, str, str, str]]:
    response = repository_stub(server).RepositoryIndex(repo_pb.RepositoryIndexRequest(ready=ready))
    return [(m.name, m.version, m.state, m.reason) for m in response.models]


def health(server: ServerThread, service: str) -> int:
    """The grpc.health.v1 status of a service; SERVICE_UNKNOWN when the server has none."""
    assert server.channel is not None
    request = health_pb2.HealthCheckRequest(service=service)
    try:
        status: int = health_pb2_grpc.HealthStub(server.channel).Check(request).status
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    return status


def model_ready(server: ServerThread, name: str, version: str = "") -> bool:
    response: pb.ModelReadyResponse = server.stub.ModelReady(
        pb.ModelReadyRequest(name=name, version=version)
    )
    return response.ready


def loaded(server: ServerThread, name: str, version: str = "") -> bool:
    """`model_ready`, False while the server does not know the model or version yet."""
    try:
        return model_ready(server, name, version)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return False


def answering_version(server: ServerThread) -> str:
    response: pb.ModelInferResponse = server.stub.ModelInfer(pixels_request(PIXELS))
    return response.model_version


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


class RequestLoop:
    """Sends digits requests naming no version, one after another, until the block ends."""

    def __init__(self, server: ServerThread) -> None:
        self.versions: list[str] = []
        self.failures: list[str] = []
        self._stub = server.stub
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "RequestLoop":
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join(30)

    def _run(self) -> None:
        request = pixels_request(PIXELS)
        while not self._done.is_set():
            try:
                self.versions.append(self._stub.ModelInfer(request, timeout=10).model_version)
            except grpc.RpcError as error:
                self.failures.append(f"{error.code().name}: {error.details()}")


@pytest.fixture
def loops(serve: Serve, repository: Path) -> Iterator[tuple[ServerThread, list[RequestLoop]]]:
    """A digits server with two request loops running."""
    server = serve(repository)
    with RequestLoop(server) as first, RequestLoop(server) as second:
        wait_until(lambda: min(len(first.versions), len(second.versions)) > 20)
        yield server, [first, second]


def test_a_loaded_version_takes_over_requests_without_a_version_and_none_fails(
    loops: tuple[ServerThread, list[RequestLoop]],
    repository: Path,
    digits_version_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, running = loops
    caplog.set_level(logging.INFO, "model_server.repository")
    publish(digits_version_dir, repository / "digits" / "2")

    repository_stub(server).RepositoryModelLoad(
        repo_pb.RepositoryModelLoadRequest(model_name="digits")
    )

    assert answering_version(server) == "2"  # READY before the call returned
    wait_until(lambda: all(loop.versions.count("2") > 20 for loop in running))
    for loop in running:
        assert loop.failures == []
        assert "1" in loop.versions
        assert loop.versions == sorted(loop.versions), "went back to version 1 after 2"
    metadata = server.stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"))
    assert list(metadata.versions) == ["1", "2"]
    assert model_ready(server, "digits", "1")
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(m.startswith("loading model digits:2 from ") for m in logged)
    assert any(m.startswith("model digits:2 ready") for m in logged)


def break_module(version_dir: Path) -> None:
    (version_dir / "model.pt").write_bytes(b"not a TorchScript archive")


def break_config_key(version_dir: Path) -> None:
    config = json.loads((version_dir / CONFIG_FILE).read_text())
    (version_dir / CONFIG_FILE).write_text(json.dumps({**config, "max_batch": 8}))


def break_config_json(version_dir: Path) -> None:
    (version_dir / CONFIG_FILE).write_text("{")


@pytest.mark.parametrize("damage", [break_module, break_config_key, break_config_json])
def test_a_broken_version_fails_alone_and_the_old_one_keeps_serving(
    loops: tuple[ServerThread, list[RequestLoop]],
    repository: Path,
    digits_version_dir: Path,
    damage: Callable[[Path], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server, running = loops
    shutil.copytree(digits_version_dir, repository / "digits" / "2")
    damage(repository / "digits" / "2")

    error = rpc_error(
        lambda: repository_stub(server).RepositoryModelLoad(
            repo_pb.RepositoryModelLoadRequest(model_name="digits")
        )
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    (entry,) = [e for e in index(server) if e[:2] == ("digits", "2")]
    assert entry[2] == "FAILED"
    assert entry[3]
    assert error.details() == f"model digits:2 failed to load: {entry[3]}"
    assert any(
        r.levelno == logging.ERROR and r.getMessage().startswith("model digits:2 failed to load")
        for r in caplog.records
    )
    count = len(running[0].versions)
    wait_until(lambda: len(running[0].versions) > count + 20)
    for loop in running:
        assert loop.failures == []
        assert set(loop.versions) == {"1"}
    assert not model_ready(server, "digits", "2")
    assert health(server, "digits") == SERVING


def unbound_drift_window(version_dir: Path) -> None:
    config = json.loads((version_dir / CONFIG_FILE).read_text())
    config["monitoring"].update(drift_window_rows=None, drift_window_seconds=None)
    (version_dir / CONFIG_FILE).write_text(json.dumps(config))


def nest_config_deeply(version_dir: Path) -> None:
    """Valid JSON that the parser cannot read (RecursionError): a failure nobody expected."""
    (version_dir / CONFIG_FILE).write_text("[" * 100_000 + "]" * 100_000)


DAMAGE: dict[Callable[[Path], None], str] = {
    unbound_drift_window: "drift_window_rows and drift_window_seconds are both null",
    nest_config_deeply: "unexpected error: RecursionError(",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_version_that_fails_to_load_at_start_is_failed_and_the_server_serves(
    repository: Path,
    serve: Serve,
    digits_version_dir: Path,
    damage: Callable[[Path], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    shutil.copytree(digits_version_dir, repository / "digits" / "2")
    damage(repository / "digits" / "2")

    server = serve(repository)

    (entry,) = [e for e in index(server) if e[:2] == ("digits", "2")]
    assert entry[2] == "FAILED"
    assert DAMAGE[damage] in entry[3]
    assert answering_version(server) == "1"
    failures = [r for r in caplog.records if r.getMessage().startswith("model digits:2 failed")]
    assert [r.levelno for r in failures] == [logging.ERROR]
    if damage is nest_config_deeply:  # unexpected: logged with its stack trace
        assert "RecursionError" in (failures[0].exc_text or "")


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_version_that_fails_to_load_at_run_time_is_failed_with_its_reason(
    repository: Path, serve: Serve, digits_version_dir: Path, damage: Callable[[Path], None]
) -> None:
    server = serve(repository)
    shutil.copytree(digits_version_dir, repository / "digits" / "2")
    damage(repository / "digits" / "2")

    error = rpc_error(
        lambda: repository_stub(server).RepositoryModelLoad(
            repo_pb.RepositoryModelLoadRequest(model_name="digits", model_version="2")
        )
    )

    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    (entry,) = [e for e in index(server) if e[:2] == ("digits", "2")]
    assert entry[2] == "FAILED"
    assert DAMAGE[damage] in entry[3]
    assert error.details() == f"model digits:2 failed to load: {entry[3]}"
    assert answering_version(server) == "1"


def test_a_load_during_start_up_loads_each_version_once(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The gRPC port opens before the repository is loaded, so RepositoryModelLoad can ask for a
    version while start-up is under way: here for probe, which start-up reaches after digits."""
    caplog.set_level(logging.INFO, "model_server.repository")
    write_probe(repository / "probe" / "1", probe_config())
    models = ModelRepository(repository)

    async def start_up_and_load() -> tuple[ModelVersion, ModelVersion | None]:
        start_up = asyncio.ensure_future(models.load_all())
        loaded = await models.load_version("probe", 1)
        await start_up
        kept = models.entry("probe", 1)
        await models.close()
        return loaded, kept

    loaded, kept = asyncio.run(start_up_and_load())

    assert kept is loaded
    assert loaded.state is ModelState.UNLOADED
    assert loaded.batcher is None  # closed with the repository: no batcher left behind
    ready = [
        r.getMessage() for r in caplog.records if r.getMessage().startswith("model probe:1 ready")
    ]
    assert len(ready) == 1


def test_a_load_of_one_version_leaves_a_newer_failed_one_alone(
    repository: Path, serve: Serve, digits_version_dir: Path
) -> None:
    shutil.copytree(digits_version_dir, repository / "digits" / "3")
    break_module(repository / "digits" / "3")
    server = serve(repository)
    publish(digits_version_dir, repository / "digits" / "2")

    repository_stub(server).RepositoryModelLoad(
        repo_pb.RepositoryModelLoadRequest(model_name="digits", model_version="2")
    )

    assert [e[:3] for e in index(server)] == [
        ("digits", "1", "READY"),
        ("digits", "2", "READY"),
        ("digits", "3", "FAILED"),
    ]
    assert answering_version(server) == "2"


def test_unload_answers_queued_requests_then_refuses_with_a_clear_message(
    repository: Path, serve: Serve, telemetry: TelemetryCapture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "model_server.repository")
    # Left alone, the queued batch would wait 10 s for more requests: the unload must run it.
    write_probe(repository / "slow" / "1", probe_config(max_batch_size=64, delay_ms=10_000))
    server = serve(repository)
    ready = {MODEL_NAME: "slow", MODEL_VERSION: "1"}
    assert telemetry.total("inferwatch.model.ready", **ready) == 1
    in_flight = [
        server.stub.ModelInfer.future(probe_request(np.full((1, 4), i), "slow")) for i in range(3)
    ]
    wait_until(lambda: batcher_of(server, "slow").queue_depth == 3)

    repository_stub(server).RepositoryModelUnload(
        repo_pb.RepositoryModelUnloadRequest(model_name="slow")
    )

    assert [int(outputs(f.result(timeout=5))["batch"][0]) for f in in_flight] == [3, 3, 3]
    assert not model_ready(server, "slow")
    assert not model_ready(server, "slow", "1")
    assert health(server, "slow") == NOT_SERVING
    # Retired on purpose: the gauge no longer reports the version (0 would page someone).
    assert not [
        point
        for point in telemetry.points("inferwatch.model.ready")
        if point.attributes is not None and dict(point.attributes) == ready
    ]
    assert ("slow", "1", "UNLOADED", "unloaded on request") in index(server)
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "unloading model slow:1: unloaded on request" in logged
    assert "model slow:1 unloaded" in logged
    newest = rpc_error(lambda: server.stub.ModelInfer(probe_request(np.ones((1, 4)), "slow")))
    assert newest.code() == grpc.StatusCode.UNAVAILABLE
    assert newest.details() == "model 'slow' has no ready version"
    named = rpc_error(lambda: server.stub.ModelInfer(probe_request(np.ones((1, 4)), "slow", "1")))
    assert named.code() == grpc.StatusCode.UNAVAILABLE
    assert named.details() == "model slow:1 is not ready (state UNLOADED)"
    assert answering_version(server) == "1"  # digits untouched

    repository_stub(server).RepositoryModelLoad(
        repo_pb.RepositoryModelLoadRequest(model_name="slow")
    )
    assert health(server, "slow") == SERVING
    assert telemetry.total("inferwatch.model.ready", **ready) == 1
    assert model_ready(server, "slow")


def test_unloading_the_newest_version_moves_requests_to_the_previous_one(
    repository: Path, serve: Serve, digits_version_dir: Path, telemetry: TelemetryCapture
) -> None:
    shutil.copytree(digits_version_dir, repository / "digits" / "2")
    server = serve(repository)
    assert answering_version(server) == "2"

    repository_stub(server).RepositoryModelUnload(
        repo_pb.RepositoryModelUnloadRequest(model_name="digits", model_version="2")
    )

    assert answering_version(server) == "1"
    assert not model_ready(server, "digits", "2")
    assert model_ready(server, "digits")
    assert health(server, "digits") == SERVING
    assert telemetry.total("inferwatch.model.ready", **{MODEL_NAME: "digits"}) == 1
    assert [e[:3] for e in index(server)] == [
        ("digits", "1", "READY"),
        ("digits", "2", "UNLOADED"),
    ]


def test_a_failed_version_reads_0_on_the_ready_gauge_until_it_is_unloaded(
    repository: Path, serve: Serve, digits_version_dir: Path, telemetry: TelemetryCapture
) -> None:
    shutil.copytree(digits_version_dir, repository / "digits" / "2")
    break_config_json(repository / "digits" / "2")
    server = serve(repository)
    failed = {MODEL_NAME: "digits", MODEL_VERSION: "2"}

    def reported() -> list[float]:
        return [
            point.value
            for point in telemetry.points("inferwatch.model.ready")
            if isinstance(point, NumberDataPoint)
            and point.attributes is not None
            and dict(point.attributes) == failed
        ]

    assert reported() == [0]  # what InferWatchModelNotReady pages on
    repository_stub(server).RepositoryModelUnload(
        repo_pb.RepositoryModelUnloadRequest(model_name="digits", model_version="2")
    )
    assert reported() == []
    assert telemetry.total("inferwatch.model.ready", **{MODEL_NAME: "digits"}) == 1


def test_index_lists_every_version_with_its_state_and_reason(
    repository: Path, serve: Serve, digits_version_dir: Path
) -> None:
    shutil.copytree(digits_version_dir, repository / "digits" / "2")
    break_config_json(repository / "digits" / "2")
    server = serve(repository)
    publish(digits_version_dir, repository / "digits" / "3")
    write_probe(repository / "probe" / "1", probe_config())

    listed = index(server)

    assert [e[:3] for e in listed] == [
        ("digits", "1", "READY"),
        ("digits", "2", "FAILED"),
        ("digits", "3", "UNLOADED"),
        ("probe", "1", "UNLOADED"),
    ]
    assert listed[0][3] == ""
    assert "config.json: unreadable" in listed[1][3]
    assert listed[2][3] == listed[3][3] == "in the repository, not loaded"
    assert index(server, ready=True) == [("digits", "1", "READY", "")]
    named = repository_stub(server).RepositoryIndex(
        repo_pb.RepositoryIndexRequest(repository_name=repository.name)
    )
    assert len(named.models) == 4


def test_polling_loads_new_versions_and_models(
    repository: Path, serve: Serve, digits_version_dir: Path
) -> None:
    server = serve(repository, repository_poll_s=POLL_S)
    assert health(server, "probe") == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN

    publish(digits_version_dir, repository / "digits" / "2")
    write_probe(repository / "probe" / "1", probe_config())

    wait_until(lambda: loaded(server, "digits", "2") and loaded(server, "probe"))
    assert answering_version(server) == "2"
    wait_until(lambda: health(server, "probe") == SERVING)


def test_polling_retries_a_failed_version_only_once_its_files_change(
    repository: Path, serve: Serve, digits_version_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(repository, repository_poll_s=POLL_S)
    half_copied = repository / "digits" / "2"
    half_copied.mkdir()
    shutil.copy(digits_version_dir / CONFIG_FILE, half_copied)  # model.pt still to come

    wait_until(lambda: ("digits", "2") in {e[:2] for e in index(server) if e[2] == "FAILED"})
    # A later poll saw the failed version unchanged: a model published after it is loaded.
    write_probe(repository / "probe" / "1", probe_config())
    wait_until(lambda: loaded(server, "probe"))
    failures = [r for r in caplog.records if r.getMessage().startswith("model digits:2 failed")]
    assert len(failures) == 1
    assert answering_version(server) == "1"

    shutil.copy(digits_version_dir / "model.pt", half_copied)

    wait_until(lambda: model_ready(server, "digits", "2"))
    assert answering_version(server) == "2"


def test_polling_retries_a_version_that_failed_at_start_only_once_it_changes(
    repository: Path, serve: Serve, digits_version_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copytree(digits_version_dir, repository / "digits" / "2")
    break_config_json(repository / "digits" / "2")
    server = serve(repository, repository_poll_s=POLL_S)

    write_probe(repository / "probe" / "1", probe_config())  # a later poll has run once loaded
    wait_until(lambda: loaded(server, "probe"))
    failures = [r for r in caplog.records if r.getMessage().startswith("model digits:2 failed")]
    assert len(failures) == 1

    shutil.copy(digits_version_dir / CONFIG_FILE, repository / "digits" / "2")

    wait_until(lambda: model_ready(server, "digits", "2"))


def test_polling_leaves_an_unloaded_version_unloaded(
    repository: Path, serve: Serve, digits_version_dir: Path
) -> None:
    shutil.copytree(digits_version_dir, repository / "digits" / "2")
    server = serve(repository, repository_poll_s=POLL_S)
    repository_stub(server).RepositoryModelUnload(
        repo_pb.RepositoryModelUnloadRequest(model_name="digits", model_version="2")
    )

    write_probe(repository / "probe" / "1", probe_config())  # a later poll has run once loaded
    wait_until(lambda: loaded(server, "probe"))

    assert not model_ready(server, "digits", "2")
    assert answering_version(server) == "1"


INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
LOAD, UNLOAD, INDEX = "RepositoryModelLoad", "RepositoryModelUnload", "RepositoryIndex"
REQUESTS = {
    LOAD: repo_pb.RepositoryModelLoadRequest,
    UNLOAD: repo_pb.RepositoryModelUnloadRequest,
    INDEX: repo_pb.RepositoryIndexRequest,
}


@pytest.mark.parametrize(
    ("method", "fields", "code", "details"),
    [
        (LOAD, {"model_name": ""}, INVALID, "model_name is empty"),
        (LOAD, {"model_name": "nope"}, NOT_FOUND, "model_name 'nope': no such model directory"),
        (LOAD, {"model_name": "../x"}, INVALID, "model_name '../x': not a model directory name"),
        (LOAD, {"model_name": "digits", "model_version": "abc"}, INVALID, "model_version 'abc'"),
        (LOAD, {"model_name": "digits", "model_version": "0"}, INVALID, "model_version '0'"),
        (
            LOAD,
            {"model_name": "digits", "model_version": "7"},
            NOT_FOUND,
            "model_version '7': model 'digits' has no version directory 7",
        ),
        (LOAD, {"model_name": "digits", "repository_name": "x"}, NOT_FOUND, "repository_name 'x'"),
        (UNLOAD, {"model_name": ""}, INVALID, "model_name is empty"),
        (UNLOAD, {"model_name": "nope"}, NOT_FOUND, "model_name 'nope': no such model"),
        (UNLOAD, {"model_name": "digits", "model_version": "-1"}, INVALID, "model_version '-1'"),
        (
            UNLOAD,
            {"model_name": "digits", "model_version": "7"},
            NOT_FOUND,
            "model_version '7': model 'digits' has no version 7",
        ),
        (INDEX, {"repository_name": "x"}, NOT_FOUND, "repository_name 'x'"),
    ],
)
def test_mistakes_get_their_code_and_name_the_field(
    repository: Path,
    serve: Serve,
    method: str,
    fields: dict[str, str],
    code: grpc.StatusCode,
    details: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = serve(repository)
    call = getattr(repository_stub(server), method)

    error = rpc_error(lambda: call(REQUESTS[method](**fields)))

    assert error.code() == code
    assert (error.details() or "").startswith(details)
    assert answering_version(server) == "1"
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.INFO] == []


def test_server_metadata_and_reflection_name_the_extension(repository: Path, serve: Serve) -> None:
    server = serve(repository)
    assert server.channel is not None

    metadata = server.stub.ServerMetadata(pb.ServerMetadataRequest())
    reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = list(reflection.ServerReflectionInfo(iter([request])))

    assert list(metadata.extensions) == ["model_repository"]
    services = {service.name for service in response.list_services_response.service}
    assert "inference.model_repository.ModelRepositoryService" in services
