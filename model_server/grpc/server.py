"""Assembles the gRPC server: inference, monitoring and model repository services, standard
health service (following loads and unloads), reflection."""

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from model_server.core import InferenceCore
from model_server.grpc.handlers import add_servicer
from model_server.grpc.monitoring_servicer import SERVICE as MONITORING_SERVICE
from model_server.grpc.monitoring_servicer import MonitoringServicer
from model_server.grpc.repository_servicer import DESCRIPTOR as REPOSITORY_DESCRIPTOR
from model_server.grpc.repository_servicer import RepositoryServicer
from model_server.grpc.servicer import InferenceServicer
from model_server.grpc.tls import ServerTls
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import monitoring_pb2 as monitoring_pb

INFERENCE_DESCRIPTOR = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
INFERENCE_SERVICE = INFERENCE_DESCRIPTOR.full_name
MONITORING_DESCRIPTOR = monitoring_pb.DESCRIPTOR.services_by_name["ModelMonitoring"]
OVERALL_HEALTH = ""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class BindError(OSError):
    """The gRPC port could not be bound (another process listens there, say)."""


class GrpcServer:
    """A grpc.aio server bound to one address, serving one inference core."""

    def __init__(
        self, core: InferenceCore, *, max_message_bytes: int, max_concurrent_rpcs: int | None
    ) -> None:
        self._core = core
        # Not grpc's `maximum_concurrent_rpcs`: it counts every call, health checks included,
        # so a busy server failed its probes. The servicer limits ModelInfer alone.
        self._server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
            ],
        )
        add_servicer(
            self._server, INFERENCE_DESCRIPTOR, InferenceServicer(core, max_concurrent_rpcs)
        )
        add_servicer(self._server, MONITORING_DESCRIPTOR, MonitoringServicer(core))
        add_servicer(self._server, REPOSITORY_DESCRIPTOR, RepositoryServicer(core))
        self._health = health_aio.HealthServicer()
        core.repository.add_listener(self.publish_health)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            [
                INFERENCE_SERVICE,
                MONITORING_SERVICE,
                REPOSITORY_DESCRIPTOR.full_name,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self._server,
        )

    async def start(self, host: str, port: int, tls: ServerTls | None = None) -> int:
        """Bind and start, serving TLS only when `tls` is given; returns the bound port (useful
        when `port` is 0). BindError when the address cannot be bound."""
        address = f"{host}:{port}"
        try:
            bound: int = (
                self._server.add_insecure_port(address)
                if tls is None
                else self._server.add_secure_port(address, tls.credentials())
            )
        except RuntimeError:  # grpcio's only report of a failed bind; grpc logs the cause
            raise BindError(
                f"grpc_port {port}: cannot listen on {address} (another process listens there, "
                f"or host {host!r} is no address of this machine)"
            ) from None
        await self._server.start()
        await self._health.set(OVERALL_HEALTH, _NOT_SERVING)
        return bound

    async def publish_health(self) -> None:
        """Mirror the core's readiness into grpc.health.v1, overall and per model."""
        await self._health.set(
            OVERALL_HEALTH, _SERVING if self._core.server_ready() else _NOT_SERVING
        )
        for name in self._core.repository.model_names():
            ready = self._core.model_ready(name, "")
            await self._health.set(name, _SERVING if ready else _NOT_SERVING)

    async def stop(self, grace_s: float) -> None:
        """Refuse new calls, give in-flight ones `grace_s` seconds, then cancel the rest."""
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_s)
