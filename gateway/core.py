"""The transport-agnostic gateway core: which version, which model server, and the call.

The REST layer converts JSON to protobuf and calls one method here; every failure is a
`GatewayError`. A request without a version gets one from the traffic split (when the model has
one); the pool orders the model servers to try; a model server that is unreachable, has the
model not ready (UNAVAILABLE) or does not have it (NOT_FOUND) passes the request to the next one
while the deadline allows.
"""

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway import __version__
from gateway.errors import DeadlineExceededError, NotFoundError, UnavailableError
from gateway.feedback import Merged, merge_answers
from gateway.pool import BackendPool
from gateway.settings import GatewaySettings
from gateway.split import TrafficSplit
from gateway.telemetry import KnownModels
from gateway.upstream import Backend
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import monitoring_pb2 as mon_pb

SERVER_NAME = "inferwatch-gateway"
EXTENSIONS = ("binary_tensor_data",)
"""Protocol extensions: Triton's binary tensor data over REST (what tritonclient.http sends by
default)."""

Answer = TypeVar("Answer")


class GatewayCore:
    """Answers every REST call through the model servers of one `GatewaySettings`."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.known = KnownModels(settings.traffic_split)
        self.pool = BackendPool(
            settings.backends,
            max_message_bytes=settings.max_message_bytes,
            probe_timeout_s=settings.probe_timeout_s,
            readiness_ttl_s=settings.readiness_ttl_s,
            known=self.known,
            tls=settings.backend_tls(),
        )
        self._split = TrafficSplit(settings.traffic_split)
        self._max_timeout_s = settings.request_timeout_s

    def open(self) -> None:
        """Opens the channels; call inside the serving event loop."""
        self.pool.open()

    async def close(self) -> None:
        """Closes the channels."""
        await self.pool.close()

    def server_metadata(self) -> pb.ServerMetadataResponse:
        """The gateway's own name, version and protocol extensions."""
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=__version__, extensions=EXTENSIONS
        )

    async def server_ready(self) -> bool:
        """Ready when at least one model server is."""
        return await self.pool.any_server_ready()

    async def model_ready(self, name: str, version: str) -> bool:
        """Ready when at least one model server has this model version ready."""
        return bool(await self.pool.ready_backends(name, version))

    async def model_metadata(
        self, name: str, version: str, timeout_s: float | None
    ) -> pb.ModelMetadataResponse:
        """The model's signature from a model server that has it."""

        def ask(backend: Backend, remaining_s: float) -> Awaitable[pb.ModelMetadataResponse]:
            return backend.model_metadata(name, version, remaining_s)

        return await self._first_answer(name, version, timeout_s, ask)

    async def model_drift(self, name: str, version: str, timeout_s: float | None) -> str:
        """A fresh drift report (JSON) from a model server that has the model."""

        def ask(backend: Backend, remaining_s: float) -> Awaitable[str]:
            return backend.model_drift(name, version, remaining_s)

        return await self._first_answer(name, version, timeout_s, ask)

    async def feedback(self, request: mon_pb.FeedbackRequest, timeout_s: float | None) -> Merged:
        """True labels for earlier predictions, sent to every model server (any of them may
        have made a prediction), their answers merged per item (`gateway.feedback`). With more
        than one, each is told so (`fan_out`): an id it does not keep is not its failure to
        count; the gateway counts the merged answers."""
        timeout = min(timeout_s or math.inf, self._max_timeout_s)
        request.fan_out = len(self.pool.backends) > 1
        answers = await asyncio.gather(
            *(backend.feedback(request, timeout) for backend in self.pool.backends),
            return_exceptions=True,
        )
        return merge_answers(len(request.items), answers)

    async def infer(
        self, request: pb.ModelInferRequest, timeout_s: float | None
    ) -> pb.ModelInferResponse:
        """Routes the request (version from the split when it names none) and forwards it."""
        if not request.model_version:
            request.model_version = self._split.choose(request.model_name)

        def ask(backend: Backend, remaining_s: float) -> Awaitable[pb.ModelInferResponse]:
            return backend.infer(request, remaining_s)

        return await self._first_answer(request.model_name, request.model_version, timeout_s, ask)

    async def _first_answer(
        self,
        name: str,
        version: str,
        timeout_s: float | None,
        ask: Callable[[Backend, float], Awaitable[Answer]],
    ) -> Answer:
        """The first answer of the candidates that is neither UNAVAILABLE nor NOT_FOUND, within
        the deadline: the client's timeout, at most the configured request timeout. When every
        candidate fails so, UNAVAILABLE wins: the model server that was down may have the model
        (the message says the others do not).
        """
        deadline = time.monotonic() + min(timeout_s or math.inf, self._max_timeout_s)
        unavailable: UnavailableError | None = None
        not_found: NotFoundError | None = None
        for backend in await self.pool.candidates(name, version):
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise DeadlineExceededError("the timeout passed before a model server answered")
            try:
                return await ask(backend, remaining_s)
            except UnavailableError as error:
                self.pool.suspect(name, version)
                unavailable = error
            except NotFoundError as error:
                not_found = error
        if unavailable is not None and not_found is not None:
            raise UnavailableError(
                f"{unavailable}. It may have the model; the model servers that answered do not "
                f"({not_found})"
            )
        failure = unavailable or not_found
        assert failure is not None  # candidates are never empty
        raise failure
