"""Overload: beyond `max_concurrent_rpcs` calls are refused at once, and service resumes."""

from pathlib import Path

import grpc
import numpy as np
import pytest

from tests.conftest import Serve, wait_until
from tests.model_server.protocol import probe_request
from tests.model_server.test_models import probe_config, write_probe


def test_calls_beyond_the_concurrency_limit_are_refused_until_some_finish(
    repository: Path, serve: Serve
) -> None:
    # Each call to `slow` waits 300 ms for company: two calls in flight fill the limit.
    write_probe(repository / "slow" / "1", probe_config(delay_ms=300))
    server = serve(repository, max_concurrent_rpcs=2)
    batcher = server.server.repository.resolve("slow", "").batcher
    assert batcher is not None
    held = [server.stub.ModelInfer.future(probe_request(np.ones((1, 4)), "slow")) for _ in range(2)]
    wait_until(lambda: batcher.queue_depth == 2)

    with pytest.raises(grpc.RpcError) as refused:
        server.stub.ModelInfer(probe_request(np.ones((1, 4)), "slow"), timeout=10)

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert all(call.result(timeout=10).model_name == "slow" for call in held)
    assert server.stub.ModelInfer(probe_request(np.ones((1, 4)), "slow")).model_name == "slow"
