"""Dynamic batching: gather requests for one model version into one forward pass.

One worker task per model version owns the queue. It takes the oldest request,
waits until the batch holds `max_batch_size` rows or the oldest request has
waited `max_queue_delay`, then runs the forward pass on the version's own
inference thread (so the event loop never blocks) and hands each caller its
own rows. While a forward pass runs, new requests queue up and form the next
batch, so under load batches fill without waiting for the delay. A model whose
recent forward passes took at most `inline_forward_max_s` (`_pass_cost`: a fast pass counts
at once, a slow one a little) runs on the event loop instead: for a small model the hop to
the thread and back costs more than the pass, and the GIL-bound work around it (joining,
metrics, the batch observer) gains nothing from another thread.

The delay is only paid while it pays: the batcher keeps a moving average of how many rows
joined during its recent waits, and while that is under half a row (lone or sparse traffic)
it sends each batch at once; every `probe_every`-th batch still waits, to notice when traffic
picks up. A batch whose oldest request is already overdue (it queued behind a long pass) goes
at once and teaches the average nothing. The last 2 ms of a wait (all of it under the default
delay) keep the event loop polling instead of sleeping until a timer: on 2 vCPUs a loop woken
by each arrival answered 8% fewer calls at 8 concurrent callers (benchmarks/RESULTS.md).

Telemetry: each request gets a queue-wait span (child of its request span) and the
queue-duration metric; each batch gets one forward span, a child of the first sampled
request's span with a link to every request span in the batch, plus batch-size and
forward-duration metrics. Metrics of the forward pass are recorded on the thread that ran it,
in the batch's context (the forward span current). A request that leaves the queue past its
deadline, refused by the worker or given up by its caller, counts as rejected (deadline).
"""

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext

from model_server import telemetry
from model_server.errors import (
    DeadlineExceededError,
    ModelExecutionError,
    ModelNotReadyError,
    QueueFullError,
)

logger = logging.getLogger(__name__)

ForwardFn = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
BatchObserver = Callable[[Sequence[np.ndarray], list[np.ndarray]], None]

QUEUE_SPAN = "infer.queue"
FORWARD_SPAN = "infer.forward"
BATCH_SIZE_ATTRIBUTE = "inferwatch.batch.size"
BATCH_REQUESTS_ATTRIBUTE = "inferwatch.batch.requests"
#: Weight of the newest sample in the moving average of rows gained by waiting.
_AVERAGE_WEIGHT = 0.2
#: Weight of a slower pass in the forward-pass cost (a faster one replaces it): `_pass_cost`.
_COST_RISE_WEIGHT = 0.05
#: Waits that gather fewer rows than this on average are skipped.
_MIN_WAIT_GAIN_ROWS = 0.5
#: The end of a wait spent polling the event loop (`poll_while_waiting`), not sleeping.
_POLL_SPAN_S = 0.002


@dataclass(slots=True, eq=False)  # eq=False: the queue finds an entry by identity
class _Pending:
    inputs: Sequence[np.ndarray]
    rows: int
    deadline: float | None
    future: asyncio.Future[list[np.ndarray]]
    span_context: SpanContext
    enqueued_at: float = field(default_factory=time.monotonic)
    enqueued_ns: int = field(default_factory=time.time_ns)
    queued: bool = True
    """In the queue; False once taken for a batch."""


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
        inline_forward_max_s: float = 0.0,
        skip_unproductive_delay: bool = True,
        poll_while_waiting: bool = True,
        probe_every: int = 128,
        attributes: Mapping[str, str] | None = None,
        observe_batch: BatchObserver | None = None,
    ) -> None:
        self._forward = forward
        self._observe_batch = observe_batch
        self._name = name
        self._attributes = dict(attributes or {})
        self._queue_full = {**self._attributes, telemetry.REASON: "queue_full"}
        self._expired = {**self._attributes, telemetry.REASON: "deadline"}
        self._max_batch_size = max_batch_size
        self._max_queue_delay_s = max_queue_delay_s if enabled else 0.0
        self._max_queue_size = max_queue_size
        self._enabled = enabled
        self._inline_forward_max_s = inline_forward_max_s
        self._forward_s: float | None = None  # forward seconds: `_pass_cost`
        self._skip_unproductive_delay = skip_unproductive_delay
        self._poll_while_waiting = poll_while_waiting
        self._probe_every = probe_every
        self._wait_gain: float | None = None  # rows that joined during a wait, moving average
        self._batches_without_wait = 0
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
            telemetry.rejected.add(1, self._queue_full)
            raise QueueFullError(
                f"model {self._name}: queue is full ({self._max_queue_size} requests waiting)"
            )
        future: asyncio.Future[list[np.ndarray]] = asyncio.get_running_loop().create_future()
        rows = inputs[0].shape[0]
        span_context = trace.get_current_span().get_span_context()
        pending = _Pending(inputs, rows, deadline, future, span_context)
        self._queue.append(pending)
        self._queued_rows += rows
        if len(self._queue) == 1 or self._queued_rows >= self._max_batch_size:
            self._wakeup.set()
        try:
            return await future
        except asyncio.CancelledError:
            future.cancel()
            # Out of the queue at once (its caller gave up: a cancel, a passed deadline), so it
            # no longer counts against the bound, the depth or the rows of the next batch.
            if pending.queued:
                self._queue.remove(pending)
                self._queued_rows -= rows
                if deadline is not None and deadline <= time.monotonic():
                    # gRPC cancels the handler when the client's deadline passes, so this, not
                    # `_take_batch`, is where most expired requests leave the queue.
                    telemetry.rejected.add(1, self._expired)
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
                try:
                    await self._execute(loop, batch)
                except Exception:  # its bookkeeping (telemetry, say), not the model's pass
                    # Fail this batch only: a worker that stopped would strand every later call.
                    logger.exception(
                        "model %s: a batch of %d requests failed", self._name, len(batch)
                    )
                    _fail(batch, ModelExecutionError(f"model {self._name}: the batch failed"))

    async def _wait_for_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the batch is full or the oldest request's delay has passed, unless recent
        waits gathered (almost) nobody."""
        if self._max_queue_delay_s <= 0 or self._queued_rows >= self._max_batch_size:
            return
        if self._queue[0].enqueued_at + self._max_queue_delay_s <= time.monotonic():
            return  # overdue already (it queued behind a pass): no wait, nothing to learn
        if not self._wait_pays():
            self._batches_without_wait += 1
            return
        self._batches_without_wait = 0
        rows_before = self._queued_rows
        await self._wait_for_rows_or_delay(loop)
        gained = float(self._queued_rows - rows_before)
        previous = self._wait_gain
        self._wait_gain = (
            gained if previous is None else previous + _AVERAGE_WEIGHT * (gained - previous)
        )

    def _wait_pays(self) -> bool:
        gain = self._wait_gain
        return (
            not self._skip_unproductive_delay
            or gain is None
            or gain >= _MIN_WAIT_GAIN_ROWS
            or self._batches_without_wait + 1 >= self._probe_every
        )

    async def _wait_for_rows_or_delay(self, loop: asyncio.AbstractEventLoop) -> None:
        while self._accepting and self._queue and self._queued_rows < self._max_batch_size:
            remaining = self._queue[0].enqueued_at + self._max_queue_delay_s - time.monotonic()
            if remaining <= 0:
                return
            sleep_s = remaining - _POLL_SPAN_S if self._poll_while_waiting else remaining
            if sleep_s <= 0:
                await asyncio.sleep(0)  # one turn of the loop, which polls without sleeping
                continue
            self._wakeup.clear()  # set by the timer, by the row that fills the batch, or close
            timer = loop.call_later(sleep_s, self._wakeup.set)
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
            pending.queued = False
            self._queued_rows -= pending.rows
            if pending.future.done():  # cancelled, its caller not yet resumed to leave the queue
                continue
            if pending.deadline is not None and pending.deadline <= now:
                telemetry.rejected.add(1, self._expired)
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
        dispatched_ns = time.time_ns()
        for pending in batch:
            telemetry.queue_duration.record(
                (dispatched_ns - pending.enqueued_ns) / 1e9, self._attributes
            )
            if pending.span_context.trace_flags.sampled:
                telemetry.tracer.start_span(
                    QUEUE_SPAN, _parent(pending.span_context), start_time=pending.enqueued_ns
                ).end(dispatched_ns)
        rows = sum(pending.rows for pending in batch)
        span = telemetry.tracer.start_span(
            FORWARD_SPAN,
            _parent(_forward_parent(batch)),
            links=[Link(p.span_context) for p in batch if p.span_context.is_valid],
            attributes={
                **self._attributes,
                BATCH_SIZE_ATTRIBUTE: rows,
                BATCH_REQUESTS_ATTRIBUTE: len(batch),
            },
            start_time=dispatched_ns,
        )
        # The forward span is current while the pass runs, so its log lines carry its trace.
        with trace.use_span(span, end_on_exit=True):
            try:
                inputs = [p.inputs for p in batch]
                if self._runs_inline():
                    outputs = self._observed_forward(inputs)
                else:
                    # A copy of the context, so the forward span is current on that thread too
                    # and its log lines carry the trace (run_in_executor passes no context).
                    outputs = await loop.run_in_executor(
                        self._executor,
                        contextvars.copy_context().run,
                        self._observed_forward,
                        inputs,
                    )
            except Exception as exc:
                span.record_exception(exc)
                span.set_status(trace.StatusCode.ERROR, "forward pass failed")
                logger.exception(
                    "model %s: forward pass failed on a batch of %d requests",
                    self._name,
                    len(batch),
                )
                _fail(batch, ModelExecutionError(f"model {self._name}: forward pass failed"))
                return
        start = 0
        for pending in batch:
            stop = start + pending.rows
            if not pending.future.done():
                pending.future.set_result([output[start:stop] for output in outputs])
            start = stop

    def _runs_inline(self) -> bool:
        cost = self._forward_s
        return cost is not None and cost <= self._inline_forward_max_s

    def _observed_forward(self, requests: list[Sequence[np.ndarray]]) -> list[np.ndarray]:
        """Joining the batch, the pass itself, its metrics and the batch observer."""
        if len(requests) == 1:
            inputs = requests[0]
        else:
            inputs = [np.concatenate(column) for column in zip(*requests, strict=True)]
        started = time.perf_counter()
        outputs = self._forward(inputs)
        seconds = time.perf_counter() - started
        self._forward_s = _pass_cost(self._forward_s, seconds)
        telemetry.forward_duration.record(seconds, self._attributes)
        telemetry.batch_size.record(inputs[0].shape[0], self._attributes)
        if self._observe_batch is not None:
            try:
                self._observe_batch(inputs, outputs)
            except Exception:  # observing the model must never fail its answers
                logger.exception("model %s: observing a batch failed", self._name)
        return outputs


def _fail(batch: list[_Pending], error: ModelExecutionError) -> None:
    """Answers every request of `batch` still waiting with `error`."""
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)


def _pass_cost(previous: float | None, seconds: float) -> float:
    """The forward-pass cost that decides where passes run: it follows a faster pass at once
    and a slower one slowly. A pass's wall time includes waiting for the GIL while another
    thread holds it (the telemetry export thread sending a batch of spans, say), and those waits
    move a 50 µs pass into the milliseconds now and then; averaging them in had moved cheap
    models off the event loop under full telemetry, onto a thread hop that costs more than
    the pass. A model that really got slower still moves within a few passes."""
    if previous is None or seconds <= previous:
        return seconds
    return previous + _COST_RISE_WEIGHT * (seconds - previous)


def _forward_parent(batch: list[_Pending]) -> SpanContext:
    """The first sampled request's span context (else the first request's): with a parent-based
    sampler the forward span is recorded when its parent was, so a sampled request behind an
    unsampled one in the batch still gets its forward span."""
    for pending in batch:
        if pending.span_context.trace_flags.sampled:
            return pending.span_context
    return batch[0].span_context


def _parent(span_context: SpanContext) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(span_context))
