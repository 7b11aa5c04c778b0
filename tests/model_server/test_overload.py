"""Overload: beyond `max_concurrent_rpcs` ModelInfer calls are refused at once, health and
readiness are still answered, and service resumes."""

from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import model_repository_pb2 as repo_pb
from model_server.proto import model_repository_pb2_grpc as repo_grpc
from tests.conftest import Serve, wait_until
from tests.model_server.protocol import pixels_request, probe_request
from tests.model_server.test_models import probe_config, write_probe


def test_calls_beyond_the_concurrency_limit_are_refused_until_some_finish(
    repository: Path, serve: Serve
) -> None:
    # Each call to `slow` waits 10 s for company: two calls in flight fill the limit, until the
    # unload below runs their batch.
    write_probe(repository / "slow" / "1", probe_config(delay_ms=10_000))
    server = serve(repository, max_concurrent_rpcs=2)
    assert server.channel is not None
    batcher = server.server.repository.resolve("slow", "").batcher
    assert batcher is not None
    held = [server.stub.ModelInfer.future(probe_request(np.ones((1, 4)), "slow")) for _ in range(2)]
    wait_until(lambda: batcher.queue_depth == 2)

    with pytest.raises(grpc.RpcError) as refused:
        server.stub.ModelInfer(pixels_request(np.zeros((1, 64))), timeout=10)

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.value.details() == (
        "server busy: 2 ModelInfer calls in flight, the most it takes at once "
        "(MODEL_SERVER_MAX_CONCURRENT_RPCS=2); retry later"
    )
    # A liveness or readiness probe of a busy server must not fail: only ModelInfer is limited.
    health = health_pb2_grpc.HealthStub(server.channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert server.stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
    assert server.stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
    assert server.stub.ModelReady(pb.ModelReadyRequest(name="digits"), timeout=10).ready
    repo_grpc.ModelRepositoryServiceStub(server.channel).RepositoryModelUnload(
        repo_pb.RepositoryModelUnloadRequest(model_name="slow"), timeout=10
    )
    assert all(call.result(timeout=10).model_name == "slow" for call in held)
    assert server.stub.ModelInfer(pixels_request(np.zeros((1, 64)))).model_name == "digits"
