"""Protocol buffers <-> core types for the Open Inference Protocol gRPC API, and for the
Feedback call of InferWatch's monitoring API."""

import math

import numpy as np

from model_server.datatypes import NUMPY_DTYPES, unsupported_datatype
from model_server.errors import InvalidInputError, echo
from model_server.feedback import Outcome
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import monitoring_pb2 as mon_pb
from model_server.types import InferRequest, InferResponse, ModelMetadata, Tensor
from monitoring.feedback import FeedbackItem, FeedbackResult

#: Which typed `contents` field carries each datatype; FP16 travels only as raw bytes.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
MAX_DIMENSIONS = 64
"""numpy's limit on the rank of an array."""


def infer_request_from_pb(message: pb.ModelInferRequest, deadline: float | None) -> InferRequest:
    """Decode a ModelInferRequest; InvalidInputError names the offending field."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs"
        )
    inputs = [
        _input_tensor(index, tensor, raw[index] if raw else None)
        for index, tensor in enumerate(message.inputs)
    ]
    return InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        inputs=inputs,
        id=message.id,
        requested_outputs=[output.name for output in message.outputs],
        deadline=deadline,
        parameters={
            name: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
            for name, value in message.parameters.items()
        },
    )


def _input_tensor(
    index: int, tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None
) -> Tensor:
    dtype = NUMPY_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise unsupported_datatype(_field(index, tensor), tensor.datatype)
    shape = tuple(tensor.shape)
    # Before the product: over many huge dimensions it takes time quadratic in the rank.
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidInputError(
            f"{_field(index, tensor)}: shape {echo(shape)} has {len(shape)} dimensions; at "
            f"most {MAX_DIMENSIONS} are supported"
        )
    if any(dim < 0 for dim in shape):
        raise InvalidInputError(
            f"{_field(index, tensor)}: shape {echo(shape)} has a negative dimension"
        )
    count = math.prod(shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInputError(
                f"{_field(index, tensor)}: sets contents although the request uses "
                "raw_input_contents"
            )
        expected = count * dtype.itemsize
        if len(raw) != expected:
            raise InvalidInputError(
                f"{_field(index, tensor)}: raw_input_contents[{index}] holds {len(raw)} bytes; "
                f"shape {echo(shape)} of {tensor.datatype} needs {expected}"
            )
        flat = np.frombuffer(raw, dtype=dtype)
    else:
        contents_field = _CONTENTS_FIELD.get(tensor.datatype)
        if contents_field is None:
            raise InvalidInputError(
                f"{_field(index, tensor)}: {tensor.datatype} data must be sent in "
                "raw_input_contents"
            )
        stray = [f.name for f, _ in tensor.contents.ListFields() if f.name != contents_field]
        if stray:  # they would be dropped without a word
            raise InvalidInputError(
                f"{_field(index, tensor)}: {tensor.datatype} data goes in "
                f"contents.{contents_field}, not contents.{stray[0]}"
            )
        values = getattr(tensor.contents, contents_field)
        if len(values) != count:
            raise InvalidInputError(
                f"{_field(index, tensor)}: contents.{contents_field} has {len(values)} values; "
                f"shape {echo(shape)} needs {count}"
            )
        try:
            flat = np.array(values, dtype=dtype)
        except OverflowError:
            raise InvalidInputError(
                f"{_field(index, tensor)}: contents.{contents_field} has a value out of range "
                f"for {tensor.datatype}"
            ) from None
    try:
        data = flat.reshape(shape)
    except ValueError:  # e.g. [2**62, 0]: no elements, yet too big for numpy
        raise InvalidInputError(
            f"{_field(index, tensor)}: shape {echo(shape)} is not a possible tensor: its "
            f"nonzero dimensions times the {dtype.itemsize}-byte element exceed the largest "
            f"array ({np.iinfo(np.intp).max} bytes)"
        ) from None
    return Tensor(tensor.name, tensor.datatype, data)


def _field(index: int, tensor: pb.ModelInferRequest.InferInputTensor) -> str:
    """How an error message names an input (only built for one)."""
    return f"inputs[{index}] ({echo(tensor.name)})"


def infer_response_to_pb(response: InferResponse) -> pb.ModelInferResponse:
    """Encode outputs as raw little-endian bytes, one entry per output."""
    return pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id,
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(
                name=tensor.name, datatype=tensor.datatype, shape=tensor.data.shape
            )
            for tensor in response.outputs
        ],
        raw_output_contents=[tensor.data.tobytes() for tensor in response.outputs],
    )


def model_metadata_to_pb(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    """Encode a model's signature."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.inputs],
        outputs=[tensor(name=t.name, datatype=t.datatype, shape=t.shape) for t in metadata.outputs],
    )


_FEEDBACK_RESULTS = {
    result: mon_pb.FeedbackResult.Value(f"FEEDBACK_RESULT_{result.name}")
    for result in FeedbackResult
}


def feedback_items_from_pb(message: mon_pb.FeedbackRequest) -> list[FeedbackItem]:
    """The items of a FeedbackRequest (each one is checked by the join, not here)."""
    return [FeedbackItem(item.id, item.label, item.row) for item in message.items]


def feedback_response_to_pb(outcomes: list[Outcome]) -> mon_pb.FeedbackResponse:
    """One result per outcome, in order; an accepted one with its prediction."""
    results = []
    for outcome in outcomes:
        result = mon_pb.FeedbackItemResult(
            result=_FEEDBACK_RESULTS[outcome.result], message=outcome.message
        )
        joined = outcome.joined
        if joined is not None:
            result.model_version = joined.model[1]
            result.predicted_label = joined.predicted
            result.confidence = joined.confidence
            result.correct = joined.correct
            trace_id = joined.context[0]
            if trace_id:
                result.trace_id = f"{trace_id:032x}"
        results.append(result)
    return mon_pb.FeedbackResponse(results=results)
