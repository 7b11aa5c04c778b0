"""Drives a running model server with tritonclient and prints what it saw as JSON.

It runs in its own process: tritonclient ships its own copy of the protocol's
messages, which cannot share a protobuf descriptor pool with ours.
Usage: python tritonclient_driver.py ADDRESS PIXELS.npy
"""

import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc


def _outputs(result: triton.InferResult) -> dict[str, object]:
    return {
        "probabilities": result.as_numpy("probabilities").tolist(),
        "label": result.as_numpy("label").tolist(),
        "id": result.get_response().id,
        "model_version": result.get_response().model_version,
    }


def main(address: str, pixels_path: str) -> None:
    pixels = np.load(pixels_path)
    client = triton.InferenceServerClient(url=address)
    seen: dict[str, object] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready("digits"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "model_metadata": client.get_model_metadata("digits", as_json=True),
    }

    raw_input = triton.InferInput("pixels", list(pixels.shape), "FP32")
    raw_input.set_data_from_numpy(pixels)
    requested = [triton.InferRequestedOutput("probabilities"), triton.InferRequestedOutput("label")]
    seen["raw"] = _outputs(client.infer("digits", [raw_input], outputs=requested, request_id="t-1"))

    request = service_pb2.ModelInferRequest(model_name="digits", id="t-2")
    typed_input = request.inputs.add()
    typed_input.name, typed_input.datatype = "pixels", "FP32"
    typed_input.shape.extend(pixels.shape)
    typed_input.contents.fp32_contents.extend(pixels.ravel().tolist())
    with grpc.insecure_channel(address) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    seen["typed"] = _outputs(triton.InferResult(response))

    try:
        client.infer("no-such-model", [raw_input])
    except triton.InferenceServerException as error:
        seen["unknown_model_error"] = {"status": error.status(), "message": error.message()}
    client.close()
    print(json.dumps(seen))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
