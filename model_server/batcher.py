"""Dynamic batching: gather requests for one model version into one forward pass.

One worker task per model version owns the queue. It takes the oldest request,
waits until the batch holds `max_batch_size` rows or the oldest request has
waited `max_queue_delay`, then runs the forward pass on the version's own
inference thread (so the event loop never blocks) and hands each caller its
own rows. While a forward pass runs, new requests queue up and form the next
batch, so under load batches fill without waiting for the delay.
"""

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from model_server.errors import (
    DeadlineExceededError,
    ModelExecutionError,
    ModelNotReadyError,
    QueueFullError,
)

logger = logging.getLogger(__name__)

ForwardFn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


@dataclass(slots=True)
class _Pending:
    inputs: Sequence[np.ndarray]
    rows: int
    deadline: float | None
    future: asyncio.Future[list[np.ndarray]]
    enqueued_at: float = field(default_factory=time.monotonic)


class DynamicBatcher:
    """Bounded queue plus worker for one model version."""

    def __init__(
        self,
        forward: ForwardFn,
        *,
        name: str,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        enabled: bool = True,
    ) -> None:
        self._forward = forward
        self._name = name
        self._max_batch_size = max_batch_size
        self._max_queue_delay_s = max_queue_delay_s if enabled else 0.0
        self._max_queue_size = max_queue_size
        self._enabled = enabled
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"infer-{name}")
        self._worker: asyncio.Task[None] | None = None
        self._accepting = False

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch."""
        return len(self._queue)

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._accepting = True
        self._worker = asyncio.get_running_loop().create_task(
            self._run(), name=f"batcher-{self._name}"
        )

    async def submit(
        self, inputs: Sequence[np.ndarray], deadline: float | None
    ) -> list[np.ndarray]:
        """Queue one request's inputs (validated, same row count) and await its outputs."""
        if not self._accepting:
            raise ModelNotReadyError(f"model {self._name} is not accepting requests")
        if len(self._queue) >= self._max_queue_size:
            raise QueueFullError(
                f"model {self._name}: queue is full ({self._max_queue_size} requests waiting)"
            )
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        rows = inputs[0].shape[0]
        self._queue.append(_Pending(inputs, rows, deadline, future))
        self._queued_rows += rows
        self._wakeup.set()
        try:
            return await future
        except asyncio.CancelledError:
            future.cancel()  # the worker skips cancelled requests
            raise

    async def close(self) -> None:
        """Stop accepting, finish everything already queued, then stop the worker."""
        self._accepting = False
        self._wakeup.set()
        if self._worker is not None:
            await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if not self._accepting:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._wait_for_batch(loop)
            batch = self._take_batch()
            if batch:
                await self._execute(loop, batch)

    async def _wait_for_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the batch is full or the oldest request's delay has passed."""
        while self._accepting and self._queued_rows < self._max_batch_size:
            remaining = self._queue[0].enqueued_at + self._max_queue_delay_s - time.monotonic()
            if remaining <= 0:
                return
            self._wakeup.clear()
            timer = loop.call_later(remaining, self._wakeup.set)
            await self._wakeup.wait()
            timer.cancel()

    def _take_batch(self) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        now = time.monotonic()
        while self._queue:
            pending = self._queue[0]
            if batch and (not self._enabled or rows + pending.rows > self._max_batch_size):
                break
            self._queue.popleft()
            self._queued_rows -= pending.rows
            if pending.future.done():  # cancelled by its caller while queued
                continue
            if pending.deadline is not None and pending.deadline <= now:
                pending.future.set_exception(
                    DeadlineExceededError(
                        f"model {self._name}: deadline passed after "
                        f"{(now - pending.enqueued_at) * 1000:.1f} ms in the queue"
                    )
                )
                continue
            batch.append(pending)
            rows += pending.rows
        return batch

    async def _execute(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            inputs: Sequence[np.ndarray] = batch[0].inputs
        else:
            inputs = [
                np.concatenate([pending.inputs[i] for pending in batch])
                for i in range(len(batch[0].inputs))
            ]
        try:
            outputs = await loop.run_in_executor(self._executor, self._forward, inputs)
        except Exception:
            logger.exception(
                "model %s: forward pass failed on a batch of %d requests", self._name, len(batch)
            )
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(
                        ModelExecutionError(f"model {self._name}: forward pass failed")
                    )
            return
        start = 0
        for pending in batch:
            stop = start + pending.rows
            if not pending.future.done():
                pending.future.set_result([output[start:stop] for output in outputs])
            start = stop
