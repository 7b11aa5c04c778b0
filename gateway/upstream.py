"""One model server as the gateway sees it: a gRPC channel, traced calls, status mapping.

The gRPC edge of the gateway: every call records `inferwatch.gateway.upstream.duration`, every
ModelInfer `inferwatch.gateway.routed`; ModelInfer, ModelMetadata, ModelDrift and Feedback also
get a CLIENT span
whose W3C context travels in the call's metadata, so the model server's span continues the
same trace. gRPC status codes become
`GatewayError`s here, once.
"""

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from opentelemetry import propagate, trace

from gateway import telemetry
from gateway.errors import (
    BadGatewayError,
    DeadlineExceededError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    TooManyRequestsError,
    UnavailableError,
    UpstreamFailedError,
)
from gateway.telemetry import KnownModels
from gateway.tls import BackendTls
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from model_server.proto import monitoring_pb2 as mon_pb
from model_server.proto import monitoring_pb2_grpc as mon_grpc

logger = logging.getLogger(__name__)

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
MONITORING_SERVICE = mon_pb.DESCRIPTOR.services_by_name["ModelMonitoring"].full_name

_ERRORS: dict[grpc.StatusCode, type[GatewayError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TooManyRequestsError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INTERNAL: UpstreamFailedError,
    grpc.StatusCode.UNKNOWN: UpstreamFailedError,
    grpc.StatusCode.DATA_LOSS: UpstreamFailedError,
}
"""gRPC status -> gateway error; any other status is a BadGatewayError."""

_MESSAGE_TOO_LARGE = re.compile(
    r"(CLIENT|SERVER): (Sent|Received) message larger than max \((\d+) vs\. (\d+)\)"
)
"""gRPC core's RESOURCE_EXHAUSTED details for a message above a size limit: which side and
direction found it, the message's size and the limit. Any other RESOURCE_EXHAUSTED is the
model server's refusal for now (its queue is full): 429."""

_RECONNECT_BACKOFF_MS = (100, 1000)
"""(initial, max) delay between reconnection attempts to a model server that went away: gRPC's
default maximum of two minutes would keep a restarted model server out of rotation that long."""


@dataclass
class _Call:
    """What one call needs and tells: the metadata to send, the model to label its span with."""

    metadata: tuple[tuple[str, str], ...] | None
    model: tuple[str, str]
    """(name, version) as requested, replaced by the answer's once the model server answers."""


class Backend:
    """One model server; `open()` inside the event loop that will make the calls."""

    def __init__(
        self,
        address: str,
        *,
        max_message_bytes: int,
        known: KnownModels,
        tls: BackendTls | None,
    ) -> None:
        self.address = address
        """HOST:PORT as configured (the `backend` metric attribute)."""
        host, _, port = address.rpartition(":")
        self._span_attributes: dict[str, str | int] = {
            "rpc.system": "grpc",
            "rpc.service": SERVICE,
            "server.address": host,
            "server.port": int(port),
        }
        self._max_message_bytes = max_message_bytes
        self._known = known
        self._tls = tls
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.GRPCInferenceServiceStub | None = None
        self._monitoring: mon_grpc.ModelMonitoringStub | None = None
        self._reachable = True

    def open(self) -> None:
        """Creates the channel, over TLS when configured (it connects on first use)."""
        options = [
            ("grpc.max_send_message_length", self._max_message_bytes),
            ("grpc.max_receive_message_length", self._max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS[0]),
            ("grpc.min_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS[0]),
            ("grpc.max_reconnect_backoff_ms", _RECONNECT_BACKOFF_MS[1]),
        ]
        self._channel = (
            grpc.aio.insecure_channel(self.address, options=options)
            if self._tls is None
            else self._tls.secure_channel(self.address, options)
        )
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._monitoring = mon_grpc.ModelMonitoringStub(self._channel)

    async def close(self) -> None:
        """Closes the channel; calls still running are cancelled."""
        if self._channel is not None:
            await self._channel.close()

    @property
    def stub(self) -> pb_grpc.GRPCInferenceServiceStub:
        """The inference service stub (after `open()`)."""
        assert self._stub is not None, "Backend.open() was not called"
        return self._stub

    async def infer(self, request: pb.ModelInferRequest, timeout_s: float) -> pb.ModelInferResponse:
        """ModelInfer, traced."""
        model = (request.model_name, request.model_version)
        async with self._call("ModelInfer", traced=True, model=model) as call:
            response: pb.ModelInferResponse = await self.stub.ModelInfer(
                request, timeout=timeout_s, metadata=call.metadata
            )
            self._known.confirm(response.model_name, [response.model_version])
            call.model = (response.model_name, response.model_version)
            return response

    async def model_metadata(
        self, name: str, version: str, timeout_s: float
    ) -> pb.ModelMetadataResponse:
        """ModelMetadata, traced."""
        async with self._call("ModelMetadata", traced=True, model=(name, version)) as call:
            response: pb.ModelMetadataResponse = await self.stub.ModelMetadata(
                pb.ModelMetadataRequest(name=name, version=version),
                timeout=timeout_s,
                metadata=call.metadata,
            )
            self._known.confirm(name, list(response.versions))
            return response

    async def model_drift(self, name: str, version: str, timeout_s: float) -> str:
        """ModelMonitoring/ModelDrift, traced: the drift report as JSON."""
        assert self._monitoring is not None, "Backend.open() was not called"
        async with self._call(
            "ModelDrift", traced=True, model=(name, version), service=MONITORING_SERVICE
        ) as call:
            response: mon_pb.ModelDriftResponse = await self._monitoring.ModelDrift(
                mon_pb.ModelDriftRequest(name=name, version=version),
                timeout=timeout_s,
                metadata=call.metadata,
            )
            call.model = (name, _reported_version(response.report_json, version))
            return response.report_json

    async def feedback(
        self, request: mon_pb.FeedbackRequest, timeout_s: float
    ) -> mon_pb.FeedbackResponse:
        """ModelMonitoring/Feedback, traced: one result per item."""
        assert self._monitoring is not None, "Backend.open() was not called"
        async with self._call(
            "Feedback",
            traced=True,
            model=(request.name, request.version),
            service=MONITORING_SERVICE,
        ) as call:
            response: mon_pb.FeedbackResponse = await self._monitoring.Feedback(
                request, timeout=timeout_s, metadata=call.metadata
            )
            self._known.confirm(request.name, [])
            return response

    async def model_ready(self, name: str, version: str, timeout_s: float) -> bool:
        """ModelReady; False when the model server cannot be asked. Health checks are not
        traced (the model server does not trace them either)."""
        try:
            async with self._call("ModelReady", traced=False, model=(name, version)):
                answer: pb.ModelReadyResponse = await self.stub.ModelReady(
                    pb.ModelReadyRequest(name=name, version=version), timeout=timeout_s
                )
        except GatewayError:
            return False
        if answer.ready:  # not the version: "01" and "1" may name the same one
            self._known.confirm(name, [])
        return answer.ready

    async def server_ready(self, timeout_s: float) -> bool:
        """ServerReady; False when the model server cannot be asked."""
        try:
            async with self._call("ServerReady", traced=False, model=("", "")):
                answer: pb.ServerReadyResponse = await self.stub.ServerReady(
                    pb.ServerReadyRequest(), timeout=timeout_s
                )
        except GatewayError:
            return False
        return answer.ready

    @asynccontextmanager
    async def _call(
        self, method: str, *, traced: bool, model: tuple[str, str], service: str = SERVICE
    ) -> AsyncIterator[_Call]:
        """Span (when traced), duration metric and status mapping around one call."""
        started = time.perf_counter()
        span: trace.Span | None = None
        call = _Call(metadata=None, model=model)
        if traced:
            span = telemetry.tracer.start_span(
                f"{service}/{method}",
                kind=trace.SpanKind.CLIENT,
                attributes={**self._span_attributes, "rpc.service": service, "rpc.method": method},
            )
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            call.metadata = tuple(carrier.items())
        code = grpc.StatusCode.OK
        try:
            yield call
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise self._translate(error) from None
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        else:
            self._mark_reachable(True, "")
        finally:
            telemetry.upstream_duration.record(
                time.perf_counter() - started,
                {
                    telemetry.BACKEND: self.address,
                    telemetry.RPC_METHOD: method,
                    telemetry.STATUS: code.name,
                },
            )
            labels = self._known.attributes(*call.model)
            if method == "ModelInfer":
                telemetry.routed.add(1, {**labels, telemetry.STATUS: code.name})
            if span is not None:
                span.set_attributes(labels)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                if code is not grpc.StatusCode.OK:
                    span.set_status(trace.StatusCode.ERROR, code.name)
                span.end()

    def _translate(self, error: grpc.aio.AioRpcError) -> GatewayError:
        code, details = error.code(), error.details() or ""
        assert self._channel is not None
        reached = self._channel.get_state() is grpc.ChannelConnectivity.READY
        if code is grpc.StatusCode.UNAVAILABLE and not reached:
            self._mark_reachable(False, details)
            return UnavailableError("model server unreachable; retry later")
        if code is grpc.StatusCode.RESOURCE_EXHAUSTED and (
            too_large := _MESSAGE_TOO_LARGE.search(details)
        ):
            return self._too_large(*too_large.groups())
        self._mark_reachable(True, "")
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return DeadlineExceededError("the model server did not answer within the timeout")
        kind = _ERRORS.get(code, BadGatewayError)
        if kind in (UpstreamFailedError, BadGatewayError):
            logger.warning("model server %s answered %s: %s", self.address, code.name, details)
            return kind(f"model server answered {code.name}: {details}")
        return kind(details)

    def _too_large(self, side: str, action: str, size: str, limit: str) -> GatewayError:
        """A message above a limit: a request (ours to send, the model server's to receive)
        is 413; an answer is 502, logged at INFO only: any client can provoke one at will."""
        whose = "the gateway's" if side == "CLIENT" else "the model server's"
        if (side, action) in (("CLIENT", "Sent"), ("SERVER", "Received")):
            return PayloadTooLargeError(
                f"body: the request encodes to a {size}-byte gRPC message, above {whose} "
                f"limit of {limit} bytes"
            )
        logger.info(
            "model server %s: an answer of %s bytes is above %s limit of %s bytes",
            self.address,
            size,
            whose,
            limit,
        )
        return BadGatewayError(
            f"the model server's answer of {size} bytes is above {whose} limit of {limit} bytes"
        )

    def _mark_reachable(self, reachable: bool, details: str) -> None:
        """Logs the changes only: a model server that stays down is not logged per request."""
        if reachable and not self._reachable:
            logger.info("model server %s reachable again", self.address)
        elif not reachable and self._reachable:
            logger.warning("model server %s unreachable: %s", self.address, details)
        self._reachable = reachable


def _reported_version(report_json: str, asked: str) -> str:
    """The version a drift report is about; a report that is not a JSON object is the model
    server's fault (502), not ours (500)."""
    try:
        report = json.loads(report_json)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise BadGatewayError("model server answered a drift report that is not a JSON object")
    return str(report.get("version", asked))
