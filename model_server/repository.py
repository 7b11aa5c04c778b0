"""The model repository: `<root>/<model>/<version>/{config.json, model.pt}`.

Each version loads on its own; one that fails is kept as FAILED with its reason
and never stops the others or the server.
"""

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from model_server import quality, telemetry
from model_server.batcher import DynamicBatcher
from model_server.errors import ModelNotFoundError, ModelNotReadyError, echo
from model_server.feedback import FeedbackHub, PredictionRecorder
from model_server.model_config import ModelConfig, ModelConfigError
from model_server.torchscript_model import ModelLoadError, TorchScriptModel
from monitoring.drift import DriftReport

logger = logging.getLogger(__name__)

_VERSION_DIR = re.compile(r"^[1-9][0-9]*$")
MAX_VERSION_DIGITS = 18
"""Longest version number a request may name (it fits an int64)."""


class ModelState(Enum):
    """Lifecycle of one model version."""

    LOADING = "LOADING"
    READY = "READY"
    FAILED = "FAILED"
    UNLOADING = "UNLOADING"
    UNLOADED = "UNLOADED"


@dataclass(eq=False)
class ModelVersion:
    """One version of one model and, once ready, its batcher."""

    name: str
    version: int
    path: Path
    state: ModelState = ModelState.LOADING
    reason: str = ""
    config: ModelConfig | None = None
    batcher: DynamicBatcher | None = field(default=None, repr=False)
    drift: quality.DriftWatch | None = field(default=None, repr=False)
    drift_report: DriftReport | None = field(default=None, repr=False)
    """The latest periodic drift evaluation."""
    feedback: PredictionRecorder | None = field(default=None, repr=False)
    """Keeps each answer's predictions for their true labels (a classifier with labels)."""

    @property
    def label(self) -> str:
        """`name:version`, for logs and error messages."""
        return f"{self.name}:{self.version}"

    @property
    def attributes(self) -> dict[str, str]:
        """Telemetry attributes naming this version."""
        return {telemetry.MODEL_NAME: self.name, telemetry.MODEL_VERSION: str(self.version)}


class ModelRepository:
    """Discovers, loads and resolves model versions under one directory."""

    def __init__(
        self,
        root: Path,
        *,
        inline_forward_max_s: float = 0.0,
        feedback: FeedbackHub | None = None,
    ) -> None:
        self._root = root
        self._inline_forward_max_s = inline_forward_max_s
        self._feedback = feedback
        self._models: dict[str, dict[int, ModelVersion]] = {}
        self._newest: dict[str, ModelVersion] = {}
        """Per model, the newest READY version: what a request naming no version gets."""
        self._listeners: list[Callable[[], Awaitable[None]]] = []
        self._changing = asyncio.Lock()
        """Held by loads and unloads at run time (never by requests)."""

    @property
    def root(self) -> Path:
        """The repository directory."""
        return self._root

    def model_names(self) -> list[str]:
        """Every model found, loaded or not, sorted."""
        return sorted(self._models)

    def versions(self, name: str) -> list[ModelVersion]:
        """All versions of a model, oldest first; NOT_FOUND if the model is unknown."""
        try:
            return [v for _, v in sorted(self._models[name].items())]
        except KeyError:
            raise ModelNotFoundError(f"model {echo(name)} is not in the repository") from None

    async def load_all(self) -> None:
        """Discover every model version under the root and load them one by one. The gRPC port
        is already open: a version that RepositoryModelLoad loaded (or is loading) meanwhile is
        left to it."""
        if not self._root.is_dir():
            logger.error("model repository %s is not a directory; serving no models", self._root)
            return
        for model_dir in sorted(p for p in self._root.iterdir() if p.is_dir()):
            version_dirs = version_directories(model_dir)
            if not version_dirs:
                logger.warning("model directory %s has no numeric version directories", model_dir)
                continue
            versions = self._models.setdefault(model_dir.name, {})
            for version_dir in version_dirs:
                number = int(version_dir.name)
                async with self._changing:
                    if number in versions:
                        continue
                    entry = ModelVersion(model_dir.name, number, version_dir)
                    versions[number] = entry
                    await self._load(entry)

    async def _load(self, entry: ModelVersion) -> None:
        """Load a version: READY, or FAILED with its reason, never an exception."""
        try:
            config = ModelConfig.load(entry.path)
            if config.name is not None and config.name != entry.name:
                raise ModelConfigError(
                    f"{entry.path}: config name {config.name!r} differs from directory "
                    f"{entry.name!r}"
                )
            model = await asyncio.to_thread(_load_and_check, entry.path, config)
            drift = quality.load_drift_watch(entry.path, config, entry.name, entry.version)
            feedback = (
                self._feedback.recorder(entry.name, entry.version, config)
                if self._feedback is not None
                else None
            )
            batching = config.dynamic_batching
            batcher = DynamicBatcher(
                model.forward,
                name=entry.label,
                max_batch_size=config.max_batch_size,
                max_queue_delay_s=batching.max_queue_delay_ms / 1000,
                max_queue_size=batching.max_queue_size,
                enabled=batching.enabled,
                inline_forward_max_s=self._inline_forward_max_s,
                skip_unproductive_delay=batching.skip_unproductive_delay,
                poll_while_waiting=batching.poll_while_waiting,
                attributes=entry.attributes,
                observe_batch=quality.batch_observer(config, entry.attributes, drift),
            )
        except (ModelConfigError, ModelLoadError) as exc:
            entry.state, entry.reason = ModelState.FAILED, str(exc)
            logger.error("model %s failed to load: %s", entry.label, exc)
            return
        except Exception as exc:  # a bug or a surprise of one version must not stop the others
            entry.state, entry.reason = ModelState.FAILED, f"unexpected error: {exc!r}"
            logger.exception("model %s failed to load: unexpected error", entry.label)
            return
        entry.config, entry.drift, entry.feedback = config, drift, feedback
        entry.batcher = batcher
        batcher.start()
        entry.state = ModelState.READY
        self._publish(entry.name)
        logger.info(
            "model %s ready (max batch %d, batching %s)",
            entry.label,
            config.max_batch_size,
            "on" if batching.enabled else "off",
        )

    def resolve(self, name: str, version: str) -> ModelVersion:
        """The version a request names, or the newest ready one when `version` is empty."""
        versions = self._models.get(name)
        if versions is None:
            raise ModelNotFoundError(f"model {echo(name)} is not in the repository")
        if not version:
            newest = self._newest.get(name)
            if newest is None:
                raise ModelNotReadyError(f"model {echo(name)} has no ready version")
            return newest
        number = parse_version(version)
        entry = None if number is None else versions.get(number)
        if entry is None:
            raise ModelNotFoundError(f"model {echo(name)} has no version {echo(version)}")
        if entry.state is not ModelState.READY:
            # The reason stays in the server log: it can name server paths.
            raise ModelNotReadyError(
                f"model {entry.label} is not ready (state {entry.state.value})"
            )
        return entry

    def queue_depths(self) -> Iterator[tuple[Mapping[str, str], int]]:
        """Requests waiting per loaded version (for the queue-depth gauge)."""
        for entry in self._entries():
            if entry.batcher is not None:
                yield entry.attributes, entry.batcher.queue_depth

    def readiness(self) -> Iterator[tuple[Mapping[str, str], bool]]:
        """Whether each version meant to serve is ready (for the model-ready gauge). An UNLOADED
        version was retired on purpose: it is left out, so its series ends instead of reading 0
        and paging someone for a planned unload."""
        for entry in self._entries():
            if entry.state is not ModelState.UNLOADED:
                yield entry.attributes, entry.state is ModelState.READY

    def telemetry_model(self, name: str, version: str) -> tuple[str, str]:
        """(name, version) as metric attributes: only what the repository knows, so a client
        cannot grow the cardinality; an unknown name is `_unknown`, an unknown version ""."""
        versions = self._models.get(name)
        if versions is None:
            return telemetry.UNKNOWN_MODEL, ""
        if not version:
            return name, ""
        number = parse_version(version)
        return name, str(number) if number is not None and number in versions else ""

    def drift_reports(self) -> Iterator[tuple[Mapping[str, str], DriftReport]]:
        """The latest drift report per ready version (for the drift gauges)."""
        for entry in self._entries():
            if entry.drift_report is not None and entry.state is ModelState.READY:
                yield entry.attributes, entry.drift_report

    def drift_watched(self) -> list[ModelVersion]:
        """Ready versions with a drift monitor."""
        return [e for e in self._entries() if e.drift is not None and e.state is ModelState.READY]

    def _entries(self) -> Iterator[ModelVersion]:
        for versions in list(self._models.values()):
            yield from list(versions.values())

    def is_ready(self, name: str, version: str) -> bool:
        """Whether `resolve` would succeed; NOT_FOUND for unknown models or versions."""
        try:
            self.resolve(name, version)
        except ModelNotReadyError:
            return False
        return True

    def entry(self, name: str, version: int) -> ModelVersion | None:
        """A version the server knows (in any state), or None."""
        return self._models.get(name, {}).get(version)

    def add_listener(self, listener: Callable[[], Awaitable[None]]) -> None:
        """Called after every load or unload at run time (to publish health, say)."""
        self._listeners.append(listener)

    async def load_version(self, name: str, version: int) -> ModelVersion:
        """Load `<root>/<name>/<version>` while every other version keeps serving; returns it
        READY or FAILED. A READY version is kept as it is. Requests naming no version move to
        it once it is READY, if it is the newest."""
        async with self._changing:
            current = self.entry(name, version)
            if current is not None and current.state is ModelState.READY:
                return current
            entry = ModelVersion(name, version, self._root / name / str(version))
            self._models.setdefault(name, {})[version] = entry
            logger.info("loading model %s from %s", entry.label, entry.path)
            await self._load(entry)
        await self._notify()
        return entry

    async def unload_version(self, name: str, version: int, reason: str) -> None:
        """Stop routing requests to a known version, answer those already queued, free it."""
        async with self._changing:
            entry = self._models[name][version]
            entry.state, entry.reason = ModelState.UNLOADING, reason
            self._publish(name)
            logger.info("unloading model %s: %s", entry.label, reason)
            await self._notify()
            if entry.batcher is not None:
                await entry.batcher.close()
                entry.batcher = None
            entry.state = ModelState.UNLOADED
            logger.info("model %s unloaded", entry.label)

    def _publish(self, name: str) -> None:
        """Point requests naming no version at the newest READY version of `name`."""
        ready = [v for v in self._models.get(name, {}).values() if v.state is ModelState.READY]
        if ready:
            self._newest[name] = max(ready, key=lambda v: v.version)
        else:
            self._newest.pop(name, None)

    async def _notify(self) -> None:
        for listener in self._listeners:
            await listener()

    async def close(self) -> None:
        """Drain and stop every batcher; waits for a load or unload under way, and keeps any
        other from starting."""
        await self._changing.acquire()
        self._newest.clear()
        for versions in self._models.values():
            for entry in versions.values():
                if entry.batcher is not None:
                    await entry.batcher.close()
                    entry.batcher = None
                entry.state = ModelState.UNLOADED


def version_directories(model_dir: Path) -> list[Path]:
    """A model directory's version directories (positive integers), oldest first."""
    return sorted(
        (p for p in model_dir.iterdir() if p.is_dir() and _VERSION_DIR.match(p.name)),
        key=lambda p: int(p.name),
    )


def parse_version(version: str) -> int | None:
    """The version number a request's version string names, or None: ASCII digits only (int()
    refuses the digit "\u00b2" and reads the Arabic-Indic "\u0661" as 1), at most
    `MAX_VERSION_DIGITS` of them."""
    if version.isdigit() and version.isascii() and len(version) <= MAX_VERSION_DIGITS:
        return int(version)
    return None


def _load_and_check(path: Path, config: ModelConfig) -> TorchScriptModel:
    model = TorchScriptModel(path, config)
    model.check_signature()
    return model
