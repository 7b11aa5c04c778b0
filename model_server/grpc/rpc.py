"""One decorator for every RPC handler: the server span and the error mapping, once.

For every call but the health checks it opens the server span, continuing the caller's W3C
trace context from the call metadata; core errors become their gRPC status, a request whose
bytes did not parse becomes INVALID_ARGUMENT, anything unexpected becomes INTERNAL with a
generic message (the stack trace stays in the log). A handler gRPC cancelled is recorded as
DEADLINE_EXCEEDED when the client's deadline had passed, else CANCELLED. An observer that raises
is logged and changes nothing else.
"""

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter

from model_server import telemetry
from model_server.errors import InferenceError, InvalidInputError
from model_server.grpc.handlers import UndecodableRequest
from model_server.grpc.status import GRPC_STATUS

logger = logging.getLogger(__name__)

#: Status codes that are the server's fault (OpenTelemetry rpc conventions for servers).
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]
Observer = Callable[[Any, Req, Resp | None, grpc.StatusCode, float], None]
Metadata = Sequence[tuple[str, str | bytes]]


class _MetadataGetter(Getter[Metadata]):
    def get(self, carrier: Metadata, key: str) -> list[str] | None:
        values = [v for k, v in carrier if k == key and isinstance(v, str)]
        return values or None

    def keys(self, carrier: Metadata) -> list[str]:
        return [k for k, _ in carrier]


_GETTER = _MetadataGetter()


class _Decorator(Protocol):
    def __call__(self, handler: Handler[Req, Resp], /) -> Handler[Req, Resp]: ...


def rpc(
    service: str,
    method: str,
    *,
    traced: bool = True,
    observe: Observer[Any, Any] | None = None,
) -> _Decorator:
    """Error mapping, the server span (unless a health check) and an optional observer."""
    span_name = f"{service}/{method}"
    span_attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}

    def decorate(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(handler)
        async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            started = time.perf_counter()
            span: trace.Span | None = None
            token: object = None
            if traced:
                parent = propagate.extract(context.invocation_metadata() or (), getter=_GETTER)
                span = telemetry.tracer.start_span(
                    span_name, parent, kind=trace.SpanKind.SERVER, attributes=span_attributes
                )
                token = otel_context.attach(trace.set_span_in_context(span))
            code, message, response = grpc.StatusCode.OK, "", None
            try:
                if isinstance(request, UndecodableRequest):
                    raise InvalidInputError(
                        f"the request is not a valid {request.type_name} message: {request.reason}"
                    )
                response = await handler(self, request, context)
                return response
            except InferenceError as exc:
                code, message = GRPC_STATUS[exc.code], str(exc)
            except asyncio.CancelledError:
                code = _cancelled_code(context)
                raise
            except Exception as exc:
                logger.exception("unexpected error in %s", method)
                code, message = grpc.StatusCode.INTERNAL, "internal error; see the server log"
                if span is not None:
                    span.record_exception(exc)
            finally:
                if observe is not None:
                    try:
                        observe(self, request, response, code, time.perf_counter() - started)
                    except Exception:  # telemetry must not change the answer or leak the span
                        logger.exception("observing %s failed", method)
                if span is not None:
                    span.set_attribute("rpc.grpc.status_code", code.value[0])
                    if code in _SERVER_FAULTS:
                        span.set_status(trace.StatusCode.ERROR, message)
                    span.end()
                    otel_context.detach(token)  # type: ignore[arg-type]
            await context.abort(code, message)
            raise AssertionError("context.abort always raises")  # pragma: no cover

        return wrapper

    return decorate


def _cancelled_code(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """Why gRPC cancelled the handler: the client's deadline passed, or the client went away."""
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.CANCELLED
