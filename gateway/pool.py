"""The model servers behind the gateway, and which of them to ask for a model.

With one model server every request goes there. With several, a request for a model version
goes to the model servers that report it ready (ModelReady), taken round robin; when none
does, to all of them, so one answers with the reason (unknown model, not ready). A model
server's answer is trusted for `readiness_ttl_s`, then checked again in the background while
the last answer keeps serving; only the first request for a model version waits for a check.
"""

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.telemetry import KnownModels
from gateway.tls import BackendTls
from gateway.upstream import Backend

logger = logging.getLogger(__name__)

CACHE_SIZE = 1024
"""Model versions whose readiness is remembered; the least recently asked for is forgotten."""

_Key = tuple[str, str]
"""(model name, version); version "" means the model server's default."""


@dataclass(frozen=True)
class _Readiness:
    ready: tuple[Backend, ...]
    checked_at: float


class BackendPool:
    """The configured model servers; `open()` and `close()` in the serving event loop."""

    def __init__(
        self,
        addresses: Sequence[str],
        *,
        max_message_bytes: int,
        probe_timeout_s: float,
        readiness_ttl_s: float,
        known: KnownModels,
        tls: BackendTls | None,
    ) -> None:
        self.backends = [
            Backend(address, max_message_bytes=max_message_bytes, known=known, tls=tls)
            for address in addresses
        ]
        self._tls = tls
        self._probe_timeout_s = probe_timeout_s
        self._ttl_s = readiness_ttl_s
        self._readiness: OrderedDict[_Key, _Readiness] = OrderedDict()
        self._probes: dict[_Key, asyncio.Task[_Readiness]] = {}
        self._turn = itertools.count()

    def open(self) -> None:
        """Creates one channel per model server."""
        for backend in self.backends:
            backend.open()
        logger.info("channels to the model servers: %s", self._tls or "plaintext")

    async def close(self) -> None:
        """Stops readiness checks and closes every channel."""
        for probe in list(self._probes.values()):
            probe.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
        await asyncio.gather(*(backend.close() for backend in self.backends))

    async def candidates(self, name: str, version: str) -> list[Backend]:
        """Model servers to try for this model version, in order (see the module docstring)."""
        if len(self.backends) == 1:
            return self.backends
        key = (name, version)
        known = self._readiness.get(key)
        if known is None:
            known = await asyncio.shield(self._probe(key))
        else:
            self._readiness.move_to_end(key)
            if time.monotonic() - known.checked_at > self._ttl_s:
                self._probe(key)
        choice = list(known.ready) or self.backends
        start = next(self._turn) % len(choice)
        return choice[start:] + choice[:start]

    async def ready_backends(self, name: str, version: str) -> list[Backend]:
        """Asks every model server now; the answer also refreshes what `candidates` uses."""
        return list((await asyncio.shield(self._probe((name, version)))).ready)

    def suspect(self, name: str, version: str) -> None:
        """A model server failed for this model version: check again on the next request."""
        known = self._readiness.get((name, version))
        if known is not None:
            self._readiness[name, version] = _Readiness(known.ready, float("-inf"))

    async def any_server_ready(self) -> bool:
        """Whether at least one model server reports itself ready."""
        answers = await asyncio.gather(
            *(backend.server_ready(self._probe_timeout_s) for backend in self.backends)
        )
        return any(answers)

    def _probe(self, key: _Key) -> "asyncio.Task[_Readiness]":
        """The running check of this key, or a new one."""
        probe = self._probes.get(key)
        if probe is None:
            probe = asyncio.create_task(self._check(key))
            self._probes[key] = probe
        return probe

    async def _check(self, key: _Key) -> _Readiness:
        try:
            answers = await asyncio.gather(
                *(backend.model_ready(*key, self._probe_timeout_s) for backend in self.backends)
            )
            readiness = _Readiness(
                tuple(b for b, ready in zip(self.backends, answers, strict=True) if ready),
                time.monotonic(),
            )
            self._readiness[key] = readiness
            self._readiness.move_to_end(key)
            while len(self._readiness) > CACHE_SIZE:
                self._readiness.popitem(last=False)
            return readiness
        finally:
            del self._probes[key]
