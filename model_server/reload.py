"""Model versions loaded and unloaded while the server runs: the model repository extension's
load, unload and index, and the optional polling of the repository directory.

A load never disturbs what serves: the new version loads beside the others, and requests naming
no version move to it only once it is READY (and the newest); a version that fails to load is
FAILED with its reason while the others keep serving. An unload stops routing requests to the
version at once, answers those already queued, then frees it. Both run to their end even when
the caller goes away (a client hanging up, the poller stopping), so no version is left half
loaded or half drained.
"""

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from model_server.errors import InvalidInputError, ModelLoadFailedError, ModelNotFoundError, echo
from model_server.heap import freeze_long_lived
from model_server.repository import (
    MAX_VERSION_DIGITS,
    ModelRepository,
    ModelState,
    ModelVersion,
    parse_version,
    version_directories,
)

logger = logging.getLogger(__name__)

NOT_LOADED = "in the repository, not loaded"
"""The reason of a version directory the server has not loaded (yet)."""
UNLOADED_ON_REQUEST = "unloaded on request"

T = TypeVar("T")
Fingerprint = tuple[tuple[str, int, int, int], ...]
"""Name, size, modification and change time of each file of a version directory."""

_running: set[asyncio.Task[Any]] = set()


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One model version of the repository index."""

    name: str
    version: str
    state: str
    reason: str


class ModelReloader:
    """Loads, unloads and lists the versions of one repository at run time."""

    def __init__(self, repository: ModelRepository) -> None:
        self._repository = repository

    async def index(self, repository_name: str, *, ready_only: bool) -> list[IndexEntry]:
        """Every version the server knows or finds on disk, by model name then version."""
        self._check_repository(repository_name)
        on_disk = await asyncio.to_thread(_scan, self._repository.root)
        known = {name: self._repository.versions(name) for name in self._repository.model_names()}
        entries: list[IndexEntry] = []
        for name in sorted(on_disk.keys() | known.keys()):
            by_number = {entry.version: entry for entry in known.get(name, [])}
            for number in sorted(set(on_disk.get(name, [])) | by_number.keys()):
                entry = by_number.get(number)
                state, reason = (
                    (entry.state.value, entry.reason)
                    if entry is not None
                    else (ModelState.UNLOADED.value, NOT_LOADED)
                )
                if not ready_only or state == ModelState.READY.value:
                    entries.append(IndexEntry(name, str(number), state, reason))
        return entries

    async def load(self, repository_name: str, name: str, version: str) -> None:
        """Load every version directory of a model, newest first, or only `version`; READY
        versions stay as they are. FAILED_PRECONDITION names each version that failed, and why."""
        self._check_repository(repository_name)
        _check_model_name(name)
        number = _version_number(version)
        on_disk = await asyncio.to_thread(_versions_on_disk, self._repository.root / name)
        if on_disk is None:
            raise ModelNotFoundError(f"model_name {echo(name)}: no such model directory")
        if not on_disk:
            raise ModelNotFoundError(f"model_name {echo(name)}: its directory holds no version")
        if number is not None and number not in on_disk:
            raise ModelNotFoundError(
                f"model_version {echo(version)}: model {echo(name)} has no version directory "
                f"{number}"
            )
        numbers = [number] if number is not None else sorted(on_disk, reverse=True)
        loaded = await _to_the_end(self._load_versions(name, numbers))
        failed = [entry for entry in loaded if entry.state is ModelState.FAILED]
        if failed:
            raise ModelLoadFailedError(
                "; ".join(f"model {entry.label} failed to load: {entry.reason}" for entry in failed)
            )

    async def unload(self, repository_name: str, name: str, version: str) -> None:
        """Unload every version of a model, oldest first, or only `version`; returns once the
        requests queued for them are answered."""
        self._check_repository(repository_name)
        _check_model_name(name)
        number = _version_number(version)
        if name not in self._repository.model_names():
            raise ModelNotFoundError(f"model_name {echo(name)}: no such model in the repository")
        versions = self._repository.versions(name)
        if number is not None:
            versions = [entry for entry in versions if entry.version == number]
            if not versions:
                raise ModelNotFoundError(
                    f"model_version {echo(version)}: model {echo(name)} has no version {number}"
                )
        await _to_the_end(self._unload_versions(versions))

    async def _load_versions(self, name: str, numbers: list[int]) -> list[ModelVersion]:
        loaded = [await self._repository.load_version(name, number) for number in numbers]
        freeze_long_lived()  # once per call, not per version: each is a full collection
        return loaded

    async def _unload_versions(self, versions: list[ModelVersion]) -> None:
        for entry in versions:
            if entry.state is not ModelState.UNLOADED:
                await self._repository.unload_version(
                    entry.name, entry.version, UNLOADED_ON_REQUEST
                )
        freeze_long_lived()

    def _check_repository(self, repository_name: str) -> None:
        served = self._repository.root.name
        if repository_name and repository_name != served:
            raise ModelNotFoundError(
                f"repository_name {echo(repository_name)}: this server serves one repository, "
                f"{served!r}"
            )


class RepositoryPoller:
    """Loads the model versions that appear in the repository directory; a version that failed
    to load is tried again once its files change. Removing a directory unloads nothing: that
    takes RepositoryModelUnload."""

    def __init__(self, repository: ModelRepository) -> None:
        self._repository = repository
        self._tried: dict[Path, Fingerprint] = {}
        """The files of each FAILED version as they were when it was tried."""

    async def run(self, interval_s: float) -> None:
        """Poll every `interval_s` until cancelled."""
        for entry in self._failed_entries():
            self._tried[entry.path] = await asyncio.to_thread(_fingerprint, entry.path)
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.poll()
            except Exception:  # one failed look must not stop the next ones
                logger.exception("polling model repository %s failed", self._repository.root)

    async def poll(self) -> None:
        """One look: load each new version directory, retry each changed FAILED one."""
        on_disk = await asyncio.to_thread(_scan, self._repository.root)
        loaded_any = False
        for name, numbers in sorted(on_disk.items()):
            for number in sorted(numbers, reverse=True):
                entry = self._repository.entry(name, number)
                if entry is not None and entry.state is not ModelState.FAILED:
                    continue
                path = self._repository.root / name / str(number)
                fingerprint = await asyncio.to_thread(_fingerprint, path)
                if entry is not None and self._tried.get(path) == fingerprint:
                    continue
                loaded = await _to_the_end(self._repository.load_version(name, number))
                loaded_any = True
                if loaded.state is ModelState.FAILED:
                    self._tried[path] = fingerprint
                else:
                    self._tried.pop(path, None)
        if loaded_any:
            freeze_long_lived()

    def _failed_entries(self) -> list[ModelVersion]:
        return [
            entry
            for name in self._repository.model_names()
            for entry in self._repository.versions(name)
            if entry.state is ModelState.FAILED
        ]


async def _to_the_end(work: Coroutine[Any, Any, T]) -> T:
    """Await `work`, which runs to its end even if the caller is cancelled."""
    task = asyncio.ensure_future(work)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return await asyncio.shield(task)


def _check_model_name(name: str) -> None:
    if not name:
        raise InvalidInputError("model_name is empty")
    if Path(name).name != name or name in (".", "..") or "\0" in name:
        raise InvalidInputError(f"model_name {echo(name)}: not a model directory name")


def _version_number(version: str) -> int | None:
    """None for an empty version; INVALID_ARGUMENT unless a positive integer."""
    if not version:
        return None
    number = parse_version(version)
    if not number:
        raise InvalidInputError(
            f"model_version {echo(version)}: not a positive integer of at most "
            f"{MAX_VERSION_DIGITS} digits"
        )
    return number


def _versions_on_disk(model_dir: Path) -> list[int] | None:
    """The version numbers under a model directory; None when it is not a directory."""
    if not model_dir.is_dir():
        return None
    return [int(path.name) for path in version_directories(model_dir)]


def _scan(root: Path) -> dict[str, list[int]]:
    """Each model directory under the root that holds versions, with their numbers."""
    if not root.is_dir():
        return {}
    found: dict[str, list[int]] = {}
    for model_dir in root.iterdir():
        try:
            numbers = _versions_on_disk(model_dir)
        except OSError:  # removed while being read
            continue
        if numbers:
            found[model_dir.name] = numbers
    return found


def _fingerprint(version_dir: Path) -> Fingerprint:
    try:
        files = [(path.name, path.stat()) for path in version_dir.iterdir() if path.is_file()]
    except OSError:
        return ()
    return tuple(sorted((n, s.st_size, s.st_mtime_ns, s.st_ctime_ns) for n, s in files))
