"""`inference.GRPCInferenceService`: decode, call the core, encode; and the limit on ModelInfer
calls in flight.

Each method is wrapped by `rpc.rpc`: the server span and the one error mapping.
"""

import logging
import sys
import time

import grpc
from opentelemetry import trace

from model_server import telemetry
from model_server.core import InferenceCore
from model_server.errors import ServerBusyError
from model_server.grpc.converters import (
    infer_request_from_pb,
    infer_response_to_pb,
    model_metadata_to_pb,
)
from model_server.grpc.handlers import UndecodableRequest
from model_server.grpc.rpc import rpc
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
DECODE_SPAN = "infer.decode"
ENCODE_SPAN = "infer.encode"
LIMIT_SETTING = "MODEL_SERVER_MAX_CONCURRENT_RPCS"
TRACE_ID_PARAMETER = "inferwatch_trace_id"
"""Response parameter: the request's trace id (32 hex digits), to find its spans and logs; with
the response id, what a caller keeps to send its true label later (docs/feedback.md)."""


def _record_infer(
    servicer: "InferenceServicer",
    request: pb.ModelInferRequest | UndecodableRequest,
    response: pb.ModelInferResponse | None,
    code: grpc.StatusCode,
    seconds: float,
) -> None:
    repository = servicer.core.repository
    if response is not None:
        name, version = response.model_name, response.model_version
    elif isinstance(request, pb.ModelInferRequest):
        name, version = repository.telemetry_model(request.model_name, request.model_version)
    else:
        name, version = repository.telemetry_model("", "")
    telemetry.record_request(name, version, code.name, seconds)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The Open Inference Protocol over gRPC.

    At most `max_infer_calls` ModelInfer calls are handled at once; beyond it ModelInfer is
    refused with RESOURCE_EXHAUSTED. Only ModelInfer: a health or readiness check must be
    answered however busy the server is, or a probe would restart a pod that is merely busy.
    """

    def __init__(self, core: InferenceCore, max_infer_calls: int | None = None) -> None:
        self.core = core
        self._max_infer_calls = sys.maxsize if max_infer_calls is None else max_infer_calls
        self._infer_calls = 0

    @rpc(SERVICE, "ServerLive", traced=False)
    async def ServerLive(  # noqa: N802 (protocol method names)
        self, request: pb.ServerLiveRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self.core.server_live())

    @rpc(SERVICE, "ServerReady", traced=False)
    async def ServerReady(  # noqa: N802
        self, request: pb.ServerReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.core.server_ready())

    @rpc(SERVICE, "ModelReady", traced=False)
    async def ModelReady(  # noqa: N802
        self, request: pb.ModelReadyRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.core.model_ready(request.name, request.version))

    @rpc(SERVICE, "ServerMetadata")
    async def ServerMetadata(  # noqa: N802
        self, request: pb.ServerMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ServerMetadataResponse:
        metadata = self.core.server_metadata()
        return pb.ServerMetadataResponse(
            name=metadata.name, version=metadata.version, extensions=metadata.extensions
        )

    @rpc(SERVICE, "ModelMetadata")
    async def ModelMetadata(  # noqa: N802
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        return model_metadata_to_pb(self.core.model_metadata(request.name, request.version))

    @rpc(SERVICE, "ModelInfer", observe=_record_infer)
    async def ModelInfer(  # noqa: N802
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        model = self.core.repository.telemetry_model(request.model_name, "")[0]
        # Phase spans only under a recorded request span; leaf spans are started and ended
        # without becoming current (cheaper, no children).
        current = trace.get_current_span()
        traced = current.is_recording()
        if traced:
            current.set_attribute(telemetry.MODEL_NAME, model)
        if self._infer_calls >= self._max_infer_calls:
            raise ServerBusyError(
                f"server busy: {self._max_infer_calls} ModelInfer calls in flight, the most it "
                f"takes at once ({LIMIT_SETTING}={self._max_infer_calls}); retry later"
            )
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining
        self._infer_calls += 1
        telemetry.request_started(model)
        try:
            span = telemetry.tracer.start_span(DECODE_SPAN) if traced else trace.INVALID_SPAN
            try:
                decoded = infer_request_from_pb(request, deadline)
            finally:
                span.end()
            response = await self.core.infer(decoded)
            if traced:
                current.set_attribute(telemetry.MODEL_VERSION, response.model_version)
            span = telemetry.tracer.start_span(ENCODE_SPAN) if traced else trace.INVALID_SPAN
            try:
                message = infer_response_to_pb(response)
            finally:
                span.end()
            trace_id = current.get_span_context().trace_id
            if trace_id:
                message.parameters[TRACE_ID_PARAMETER].string_param = f"{trace_id:032x}"
            return message
        finally:
            self._infer_calls -= 1
            telemetry.request_finished(model)
