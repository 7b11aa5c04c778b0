"""Inference through a real gRPC server gives the model's own answers."""

from pathlib import Path

import numpy as np
import torch

from model_server import digits
from model_server.proto import grpc_service_pb2 as pb
from tests.conftest import Serve
from tests.model_server.protocol import outputs, pixels_request, probe_request
from tests.model_server.test_models import probe_config, write_probe


def test_outputs_equal_a_direct_torch_forward(
    repository: Path, digits_version_dir: Path, serve: Serve
) -> None:
    server = serve(repository)
    pixels = digits.load_split().x_test[:7]
    module = torch.jit.load(str(digits_version_dir / "model.pt"))  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        expected_probabilities, expected_label = module(torch.from_numpy(pixels))

    response = server.stub.ModelInfer(pixels_request(pixels, request_id="req-7"))

    got = outputs(response)
    assert response.model_name == "digits"
    assert response.model_version == "1"
    assert response.id == "req-7"
    np.testing.assert_allclose(
        got["probabilities"], expected_probabilities.numpy(), rtol=1e-5, atol=1e-8
    )
    np.testing.assert_array_equal(got["label"], expected_label.numpy())


def test_accuracy_on_the_test_split_through_the_server(repository: Path, serve: Serve) -> None:
    server = serve(repository)
    split = digits.load_split()
    predicted = [
        outputs(server.stub.ModelInfer(pixels_request(split.x_test[i : i + 32])))["label"]
        for i in range(0, len(split.x_test), 32)
    ]
    accuracy = float((np.concatenate(predicted) == split.y_test).mean())
    assert accuracy > 0.9


def test_typed_contents_give_the_same_answer_as_raw_bytes(repository: Path, serve: Serve) -> None:
    server = serve(repository)
    pixels = digits.load_split().x_test[:3]
    typed = pb.ModelInferRequest(
        model_name="digits",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name="pixels",
                datatype="FP32",
                shape=pixels.shape,
                contents=pb.InferTensorContents(fp32_contents=pixels.ravel().tolist()),
            )
        ],
    )
    typed_out = outputs(server.stub.ModelInfer(typed))
    raw_out = outputs(server.stub.ModelInfer(pixels_request(pixels)))
    np.testing.assert_array_equal(typed_out["probabilities"], raw_out["probabilities"])
    np.testing.assert_array_equal(typed_out["label"], raw_out["label"])


def test_requested_outputs_limit_the_response(repository: Path, serve: Serve) -> None:
    server = serve(repository)
    response = server.stub.ModelInfer(
        pixels_request(digits.load_split().x_test[:2], outputs=["label"])
    )
    assert [tensor.name for tensor in response.outputs] == ["label"]
    assert len(response.raw_output_contents) == 1


def test_no_version_uses_the_newest_ready_one(repository: Path, serve: Serve) -> None:
    write_probe(repository / "probe" / "1", probe_config(), factor=1.0)
    write_probe(repository / "probe" / "2", probe_config(), factor=2.0)
    broken = repository / "probe" / "3"
    write_probe(broken, probe_config(), factor=3.0)
    (broken / "model.pt").write_bytes(b"not a torchscript archive")
    server = serve(repository)
    x = np.ones((1, 4), dtype=np.float32)

    newest = server.stub.ModelInfer(probe_request(x))
    first = server.stub.ModelInfer(probe_request(x, version="1"))

    assert newest.model_version == "2"
    np.testing.assert_array_equal(outputs(newest)["y"], x * 2)
    np.testing.assert_array_equal(outputs(first)["y"], x)
