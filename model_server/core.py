"""The transport-agnostic inference core: health, metadata, inference and feedback.

Transports (the gRPC servicer today) decode their payloads into `model_server.types`,
call one method here and encode the result; every failure is an `InferenceError`.
"""

import asyncio

from model_server import __version__, faults
from model_server.errors import ModelNotFoundError, echo
from model_server.feedback import FeedbackHub, Outcome
from model_server.repository import ModelRepository, ModelState, parse_version
from model_server.signature import output_indices, validate_inputs
from model_server.types import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ServerMetadata,
    Tensor,
    TensorMetadata,
)
from monitoring.drift import REFERENCE_FILE, DriftReport
from monitoring.feedback import FeedbackItem, ResponseIds

PLATFORM = "pytorch_torchscript"
EXTENSIONS = ("model_repository",)
"""Protocol extensions served: the model repository's index, load and unload."""


class InferenceCore:
    """Answers every protocol call from the model repository."""

    def __init__(
        self,
        repository: ModelRepository,
        server_name: str = "inferwatch",
        fault_injection: bool = False,
        feedback: FeedbackHub | None = None,
    ) -> None:
        self._repository = repository
        self._server_name = server_name
        self._fault_injection = fault_injection
        self._feedback = feedback
        self._ids = ResponseIds()
        self._ready = False

    @property
    def repository(self) -> ModelRepository:
        """The repository this core serves."""
        return self._repository

    def set_ready(self, ready: bool) -> None:
        """Ready once the repository is loaded; not ready again while draining."""
        self._ready = ready

    def server_live(self) -> bool:
        """A process that can answer is live."""
        return True

    def server_ready(self) -> bool:
        """Whether new inference requests are welcome."""
        return self._ready

    def model_ready(self, name: str, version: str) -> bool:
        """Whether the model (the newest ready version if none named) can serve."""
        return self._ready and self._repository.is_ready(name, version)

    def server_metadata(self) -> ServerMetadata:
        """Server name, version and protocol extensions."""
        return ServerMetadata(
            name=self._server_name, version=__version__, extensions=list(EXTENSIONS)
        )

    def model_metadata(self, name: str, version: str) -> ModelMetadata:
        """Signature of a model version (the newest ready one when none is named)."""
        entry = self._repository.resolve(name, version)
        config = entry.config
        assert config is not None  # a resolved version is READY, so it has its config
        ready_versions = [
            str(v.version) for v in self._repository.versions(name) if v.state is ModelState.READY
        ]
        return ModelMetadata(
            name=name,
            versions=ready_versions,
            platform=PLATFORM,
            inputs=[TensorMetadata(s.name, s.datatype, s.shape) for s in config.inputs],
            outputs=[TensorMetadata(s.name, s.datatype, s.shape) for s in config.outputs],
        )

    async def model_drift(self, name: str, version: str) -> DriftReport:
        """A fresh drift evaluation of a version's window (on a worker thread, ~1 ms)."""
        entry = self._repository.resolve(name, version)
        if entry.drift is None:
            raise ModelNotFoundError(
                f"model {entry.label} has no drift reference ({REFERENCE_FILE} in its directory)"
            )
        report = await asyncio.to_thread(entry.drift.monitor.evaluate)
        entry.drift_report = report
        return report

    async def infer(self, request: InferRequest) -> InferResponse:
        """Validate, queue for a batch, and return the requested outputs."""
        if not request.model_name:
            raise ModelNotFoundError("model_name is empty")
        entry = self._repository.resolve(request.model_name, request.model_version)
        config, batcher = entry.config, entry.batcher
        assert config is not None
        assert batcher is not None
        arrays = validate_inputs(config, entry.label, request.inputs)
        selected = output_indices(config, entry.label, request.requested_outputs)
        if request.parameters:
            await faults.inject(request.parameters, self._fault_injection)
        outputs = await batcher.submit(arrays, request.deadline)
        response_id = request.id or self._ids.new()
        if entry.feedback is not None:
            entry.feedback.record(response_id, outputs)
        return InferResponse(
            model_name=entry.name,
            model_version=str(entry.version),
            id=response_id,
            outputs=[
                Tensor(config.outputs[i].name, config.outputs[i].datatype, outputs[i])
                for i in selected
            ],
        )

    async def feedback(
        self, name: str, version: str, items: list[FeedbackItem], *, fan_out: bool = False
    ) -> list[Outcome]:
        """True labels for earlier predictions of a model (of one version, when named), by
        response id: one outcome per item (see `monitoring.feedback.join`). `fan_out`: the same
        request went to other model servers too (see `FeedbackHub.apply`)."""
        versions = self._repository.versions(name)
        if version:
            number = parse_version(version)
            if number is None or not any(number == v.version for v in versions):
                raise ModelNotFoundError(f"model {echo(name)} has no version {echo(version)}")
            version = str(number)
        if self._feedback is None:
            raise ModelNotFoundError(
                "feedback is off on this server (MODEL_SERVER_FEEDBACK_MAX_PREDICTIONS=0)"
            )
        return await self._feedback.apply(name, version, items, fan_out=fan_out)
