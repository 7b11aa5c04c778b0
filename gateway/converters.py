"""REST JSON (and Triton's binary tensor data extension) <-> Open Inference Protocol protobuf.

Input tensors always travel to the model server as `raw_input_contents`: JSON data (flat, or
nested exactly to the shape) is checked against its datatype and shape and packed little-endian,
binary data is sliced out of the body. Every error in a request is an InvalidRequestError naming
the field, e.g. `inputs[0].data[5]`. An output holding NaN or infinity goes back as binary data
only: JSON cannot express it.

Binary tensor data: the `Inference-Header-Content-Length` header gives the length of the JSON
part; an input with `parameters.binary_data_size` takes that many bytes of what follows, in
input order. An output asked for with `parameters.binary_data: true` (or every output, with the
request parameter `binary_data_output: true`) comes back the same way.
"""

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from pydantic import TypeAdapter, ValidationError

from gateway.errors import BadGatewayError, InvalidRequestError, UnrepresentableOutputError
from gateway.feedback import Merged
from gateway.schemas import (
    FeedbackItemResult,
    FeedbackRequest,
    FeedbackResponse,
    FeedbackResultName,
    InferenceRequest,
    MetadataTensor,
    ModelMetadataResponse,
    Parameters,
    RequestInput,
    ServerMetadataResponse,
)
from model_server.datatypes import NUMPY_DTYPES
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import monitoring_pb2 as mon_pb

BINARY_DATA_SIZE = "binary_data_size"
BINARY_DATA = "binary_data"
BINARY_DATA_OUTPUT = "binary_data_output"
TIMEOUT = "timeout"
"""Request parameter (Triton's): the client's timeout in microseconds."""
_EXTENSION_PARAMETERS = frozenset({BINARY_DATA_SIZE, BINARY_DATA, BINARY_DATA_OUTPUT})
"""Parameters the gateway consumes; they are not forwarded to the model server."""

_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1
_REQUEST = TypeAdapter(InferenceRequest)
_FEEDBACK = TypeAdapter(FeedbackRequest)
_NUMBERS = (frozenset({int, float}), "numbers")
_INTEGERS = (frozenset({int}), "integers")
_BOOLEANS = (frozenset({bool}), "booleans")
"""Element types JSON tensor data may hold, per kind of datatype."""


@dataclass(frozen=True, slots=True)
class DecodedInfer:
    """An inference request ready for the core, and how its answer is to be encoded."""

    request: pb.ModelInferRequest
    binary_outputs: frozenset[str]
    """Outputs to return as binary data."""
    all_binary: bool
    """Every output as binary data (`binary_data_output`)."""
    timeout_s: float | None
    """From the `timeout` request parameter, if sent."""

    def binary(self, output: str) -> bool:
        """Whether this output goes back as binary data."""
        return self.all_binary or output in self.binary_outputs


def field_path(location: Iterable[int | str]) -> str:
    """`("inputs", 0, "shape")` -> `inputs[0].shape`."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else part
    return path


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """One line about the first of pydantic's errors: the field path and what is wrong."""
    first = errors[0]
    path = field_path(first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
    return f"{path}: {first['msg']}{more}"


def infer_request_to_pb(
    model_name: str, model_version: str, body: bytes, json_length: int | None
) -> DecodedInfer:
    """Decode an inference request body; `json_length` is the binary extension's header."""
    if json_length is not None and json_length > len(body):
        raise InvalidRequestError(
            f"header.inference-header-content-length: {json_length} is beyond the body's "
            f"{len(body)} bytes"
        )
    header = body if json_length is None else body[:json_length]
    try:
        parsed = _REQUEST.validate_json(header)
    except ValidationError as error:
        raise InvalidRequestError(validation_message(error.errors())) from None
    binary = memoryview(body)[len(header) :]
    offset = 0
    inputs, raw = [], []
    for index, item in enumerate(parsed.inputs):
        tensor, data, offset = _input(index, item, binary, offset, json_length is not None)
        inputs.append(tensor)
        raw.append(data)
    if offset != len(binary):
        raise InvalidRequestError(
            f"body: {len(binary) - offset} bytes of binary data follow the inputs' "
            "binary_data_size total"
        )
    parameters = parsed.parameters or {}
    binary_outputs = frozenset(
        output.name
        for index, output in enumerate(parsed.outputs or ())
        if _flag(output.parameters, BINARY_DATA, f"outputs[{index}].parameters")
    )
    return DecodedInfer(
        request=pb.ModelInferRequest(
            model_name=model_name,
            model_version=model_version,
            id=parsed.id or "",
            parameters=_pb_parameters(parameters, "parameters"),
            inputs=inputs,
            outputs=[
                pb.ModelInferRequest.InferRequestedOutputTensor(
                    name=output.name,
                    parameters=_pb_parameters(output.parameters, f"outputs[{index}].parameters"),
                )
                for index, output in enumerate(parsed.outputs or ())
            ],
            raw_input_contents=raw,
        ),
        binary_outputs=binary_outputs,
        all_binary=_flag(parameters, BINARY_DATA_OUTPUT, "parameters"),
        timeout_s=_timeout_s(parameters),
    )


def _input(
    index: int, item: RequestInput, binary: memoryview, offset: int, binary_allowed: bool
) -> tuple[pb.ModelInferRequest.InferInputTensor, bytes, int]:
    """(tensor, its raw bytes, offset after the binary data it used)."""
    field = f"inputs[{index}]"
    dtype = NUMPY_DTYPES.get(item.datatype)
    if dtype is None:
        supported = ", ".join(NUMPY_DTYPES)
        raise InvalidRequestError(
            f"{field}.datatype: {item.datatype!r} is not supported (supported: {supported})"
        )
    count = math.prod(item.shape)
    size = (item.parameters or {}).get(BINARY_DATA_SIZE)
    if size is None:
        if item.data is None:
            raise InvalidRequestError(f"{field}.data: missing (or set parameters.binary_data_size)")
        data = _pack(f"{field}.data", item.data, item.datatype, dtype, item.shape, count)
    else:
        if not binary_allowed:
            raise InvalidRequestError(
                f"{field}.parameters.binary_data_size: needs the "
                "Inference-Header-Content-Length header"
            )
        if item.data is not None:
            raise InvalidRequestError(f"{field}: has both data and parameters.binary_data_size")
        needed = count * dtype.itemsize
        if type(size) is not int or size != needed:
            raise InvalidRequestError(
                f"{field}.parameters.binary_data_size: is {size!r}; shape {item.shape} of "
                f"{item.datatype} needs {needed}"
            )
        if offset + size > len(binary):
            raise InvalidRequestError(
                f"{field}.parameters.binary_data_size: {size} bytes, but only "
                f"{len(binary) - offset} bytes of binary data are left"
            )
        data = bytes(binary[offset : offset + size])
        offset += size
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=item.name,
        datatype=item.datatype,
        shape=item.shape,
        parameters=_pb_parameters(item.parameters, f"{field}.parameters"),
    )
    return tensor, data, offset


def _pack(
    field: str,
    data: list[Any],
    datatype: str,
    dtype: np.dtype[np.generic],
    shape: list[int],
    count: int,
) -> bytes:
    """JSON tensor data, flat or nested exactly to the shape -> raw little-endian bytes, checked
    against datatype and shape."""
    flat = data
    types = set(map(type, flat))
    nested = list in types and bool(shape)
    if nested:
        flat = _unnest(field, data, shape)
        types = set(map(type, flat))
    allowed, kind = (
        _BOOLEANS if datatype == "BOOL" else _NUMBERS if dtype.kind == "f" else _INTEGERS
    )
    if not types <= allowed:
        position = next(i for i, value in enumerate(flat) if type(value) not in allowed)
        where = _index_path(position, shape) if nested else f"[{position}]"
        raise InvalidRequestError(
            f"{field}{where}: {flat[position]!r} is not valid for {datatype} (needs {kind})"
        )
    if len(flat) != count:
        raise InvalidRequestError(f"{field}: holds {len(flat)} values; shape {shape} needs {count}")
    try:
        with np.errstate(over="raise"):  # FP16 and FP32 would round a large value to infinity
            return np.array(flat, dtype=dtype).tobytes()
    except (OverflowError, FloatingPointError):
        raise InvalidRequestError(f"{field}: a value is out of range for {datatype}") from None


def _unnest(field: str, data: list[Any], shape: list[int]) -> list[Any]:
    """Row-major values of `data`, which must be nested exactly to `shape`: one level of arrays
    per dimension, each as long as its dimension."""
    level: list[Any] = [data]
    for depth, size in enumerate(shape):
        if level and (set(map(type, level)) != {list} or set(map(len, level)) != {size}):
            index = next(
                i for i, item in enumerate(level) if type(item) is not list or len(item) != size
            )
            item = level[index]
            if type(item) is list:
                problem = f"holds {len(item)} values; shape {shape} needs {size}"
            else:
                problem = f"{item!r} is not an array; shape {shape} needs an array of {size}"
            raise InvalidRequestError(f"{field}{_index_path(index, shape[:depth])}: {problem}")
        level = list(chain.from_iterable(level))
    return level


def _index_path(index: int, dimensions: Sequence[int]) -> str:
    """Row-major position `index` in an array of these dimensions, e.g. `[1][6]`."""
    parts: list[int] = []
    for size in reversed(dimensions):
        index, part = divmod(index, size)
        parts.append(part)
    return "".join(f"[{part}]" for part in reversed(parts))


def _flag(parameters: Parameters | None, name: str, field: str) -> bool:
    value = (parameters or {}).get(name, False)
    if type(value) is not bool:
        raise InvalidRequestError(f"{field}.{name}: must be true or false, got {value!r}")
    return value


def _timeout_s(parameters: Parameters) -> float | None:
    value = parameters.get(TIMEOUT)
    if value is None:
        return None
    if type(value) is not int or value <= 0:
        raise InvalidRequestError(
            f"parameters.timeout: must be a positive integer (microseconds), got {value!r}"
        )
    return value / 1_000_000


def _pb_parameters(parameters: Parameters | None, field: str) -> dict[str, pb.InferParameter]:
    """JSON parameters -> protobuf, without the binary extension's own."""
    converted = {}
    for name, value in (parameters or {}).items():
        if name in _EXTENSION_PARAMETERS:
            continue
        if type(value) is bool:
            converted[name] = pb.InferParameter(bool_param=value)
        elif type(value) is int and _INT64[0] <= value <= _INT64[1]:
            converted[name] = pb.InferParameter(int64_param=value)
        elif type(value) is int and 0 <= value <= _UINT64_MAX:
            converted[name] = pb.InferParameter(uint64_param=value)
        elif type(value) is float:
            converted[name] = pb.InferParameter(double_param=value)
        elif type(value) is str:
            converted[name] = pb.InferParameter(string_param=value)
        else:
            raise InvalidRequestError(f"{field}.{name}: integer out of the 64-bit range")
    return converted


def _json_parameters(parameters: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {
        name: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
        for name, value in parameters.items()
    }


def infer_response_to_body(
    response: pb.ModelInferResponse, decoded: DecodedInfer
) -> tuple[bytes, int | None]:
    """(body, length of its JSON part when binary outputs follow it, else None)."""
    raw = response.raw_output_contents
    if len(raw) != len(response.outputs):
        raise BadGatewayError("model server answered without raw_output_contents for every output")
    outputs, blobs = [], []
    for tensor, data in zip(response.outputs, raw, strict=True):
        output: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        parameters = _json_parameters(tensor.parameters)
        if decoded.binary(tensor.name):
            parameters[BINARY_DATA_SIZE] = len(data)
            blobs.append(data)
        else:
            output["data"] = _unpack(tensor.name, tensor.datatype, data)
        if parameters:
            output["parameters"] = parameters
        outputs.append(output)
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = _json_parameters(response.parameters)
    document["outputs"] = outputs
    try:
        body = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()
    except ValueError:
        raise BadGatewayError(
            "model server answered a parameter that JSON cannot express (NaN or infinity)"
        ) from None
    if not blobs:
        return body, None
    return b"".join([body, *blobs]), len(body)


def _unpack(name: str, datatype: str, data: bytes) -> list[Any]:
    dtype = NUMPY_DTYPES.get(datatype)
    if dtype is None or len(data) % dtype.itemsize:
        raise BadGatewayError(f"model server answered output {name!r} as unreadable {datatype}")
    array = np.frombuffer(data, dtype=dtype)
    if dtype.kind == "f" and not np.isfinite(array).all():
        raise UnrepresentableOutputError(
            f"output {name!r}: holds NaN or infinite values, which JSON cannot express; ask for "
            "it as binary data (parameters.binary_data: true on the output)"
        )
    values: list[Any] = array.tolist()
    return values


def model_metadata_from_pb(message: pb.ModelMetadataResponse) -> ModelMetadataResponse:
    """Protobuf model metadata -> its REST body."""
    return ModelMetadataResponse(
        name=message.name,
        versions=list(message.versions),
        platform=message.platform,
        inputs=[_tensor_metadata(tensor) for tensor in message.inputs],
        outputs=[_tensor_metadata(tensor) for tensor in message.outputs],
    )


def _tensor_metadata(tensor: pb.ModelMetadataResponse.TensorMetadata) -> MetadataTensor:
    return MetadataTensor(name=tensor.name, datatype=tensor.datatype, shape=list(tensor.shape))


def server_metadata_from_pb(message: pb.ServerMetadataResponse) -> ServerMetadataResponse:
    """Protobuf server metadata -> its REST body."""
    return ServerMetadataResponse(
        name=message.name, version=message.version, extensions=list(message.extensions)
    )


_RESULT_NAMES: dict[int, FeedbackResultName] = {
    mon_pb.FEEDBACK_RESULT_OK: "ok",
    mon_pb.FEEDBACK_RESULT_UNKNOWN_ID: "unknown_id",
    mon_pb.FEEDBACK_RESULT_EXPIRED: "expired",
    mon_pb.FEEDBACK_RESULT_EVICTED: "evicted",
    mon_pb.FEEDBACK_RESULT_OTHER_MODEL: "other_model",
    mon_pb.FEEDBACK_RESULT_INVALID_ROW: "invalid_row",
    mon_pb.FEEDBACK_RESULT_INVALID_LABEL: "invalid_label",
    mon_pb.FEEDBACK_RESULT_DUPLICATE: "duplicate",
}


def feedback_request_to_pb(
    model_name: str, model_version: str, body: bytes
) -> mon_pb.FeedbackRequest:
    """Decode a feedback request body; InvalidRequestError names the field."""
    try:
        parsed = _FEEDBACK.validate_json(body)
    except ValidationError as error:
        raise InvalidRequestError(validation_message(error.errors())) from None
    return mon_pb.FeedbackRequest(
        name=model_name,
        version=model_version,
        items=[
            mon_pb.FeedbackItem(id=item.id, label=item.label, row=item.row) for item in parsed.items
        ],
    )


def feedback_response_to_body(request: mon_pb.FeedbackRequest, merged: Merged) -> FeedbackResponse:
    """One REST result per item, echoing its id and row."""
    results = []
    for index, (item, answer) in enumerate(zip(request.items, merged, strict=True)):
        if answer is None:
            results.append(
                FeedbackItemResult(
                    id=item.id,
                    row=item.row,
                    result="unavailable",
                    message=f"items[{index}].id: not kept by the model servers that answered, "
                    "and a model server that may keep it did not answer; retry later",
                )
            )
            continue
        name = _RESULT_NAMES.get(answer.result)
        if name is None:
            raise BadGatewayError(
                f"model server answered items[{index}] with result {answer.result}"
            )
        ok = name == "ok"
        results.append(
            FeedbackItemResult(
                id=item.id,
                row=item.row,
                result=name,
                message=None if ok else answer.message,
                model_version=answer.model_version if ok else None,
                # "" over gRPC: the row predicted nothing (a NaN or infinite probability)
                predicted_label=(answer.predicted_label or None) if ok else None,
                confidence=answer.confidence if ok and answer.predicted_label else None,
                correct=answer.correct if ok else None,
                trace_id=(answer.trace_id or None) if ok else None,
            )
        )
    return FeedbackResponse(model_name=request.name, results=results)
