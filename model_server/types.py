"""Transport-agnostic request and response types of the inference core."""

from dataclasses import dataclass, field

import numpy as np

ParameterValue = bool | int | float | str
"""The value of a request parameter (KServe v2 InferParameter)."""


@dataclass(frozen=True, slots=True)
class Tensor:
    """A named tensor; its shape is the array's shape."""

    name: str
    datatype: str
    data: np.ndarray


@dataclass(slots=True)
class InferRequest:
    """One inference call, already decoded from its transport."""

    model_name: str
    model_version: str
    inputs: list[Tensor]
    id: str = ""
    requested_outputs: list[str] = field(default_factory=list)
    """Names of the outputs to return; empty means all."""
    deadline: float | None = None
    """`time.monotonic()` value after which the caller no longer waits."""
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    """The request's parameters, by name."""


@dataclass(frozen=True, slots=True)
class InferResponse:
    """The outputs of one inference call."""

    model_name: str
    model_version: str
    id: str
    outputs: list[Tensor]


@dataclass(frozen=True, slots=True)
class TensorMetadata:
    """Name, datatype and shape (-1 for the batch) of a model tensor."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What ModelMetadata returns."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]


@dataclass(frozen=True, slots=True)
class ServerMetadata:
    """What ServerMetadata returns."""

    name: str
    version: str
    extensions: list[str]
