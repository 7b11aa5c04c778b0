"""`inference.model_repository.ModelRepositoryService`: the protocol's model repository
extension (index, load, unload at run time); decode, call the reloader, encode."""

import grpc

from model_server.core import InferenceCore
from model_server.grpc.rpc import rpc
from model_server.proto import model_repository_pb2 as pb
from model_server.proto import model_repository_pb2_grpc as pb_grpc
from model_server.reload import ModelReloader

DESCRIPTOR = pb.DESCRIPTOR.services_by_name["ModelRepositoryService"]
SERVICE = DESCRIPTOR.full_name


class RepositoryServicer(pb_grpc.ModelRepositoryServiceServicer):
    """Lists, loads and unloads the versions of the core's repository."""

    def __init__(self, core: InferenceCore) -> None:
        self.reloader = ModelReloader(core.repository)

    @rpc(SERVICE, "RepositoryIndex")
    async def RepositoryIndex(  # noqa: N802 (protocol method names)
        self, request: pb.RepositoryIndexRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryIndexResponse:
        entries = await self.reloader.index(request.repository_name, ready_only=request.ready)
        return pb.RepositoryIndexResponse(
            models=[
                pb.RepositoryIndexResponse.ModelIndex(
                    name=entry.name, version=entry.version, state=entry.state, reason=entry.reason
                )
                for entry in entries
            ]
        )

    @rpc(SERVICE, "RepositoryModelLoad")
    async def RepositoryModelLoad(  # noqa: N802
        self, request: pb.RepositoryModelLoadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelLoadResponse:
        await self.reloader.load(request.repository_name, request.model_name, request.model_version)
        return pb.RepositoryModelLoadResponse()

    @rpc(SERVICE, "RepositoryModelUnload")
    async def RepositoryModelUnload(  # noqa: N802
        self, request: pb.RepositoryModelUnloadRequest, context: grpc.aio.ServicerContext
    ) -> pb.RepositoryModelUnloadResponse:
        await self.reloader.unload(
            request.repository_name, request.model_name, request.model_version
        )
        return pb.RepositoryModelUnloadResponse()
