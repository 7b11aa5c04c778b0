"""A loaded TorchScript module that maps numpy batches to numpy batches."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from model_server.datatypes import NUMPY_DTYPES
from model_server.model_config import ModelConfig


class ModelLoadError(Exception):
    """The module could not be loaded or does not honour its config."""


class TorchScriptModel:
    """Runs one TorchScript module on CPU; `forward` is called from one thread at a time."""

    def __init__(self, version_dir: Path, config: ModelConfig) -> None:
        path = version_dir / config.model_file
        try:
            module = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(f"{path}: cannot load TorchScript module: {exc}") from None
        module.eval()
        self._module = module
        self._config = config
        self._output_dtypes = [NUMPY_DTYPES[spec.datatype] for spec in config.outputs]

    def forward(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One forward pass over a batch; inputs and outputs follow the config's order."""
        # from_numpy shares memory; it needs a writable array, which buffers from the
        # wire are not.
        tensors = [torch.from_numpy(np.require(array, requirements="W")) for array in inputs]
        with torch.inference_mode():
            result = self._module(*tensors)
        outputs = result if isinstance(result, tuple | list) else (result,)
        if len(outputs) != len(self._config.outputs):
            raise RuntimeError(
                f"module returned {len(outputs)} outputs, config declares "
                f"{len(self._config.outputs)}"
            )
        rows = inputs[0].shape[0]
        arrays = [output.detach().cpu().numpy() for output in outputs]
        for spec, array in zip(self._config.outputs, arrays, strict=True):
            if array.shape[:1] != (rows,):
                raise RuntimeError(
                    f"output {spec.name!r} has shape {list(array.shape)} for a batch of {rows}"
                )
        return arrays

    def check_signature(self) -> None:
        """Run one row of zeros and verify the outputs' count, dtypes and shapes."""
        sample = [
            np.zeros((1, *spec.shape[1:]), dtype=NUMPY_DTYPES[spec.datatype])
            for spec in self._config.inputs
        ]
        try:
            outputs = self.forward(sample)
        except Exception as exc:  # any failure of a user's module means "not loadable"
            raise ModelLoadError(f"forward on a zero sample failed: {exc}") from None
        specs = zip(self._config.outputs, self._output_dtypes, outputs, strict=True)
        for spec, dtype, array in specs:
            if array.dtype != dtype:
                raise ModelLoadError(
                    f"output {spec.name!r}: module returns {array.dtype}, "
                    f"config says {spec.datatype}"
                )
            if tuple(array.shape[1:]) != spec.shape[1:]:
                raise ModelLoadError(
                    f"output {spec.name!r}: module returns shape {list(array.shape)}, config says "
                    f"{list(spec.shape)}"
                )
