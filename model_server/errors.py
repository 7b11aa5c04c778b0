"""The one error hierarchy of the inference core.

Every failure a client can cause or observe is one of these. Each transport maps
`ErrorCode` to its own status exactly once (see `model_server.grpc.status`), so
the core never imports gRPC and the messages stay the same on every edge.
"""

from collections.abc import Sequence
from enum import Enum

MAX_ECHO_CHARS = 100
"""Characters of a client's string that an error message repeats."""
MAX_ECHO_VALUES = 16
"""Values of a client's list (a shape) that an error message repeats."""


class ErrorCode(Enum):
    """Transport-agnostic outcome of a failed call."""

    INVALID_ARGUMENT = "invalid_argument"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    FAILED_PRECONDITION = "failed_precondition"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    INTERNAL = "internal"


def echo(value: str | float | Sequence[int]) -> str:
    """A client-supplied value as an error message repeats it: a string quoted, a number as
    written, a list (a shape) as a list; of a long string or list only the first
    `MAX_ECHO_CHARS` characters or `MAX_ECHO_VALUES` values, then its length. Unbounded, a long
    one made the gRPC status details exceed the 16 KiB metadata limit, and the client saw
    RESOURCE_EXHAUSTED "Stream removed" instead of the error."""
    if isinstance(value, str):
        if len(value) <= MAX_ECHO_CHARS:
            return repr(value)
        return f"{value[:MAX_ECHO_CHARS]!r}…({len(value)} chars)"
    if isinstance(value, int | float):
        return repr(value)
    if len(value) <= MAX_ECHO_VALUES:
        return str(list(value))
    return f"{list(value[:MAX_ECHO_VALUES])}…({len(value)} values)"


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


class ServerBusyError(InferenceError):
    """As many ModelInfer calls as the server takes at once are in flight; retry later."""

    code = ErrorCode.RESOURCE_EXHAUSTED


class DeadlineExceededError(InferenceError):
    """The client's deadline passed before the request was computed."""

    code = ErrorCode.DEADLINE_EXCEEDED


class ModelExecutionError(InferenceError):
    """The model raised while computing a batch; details are only in the server log."""

    code = ErrorCode.INTERNAL
