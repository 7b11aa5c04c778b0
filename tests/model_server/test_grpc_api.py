"""Health, metadata and reflection over real gRPC."""

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from model_server import __version__
from model_server.proto import grpc_service_pb2 as pb
from tests.conftest import Serve
from tests.model_server.test_models import probe_config, write_probe

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def repository_with_broken_model(repository: Path) -> Path:
    broken = repository / "broken" / "1"
    write_probe(broken, probe_config())
    (broken / "model.pt").write_bytes(b"garbage")
    return repository


def test_server_live_ready_and_metadata(repository: Path, serve: Serve) -> None:
    server = serve(repository)
    assert server.stub.ServerLive(pb.ServerLiveRequest()).live
    assert server.stub.ServerReady(pb.ServerReadyRequest()).ready
    metadata = server.stub.ServerMetadata(pb.ServerMetadataRequest())
    assert metadata.name == "inferwatch"
    assert metadata.version == __version__


def test_model_metadata_describes_the_signature(repository: Path, serve: Serve) -> None:
    server = serve(repository)
    metadata = server.stub.ModelMetadata(pb.ModelMetadataRequest(name="digits"))
    assert metadata.name == "digits"
    assert list(metadata.versions) == ["1"]
    assert metadata.platform == "pytorch_torchscript"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("pixels", "FP32", [-1, 64])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("probabilities", "FP32", [-1, 10]),
        ("label", "INT64", [-1]),
    ]


def test_a_model_that_fails_to_load_is_not_ready_and_harms_nothing(
    repository_with_broken_model: Path, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve(repository_with_broken_model)
    assert server.stub.ServerReady(pb.ServerReadyRequest()).ready
    assert not server.stub.ModelReady(pb.ModelReadyRequest(name="broken")).ready
    assert not server.stub.ModelReady(pb.ModelReadyRequest(name="broken", version="1")).ready
    assert server.stub.ModelReady(pb.ModelReadyRequest(name="digits")).ready
    assert any(
        "broken:1 failed to load" in record.getMessage() and "model.pt" in record.getMessage()
        for record in caplog.records
    )


def test_health_service_overall_and_per_model(
    repository_with_broken_model: Path, serve: Serve
) -> None:
    server = serve(repository_with_broken_model)
    assert server.channel is not None
    health = health_pb2_grpc.HealthStub(server.channel)

    def status(service: str) -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=service)).status  # type: ignore[no-any-return]

    assert status("") == SERVING
    assert status("digits") == SERVING
    assert status("broken") == NOT_SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        status("nope")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_the_services(repository: Path, serve: Serve) -> None:
    server = serve(repository)
    assert server.channel is not None
    reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (response,) = list(reflection.ServerReflectionInfo(iter([request])))
    names = {service.name for service in response.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
