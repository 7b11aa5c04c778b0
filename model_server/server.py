"""The model server process: repository, inference core and gRPC transport together."""

import asyncio
import logging

import torch

from model_server import telemetry
from model_server.core import InferenceCore
from model_server.digits import ensure_default_model
from model_server.feedback import FeedbackHub
from model_server.grpc.server import GrpcServer
from model_server.heap import freeze_long_lived
from model_server.reload import RepositoryPoller
from model_server.repository import ModelRepository
from model_server.settings import ModelServerSettings

logger = logging.getLogger(__name__)


class ModelServer:
    """Start: live at once, ready once every model version has been tried. Stop: drain."""

    def __init__(self, settings: ModelServerSettings) -> None:
        self._settings = settings
        self.feedback = (
            FeedbackHub(
                max_predictions=settings.feedback_max_predictions,
                max_age_s=settings.feedback_max_age_s,
                window_s=settings.feedback_window_s,
            )
            if settings.feedback_max_predictions
            else None
        )
        self.repository = ModelRepository(
            settings.model_repository,
            inline_forward_max_s=settings.inline_forward_max_ms / 1000,
            feedback=self.feedback,
        )
        self.core = InferenceCore(
            self.repository,
            settings.server_name,
            fault_injection=settings.fault_injection,
            feedback=self.feedback,
        )
        self._grpc: GrpcServer | None = None
        self._drift_task: asyncio.Task[None] | None = None
        self._poll_task: asyncio.Task[None] | None = None
        self._feedback_task: asyncio.Task[None] | None = None
        self.port: int | None = None

    async def start(self) -> int:
        """Serve on the configured address; returns the bound gRPC port."""
        settings = self._settings
        torch.set_num_threads(settings.torch_threads)
        # grpc.aio binds to the running loop, so the server is built here, not in __init__.
        self._grpc = GrpcServer(
            self.core,
            max_message_bytes=settings.max_message_bytes,
            max_concurrent_rpcs=settings.max_concurrent_rpcs or None,
        )
        tls = settings.tls()
        self.port = await self._grpc.start(settings.host, settings.grpc_port, tls)
        logger.info(
            "gRPC server listening on %s:%d (%s)", settings.host, self.port, tls or "plaintext"
        )
        logger.info("serving on the %s event loop", _loop_name(asyncio.get_running_loop()))
        if settings.create_default_model:
            await asyncio.to_thread(ensure_default_model, settings.model_repository)
        await self.repository.load_all()
        freeze_long_lived()
        telemetry.observe(self.repository)
        if self.feedback is not None:
            telemetry.observe_feedback(self.feedback)
            self._feedback_task = asyncio.get_running_loop().create_task(
                self._evaluate_feedback(self.feedback), name="feedback-evaluation"
            )
        self._drift_task = asyncio.get_running_loop().create_task(
            self._evaluate_drift(), name="drift-evaluation"
        )
        if settings.repository_poll_s > 0:
            self._poll_task = asyncio.get_running_loop().create_task(
                RepositoryPoller(self.repository).run(settings.repository_poll_s),
                name="repository-polling",
            )
        self.core.set_ready(True)
        await self._grpc.publish_health()
        logger.info("server ready with models %s", self.repository.model_names())
        return self.port

    async def stop(self) -> None:
        """Stop taking calls, let in-flight ones finish within the grace period, drain batchers."""
        self.core.set_ready(False)
        if self._drift_task is not None:
            self._drift_task.cancel()
        if self._poll_task is not None:
            self._poll_task.cancel()
        if self._feedback_task is not None:
            self._feedback_task.cancel()
        if self._grpc is not None:
            await self._grpc.stop(self._settings.shutdown_grace_s)
        await self.repository.close()
        telemetry.forget(self.repository)
        if self.feedback is not None:
            telemetry.forget_feedback(self.feedback)
        logger.info("server stopped")

    async def _evaluate_drift(self) -> None:
        """Every `drift_interval_s`, evaluate each monitored version off the event loop."""
        while True:
            await asyncio.sleep(self._settings.drift_interval_s)
            for entry in self.repository.drift_watched():
                assert entry.drift is not None
                try:
                    entry.drift_report = await asyncio.to_thread(entry.drift.monitor.evaluate)
                except Exception:  # a failed evaluation must not stop the next ones
                    logger.exception("drift evaluation of %s failed", entry.label)

    async def _evaluate_feedback(self, feedback: FeedbackHub) -> None:
        """Every `feedback_interval_s`, expire old predictions and refresh the quality reports
        (on the event loop, which owns them: tens of µs per version)."""
        while True:
            await asyncio.sleep(self._settings.feedback_interval_s)
            try:
                feedback.evaluate()
            except Exception:  # a failed evaluation must not stop the next ones
                logger.exception("feedback evaluation failed")


def _loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """The package of the running event loop's class: `uvloop` or `asyncio`."""
    return type(loop).__module__.partition(".")[0]
