"""`inference.GRPCInferenceService`: decode, call the core, encode; nothing else.

One decorator per method maps core errors to gRPC status codes (once, here), and for every
call but the health checks opens the server span, continuing the caller's W3C trace context.
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
from model_server.core import InferenceCore
from model_server.errors import InferenceError
from model_server.grpc.converters import (
    infer_request_from_pb,
    infer_response_to_pb,
    model_metadata_to_pb,
)
from model_server.grpc.status import GRPC_STATUS
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
DECODE_SPAN = "infer.decode"
ENCODE_SPAN = "infer.encode"

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
Handler = Callable[["InferenceServicer", Req, grpc.aio.ServicerContext], Awaitable[Resp]]
Observer = Callable[["InferenceServicer", Req, Resp | None, grpc.StatusCode, float], None]
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


def _rpc(
    method: str, *, traced: bool = True, observe: Observer[Any, Any] | None = None
) -> _Decorator:
    """Error mapping, the server span (unless a health check) and an optional observer."""
    span_name = f"{SERVICE}/{method}"
    span_attributes = {"rpc.system": "grpc", "rpc.service": SERVICE, "rpc.method": method}

    def decorate(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
        @functools.wraps(handler)
        async def wrapper(
            self: "InferenceServicer", request: Req, context: grpc.aio.ServicerContext
        ) -> Resp:
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
                response = await handler(self, request, context)
                return response
            except InferenceError as exc:
                code, message = GRPC_STATUS[exc.code], str(exc)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except Exception as exc:
                logger.exception("unexpected error in %s", method)
                code, message = grpc.StatusCode.INTERNAL, "internal error; see the server log"
                if span is not None:
                    span.record_exception(exc)
            finally:
                if observe is not None:
                    observe(self, request, response, code, time.perf_counter() - started)
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


def _record_infer(
    servicer: "InferenceServicer",
    request: pb.ModelInferRequest,
    response: pb.ModelInferResponse | None,
    code: grpc.StatusCode,
    seconds: float,
) -> None:
    if response is not None:
        attributes = {
            telemetry.MODEL_NAME: response.model_name,
            telemetry.MODEL_VERSION: response.model_version,
        }
    else:
        attributes = servicer.core.repository.telemetry_attributes(
            request.model_name, request.model_version
        )
    attributes[telemetry.STATUS] = code.name
    telemetry.requests.add(1, attributes)
    telemetry.request_duration.record(seconds, attributes)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol over gRPC."""

    def __init__(self, core: InferenceCore) -> None:
        self.core = core

    @_rpc("ServerLive", traced=False)
    async def ServerLive(  # noqa: N802 (protocol method names)
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.core.server_live())

    @_rpc("ServerReady", traced=False)
    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core.server_ready())

    @_rpc("ModelReady", traced=False)
    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.core.model_ready(request.name, request.version))

    @_rpc("ServerMetadata")
    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        metadata = self.core.server_metadata()
        return pb.ServerMetadataResponse(
            name=metadata.name, version=metadata.version, extensions=metadata.extensions
        )

    @_rpc("ModelMetadata")
    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        return model_metadata_to_pb(self.core.model_metadata(request.name, request.version))

    @_rpc("ModelInfer", observe=_record_infer)
    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        model = {
            telemetry.MODEL_NAME: self.core.repository.telemetry_model_name(request.model_name)
        }
        telemetry.in_flight.add(1, model)
        try:
            with telemetry.tracer.start_as_current_span(DECODE_SPAN):
                decoded = infer_request_from_pb(request, deadline)
            response = await self.core.infer(decoded)
            with telemetry.tracer.start_as_current_span(ENCODE_SPAN):
                return infer_response_to_pb(response)
        finally:
            telemetry.in_flight.add(-1, model)
