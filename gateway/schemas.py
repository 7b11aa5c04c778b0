"""The Open Inference Protocol REST v2 payloads as pydantic models.

They validate request bodies and describe every body in the OpenAPI schema. Unknown keys are
rejected so a misspelt field is an error, not silently ignored. Tensor data is checked against
its datatype by `gateway.converters` (so errors name the element), hence `list[Any]` here with
the protocol's recursive schema. Optional fields may be left out (or null).
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator
from typing_extensions import TypeAliasType

from monitoring.feedback import MAX_ITEMS

TensorData = TypeAliasType("TensorData", "list[TensorData | float | bool | str]")
"""The protocol's `$tensor_data`, for the schema; `TensorElements` is what validates."""


def _array(value: object) -> list[Any]:
    if isinstance(value, list):
        return value
    raise ValueError("must be an array")


def _scalar(value: object) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    raise ValueError("a parameter must be a boolean, a number or a string")


Parameter = Annotated[
    bool | int | float | str,
    PlainValidator(_scalar, json_schema_input_type=bool | int | float | str),
]
Parameters = dict[str, Parameter]
TensorElements = Annotated[list[Any], PlainValidator(_array, json_schema_input_type=TensorData)]
"""Tensor data as sent: any array; `gateway.converters` checks its elements."""
Dimension = Annotated[int, Field(strict=True, ge=0, le=2**63 - 1)]
"""A dimension of an input tensor (int64 on the wire to the model server): a JSON integer, not
`true`, `"1"` or `1.0`, as strict as the tensor data."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class RequestInput(_Strict):
    """One input tensor of an inference request."""

    name: str
    shape: list[Dimension]
    datatype: str
    parameters: Parameters | None = None
    data: TensorElements | None = None
    """Absent when the binary tensor data extension carries the tensor (`binary_data_size`)."""


class RequestOutput(_Strict):
    """An output the client wants (all outputs when the request lists none)."""

    name: str
    parameters: Parameters | None = None


class InferenceRequest(_Strict):
    """Body of `POST /v2/models/{model_name}[/versions/{model_version}]/infer`."""

    id: str | None = None
    parameters: Parameters | None = None
    inputs: Annotated[list[RequestInput], Field(min_length=1)]
    outputs: list[RequestOutput] | None = None


class ResponseOutput(_Strict):
    """One output tensor of an inference response."""

    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: TensorElements | None = None
    """Absent when the output travels as binary data (`parameters.binary_data_size`)."""


class InferenceResponse(_Strict):
    """Answer of an inference request."""

    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class MetadataTensor(_Strict):
    """Name, datatype and shape (-1 for a variable dimension) of a model tensor."""

    name: str
    datatype: str
    shape: list[int]


class ModelMetadataResponse(_Strict):
    """Answer of `GET /v2/models/{model_name}[/versions/{model_version}]`."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ServerMetadataResponse(_Strict):
    """Answer of `GET /v2`."""

    name: str
    version: str
    extensions: list[str]


class ServerLiveResponse(_Strict):
    """Answer of `GET /v2/health/live`."""

    live: bool


class ServerReadyResponse(_Strict):
    """Answer of `GET /v2/health/ready`: 200 when ready, 400 when not (the protocol's 4xx)."""

    ready: bool


class ModelReadyResponse(_Strict):
    """Answer of `GET /v2/models/{model_name}[/versions/{model_version}]/ready`."""

    name: str
    ready: bool


class FeedbackItem(_Strict):
    """A true label for one prediction (or one row of it)."""

    id: str
    """The `id` of the inference response."""
    label: str
    """The true label, from the model's label set."""
    row: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    """Which row of the inference request; 0 for a request of one row."""


class FeedbackRequest(_Strict):
    """Body of `POST /v2/models/{model_name}[/versions/{model_version}]/feedback`."""

    items: Annotated[list[FeedbackItem], Field(min_length=1, max_length=MAX_ITEMS)]


FeedbackResultName = Literal[
    "ok",
    "unknown_id",
    "expired",
    "evicted",
    "other_model",
    "invalid_row",
    "invalid_label",
    "duplicate",
    "unavailable",
]


class FeedbackItemResult(_Strict):
    """The answer to one feedback item; the fields about the prediction only when `ok`."""

    id: str
    row: int
    result: FeedbackResultName
    """`ok`: the label counts in the live quality metrics. Else why not: the prediction is not
    kept (`unknown_id`, `expired`, `evicted`), was made by another model or version
    (`other_model`), has no such row (`invalid_row`), the label is not in the model's label set
    (`invalid_label`), the row already has a label (`duplicate`; the first one stands), or a
    model server that may keep it did not answer (`unavailable`; retry)."""
    message: str | None = None
    """What is wrong, naming the item's field (`items[3].label: ...`)."""
    model_version: str | None = None
    """The version that made the prediction."""
    predicted_label: str | None = None
    """The predicted label; null when the row predicted nothing (a NaN or infinite
    probability; the label still counts, as wrong)."""
    confidence: float | None = None
    """The predicted label's probability; null when it predicted nothing."""
    correct: bool | None = None
    """Whether the true label equals the predicted one."""
    trace_id: str | None = None
    """The trace of the inference request (32 hex digits): its spans and logs."""


class FeedbackResponse(_Strict):
    """Answer of a feedback request: one result per item, in order."""

    model_name: str
    results: list[FeedbackItemResult]


class ErrorResponse(_Strict):
    """Body of every error answer."""

    error: str
