"""The one error hierarchy of the inference core.

Every failure a client can cause or observe is one of these. Each transport maps
`ErrorCode` to its own status exactly once (see `model_server.grpc.status`), so
the core never imports gRPC and the messages stay the same on every edge.
"""

from enum import Enum


class ErrorCode(Enum):
    """Transport-agnostic outcome of a failed call."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    FAILED_PRECONDITION = "failed_precondition"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL = "internal"


class InferenceError(Exception):
    """Base class; `str(error)` is safe to send to the client."""

    code: ErrorCode = ErrorCode.INTERNAL


class InvalidInputError(InferenceError):
    """The request does not match the model's signature (names the field)."""

    code = ErrorCode.INVALID_ARGUMENT


class ModelNotFoundError(InferenceError):
    """No such model, or no such version of it, in the repository."""

    code = ErrorCode.NOT_FOUND


class ModelNotReadyError(InferenceError):
    """The model exists but cannot serve (failed to load, unloading, shutting down)."""

    code = ErrorCode.UNAVAILABLE


class ModelLoadFailedError(InferenceError):
    """A model version's files did not load (bad config, unreadable module); fix them first."""

    code = ErrorCode.FAILED_PRECONDITION


class QueueFullError(InferenceError):
    """The model's request queue is at its bound; retry later."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(InferenceError):
    """The client's deadline passed before the request was computed."""

    code = ErrorCode.DEADLINE_EXCEEDED


class ModelExecutionError(InferenceError):
    """The model raised while computing a batch; details are only in the server log."""

    code = ErrorCode.INTERNAL
