"""`inference.GRPCInferenceService`: decode, call the core, encode; nothing else."""

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

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

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[["InferenceServicer", Req, grpc.aio.ServicerContext], Awaitable[Resp]]


def _map_errors(handler: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Turn core errors into their gRPC status; hide anything unexpected behind INTERNAL."""

    @functools.wraps(handler)
    async def wrapper(
        self: "InferenceServicer", request: Req, context: grpc.aio.ServicerContext
    ) -> Resp:
        try:
            return await handler(self, request, context)
        except InferenceError as exc:
            await context.abort(GRPC_STATUS[exc.code], str(exc))
        except Exception:
            logger.exception("unexpected error in %s", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the server log")
        raise AssertionError("context.abort always raises")  # pragma: no cover

    return wrapper


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol over gRPC."""

    def __init__(self, core: InferenceCore) -> None:
        self._core = core

    @_map_errors
    async def ServerLive(  # noqa: N802 (protocol method names)
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._core.server_live())

    @_map_errors
    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._core.server_ready())

    @_map_errors
    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._core.model_ready(request.name, request.version))

    @_map_errors
    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        metadata = self._core.server_metadata()
        return pb.ServerMetadataResponse(
            name=metadata.name, version=metadata.version, extensions=metadata.extensions
        )

    @_map_errors
    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        return model_metadata_to_pb(self._core.model_metadata(request.name, request.version))

    @_map_errors
    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        response = await self._core.infer(infer_request_from_pb(request, deadline))
        return infer_response_to_pb(response)
