"""Checks a request's tensors against a model's configured inputs and outputs."""

import numpy as np

from model_server.errors import InvalidInputError, echo
from model_server.model_config import ModelConfig
from model_server.types import Tensor


def validate_inputs(config: ModelConfig, model: str, inputs: list[Tensor]) -> list[np.ndarray]:
    """The input arrays in the model's order; InvalidInputError naming the first bad field."""
    by_name: dict[str, Tensor] = {}
    for tensor in inputs:
        if tensor.name in by_name:
            raise InvalidInputError(f"input {echo(tensor.name)} is given more than once")
        by_name[tensor.name] = tensor
    expected = [spec.name for spec in config.inputs]
    unknown = sorted(set(by_name) - set(expected))
    if unknown:
        raise InvalidInputError(
            f"unknown input {echo(unknown[0])} for model {model}; expected inputs: {expected}"
        )
    arrays = []
    rows: int | None = None
    for spec in config.inputs:
        given = by_name.get(spec.name)
        if given is None:
            raise InvalidInputError(f"missing input {spec.name!r} for model {model}")
        if given.datatype != spec.datatype:
            raise InvalidInputError(
                f"input {spec.name!r}: datatype {given.datatype} does not match the model's "
                f"{spec.datatype}"
            )
        shape = given.data.shape
        if len(shape) != len(spec.shape) or shape[1:] != spec.shape[1:]:
            raise InvalidInputError(
                f"input {spec.name!r}: shape {list(shape)} does not match the model's "
                f"{list(spec.shape)}"
            )
        if shape[0] == 0:
            raise InvalidInputError(f"input {spec.name!r}: empty batch (shape {list(shape)})")
        if shape[0] > config.max_batch_size:
            raise InvalidInputError(
                f"input {spec.name!r}: batch of {shape[0]} rows is above the model's max batch "
                f"size {config.max_batch_size}"
            )
        if rows is not None and shape[0] != rows:
            raise InvalidInputError(
                f"input {spec.name!r}: batch of {shape[0]} rows differs from the other inputs' "
                f"{rows}"
            )
        if spec.finite and given.data.dtype.kind == "f" and not np.isfinite(given.data).all():
            row = int(np.flatnonzero(~np.isfinite(given.data).reshape(shape[0], -1).all(1))[0])
            raise InvalidInputError(
                f"input {spec.name!r}: row {row} holds NaN or infinite values; the model accepts "
                "finite values only"
            )
        rows = shape[0]
        arrays.append(given.data)
    return arrays


def output_indices(config: ModelConfig, model: str, requested: list[str]) -> list[int]:
    """Indices into the model's outputs for the requested names (all when none named)."""
    names = [spec.name for spec in config.outputs]
    if not requested:
        return list(range(len(names)))
    indices = []
    for name in requested:
        if name not in names:
            raise InvalidInputError(
                f"requested output {echo(name)} is not an output of model {model}; outputs: {names}"
            )
        index = names.index(name)
        if index in indices:
            raise InvalidInputError(f"requested output {echo(name)} is named more than once")
        indices.append(index)
    return indices
