"""The digits TorchScript model (model_server/digits.py writes model.pt) as an MLServer 1.7.1
custom runtime. Runs inside .venv-mlserver (created by benchmarks/bench_vs_mlserver.py), not
the project's virtualenv: MLServer pins fastapi<0.116."""

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class DigitsRuntime(MLModel):  # type: ignore[misc]
    """pixels [N, 64] FP32 -> probabilities [N, 10] FP32 and label [N] INT64, as InferWatch."""

    async def load(self) -> bool:
        """torch.jit.load on CPU, one intra-op thread (as the InferWatch model server)."""
        torch.set_num_threads(1)
        uri = await get_model_uri(self._settings)
        self._module = torch.jit.load(uri, map_location="cpu")  # type: ignore[no-untyped-call]
        self._module.eval()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """One forward pass over the (possibly adaptively batched) rows."""
        pixels = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        with torch.inference_mode():
            probabilities, label = self._module(torch.from_numpy(pixels).reshape(-1, 64))
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                NumpyCodec.encode_output("probabilities", probabilities.numpy()),
                NumpyCodec.encode_output("label", label.numpy()),
            ],
        )
