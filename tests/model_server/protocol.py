"""Helpers to build ModelInferRequests and read ModelInferResponses in tests."""

import grpc
import numpy as np

from model_server import digits
from model_server.datatypes import NUMPY_DTYPES
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc

_DATATYPES = {dtype: name for name, dtype in NUMPY_DTYPES.items()}


def raw_request(
    model: str,
    inputs: dict[str, np.ndarray],
    *,
    version: str = "",
    outputs: list[str] | None = None,
    request_id: str = "",
) -> pb.ModelInferRequest:
    """A request carrying every input as raw_input_contents."""
    return pb.ModelInferRequest(
        model_name=model,
        model_version=version,
        id=request_id,
        inputs=[
            pb.ModelInferRequest.InferInputTensor(
                name=name, datatype=_DATATYPES[array.dtype], shape=array.shape
            )
            for name, array in inputs.items()
        ],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in outputs or []],
        raw_input_contents=[array.tobytes() for array in inputs.values()],
    )


def pixels_request(
    pixels: np.ndarray,
    *,
    version: str = "",
    outputs: list[str] | None = None,
    request_id: str = "",
) -> pb.ModelInferRequest:
    """A digits request."""
    return raw_request(
        "digits",
        {"pixels": pixels.astype(np.float32)},
        version=version,
        outputs=outputs,
        request_id=request_id,
    )


def probe_request(x: np.ndarray, model: str = "probe", version: str = "") -> pb.ModelInferRequest:
    """A probe-model request."""
    return raw_request(model, {"x": x.astype(np.float32)}, version=version)


def outputs(response: pb.ModelInferResponse) -> dict[str, np.ndarray]:
    """Every output of a response as an array of its declared datatype and shape."""
    return {
        tensor.name: np.frombuffer(raw, dtype=NUMPY_DTYPES[tensor.datatype]).reshape(
            tuple(tensor.shape)
        )
        for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }


def infer_labels(channel: grpc.Channel) -> np.ndarray:
    """ModelInfer on digits over this channel: the predicted labels of three test images."""
    pixels = digits.load_split().x_test[:3]
    response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
        pixels_request(pixels, outputs=["label"]), timeout=30
    )
    assert response.model_name == "digits"
    return outputs(response)["label"]
