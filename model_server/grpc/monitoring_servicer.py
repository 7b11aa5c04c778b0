"""`inferwatch.monitoring.v1.ModelMonitoring`: the model-quality reports and the true labels
(feedback) over gRPC."""

import grpc

from model_server.core import InferenceCore
from model_server.grpc.converters import feedback_items_from_pb, feedback_response_to_pb
from model_server.grpc.rpc import rpc
from model_server.proto import monitoring_pb2 as pb
from model_server.proto import monitoring_pb2_grpc as pb_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["ModelMonitoring"].full_name


class MonitoringServicer(pb_grpc.ModelMonitoringServicer):
    """Drift reports as JSON, for the gateway's `GET /v2/models/{name}/drift`; true labels for
    earlier predictions, for its `POST /v2/models/{name}/feedback`."""

    def __init__(self, core: InferenceCore) -> None:
        self.core = core

    @rpc(SERVICE, "ModelDrift")
    async def ModelDrift(  # noqa: N802 (protocol method names)
        self, request: pb.ModelDriftRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelDriftResponse:
        report = await self.core.model_drift(request.name, request.version)
        return pb.ModelDriftResponse(report_json=report.to_json())

    @rpc(SERVICE, "Feedback")
    async def Feedback(  # noqa: N802
        self, request: pb.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> pb.FeedbackResponse:
        outcomes = await self.core.feedback(
            request.name, request.version, feedback_items_from_pb(request), fan_out=request.fan_out
        )
        return feedback_response_to_pb(outcomes)
