"""A third-party client of the protocol, tritonclient.http, works unchanged through the gateway.

It runs in the test process: unlike tritonclient.grpc it has no protobuf messages of its own,
so nothing clashes with ours in the descriptor pool.
"""

from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from model_server import digits
from tests.conftest import Serve
from tests.gateway.conftest import StartGateway
from tests.model_server.protocol import outputs, pixels_request
from tests.model_server.test_models import probe_config, write_probe


@pytest.fixture
def triton_client(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> triton.InferenceServerClient:
    write_probe(repository / "slow" / "1", probe_config(delay_ms=300))
    gateway = start_gateway([serve(repository).address])
    return triton.InferenceServerClient(url=gateway.url.removeprefix("http://"))


def test_health_and_metadata(triton_client: triton.InferenceServerClient) -> None:
    assert triton_client.is_server_live()
    assert triton_client.is_server_ready()
    assert triton_client.is_model_ready("digits")
    assert not triton_client.is_model_ready("digits", "9")
    assert triton_client.get_server_metadata()["name"] == "inferwatch-gateway"
    metadata = triton_client.get_model_metadata("digits", "1")
    assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_inference(
    binary: bool, repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    server = serve(repository)
    pixels = digits.load_split().x_test[:5].astype(np.float32)
    expected = outputs(server.stub.ModelInfer(pixels_request(pixels)))
    gateway = start_gateway([server.address])
    client = triton.InferenceServerClient(url=gateway.url.removeprefix("http://"))
    tensor = triton.InferInput("pixels", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    requested = [
        triton.InferRequestedOutput("probabilities", binary_data=binary),
        triton.InferRequestedOutput("label", binary_data=binary),
    ]
    result = client.infer("digits", [tensor], outputs=requested, request_id="t-1")
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), expected["probabilities"], rtol=1e-5, atol=1e-8
    )
    assert result.as_numpy("label").tolist() == expected["label"].tolist()
    response = result.get_response()
    assert (response["id"], response["model_version"]) == ("t-1", "1")


def test_errors_and_the_clients_timeout(triton_client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as unknown:
        triton_client.infer("no-such-model", [tensor])
    assert unknown.value.status() == "404"
    assert "no-such-model" in unknown.value.message()
    with pytest.raises(InferenceServerException) as late:
        triton_client.infer("slow", [tensor], timeout=50_000)  # microseconds
    assert late.value.status() == "504"
