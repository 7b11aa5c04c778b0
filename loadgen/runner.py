"""Closed loop (a fixed number of clients, each sending its next request when the last one
answered) or open loop (requests started on a schedule, whether or not earlier ones answered),
for a duration or a request count, with optional bursts above the base load.

Latency is measured from when a request was due: in the open loop a late start counts, so a
stalled server cannot hide behind a stalled client (no coordinated omission). Every request
due inside the measured window is recorded however late it ends: the run waits for the last
of them (each ends within the transport's timeout), so a server that stalls near the end of
the window shows its timeouts and latencies. Requests due during the warmup are not recorded.
"""

import asyncio
import contextlib
import random
import time
from dataclasses import dataclass

from loadgen.feedback import Labeller
from loadgen.payloads import Payloads
from loadgen.recorder import Recorder
from loadgen.transports import OK, Transport

_SHORT_SLEEP_S = 0.05


@dataclass(frozen=True)
class Burst:
    """Every `every_s` seconds, the last `length_s` of them run at `factor` times the load."""

    factor: float
    length_s: float
    every_s: float

    def active(self, elapsed_s: float) -> bool:
        """Whether `elapsed_s` into the run falls in a burst."""
        return elapsed_s % self.every_s >= self.every_s - self.length_s

    def next_start(self, elapsed_s: float) -> float:
        """Seconds into the run at which the next burst starts (now, inside a burst)."""
        if self.active(elapsed_s):
            return elapsed_s
        period_start = elapsed_s - elapsed_s % self.every_s
        return period_start + self.every_s - self.length_s


@dataclass(frozen=True)
class Plan:
    """How much load, and for how long. Exactly one of `concurrency` and `rate`; at most one
    of `duration_s` and `requests` (neither: until stopped)."""

    concurrency: int | None = None
    rate: float | None = None
    duration_s: float | None = None
    requests: int | None = None
    warmup_s: float = 0.0
    burst: Burst | None = None
    max_in_flight: int = 1024
    seed: int = 0


class Run:
    """One run of a plan against a transport; `elapsed_s` is the measured time so far. Each
    measured answer goes to the recorder and, when it has an id, is offered to the labeller."""

    def __init__(
        self,
        plan: Plan,
        transport: Transport,
        payloads: Payloads,
        recorder: Recorder,
        labeller: Labeller | None = None,
    ) -> None:
        self.plan = plan
        self._labeller = labeller
        self._transport = transport
        self._payloads = payloads
        self._recorder = recorder
        self._random = random.Random(plan.seed)
        self._mixed = bool(payloads.thresholds)
        self._sent = 0
        self._start = 0.0
        self._measure_start = 0.0
        self._end = float("inf")
        self._stop = asyncio.Event()
        self._stopped_at = float("inf")
        self._last_answer = 0.0
        self._window_end: float | None = None

    @property
    def elapsed_s(self) -> float:
        """Measured seconds: since the warmup ended, up to now while running; once done, the
        duration (`window_is_duration`), or up to the last recorded answer (count reached, or
        stopped early)."""
        end = self._window_end if self._window_end is not None else time.perf_counter()
        return max(0.0, min(end, self._end) - self._measure_start)

    @property
    def window_is_duration(self) -> bool:
        """Whether the measured time is the configured duration, which ran to its end."""
        return self._window_end == self._end

    @property
    def drain_s(self) -> float:
        """Seconds from the end of the measured time to the last answer recorded (to a request
        due inside it): how long the run waited for late answers."""
        if not self._last_answer:
            return 0.0
        return max(0.0, self._last_answer - (self._measure_start + self.elapsed_s))

    def stop(self) -> None:
        """Stop sending; requests in flight still finish."""
        self._stopped_at = min(self._stopped_at, time.perf_counter())
        self._stop.set()

    async def run(self) -> None:
        """Send until the duration is up, the count is sent, or `stop()`."""
        plan = self.plan
        self._start = time.perf_counter()
        self._measure_start = self._start + plan.warmup_s
        if plan.duration_s is not None:
            self._end = self._measure_start + plan.duration_s
        if plan.rate is not None:
            await self._open_loop(plan.rate)
        else:
            assert plan.concurrency is not None
            workers = [self._worker(burst_only=False) for _ in range(plan.concurrency)]
            if plan.burst is not None:
                extra = round(plan.concurrency * (plan.burst.factor - 1))
                workers += [self._worker(burst_only=True) for _ in range(extra)]
            await asyncio.gather(*workers)
        if self.plan.duration_s is not None and self._stopped_at >= self._end:
            self._window_end = self._end
        else:
            self._window_end = self._last_answer or time.perf_counter()

    def _finished(self, now: float) -> bool:
        requests = self.plan.requests
        return (
            self._stop.is_set()
            or now >= self._end
            or (requests is not None and self._sent >= requests)
        )

    async def _one(self, due: float, index: int) -> None:
        draw = self._random.random() if self._mixed else 1.0
        kind, body, label = self._payloads.pick(index, draw)
        answer = await self._transport.send(body)
        done = time.perf_counter()
        if due >= self._measure_start:
            self._last_answer = done
            self._recorder.record(kind, answer, done - due, label)
            if self._labeller is not None and answer.status == OK and answer.id:
                self._labeller.offer(answer.id, label)

    async def _worker(self, burst_only: bool) -> None:
        burst = self.plan.burst
        while not self._finished(now := time.perf_counter()):
            if burst_only and burst is not None and not burst.active(now - self._start):
                wake = self._start + burst.next_start(now - self._start)
                await self._sleep_until(min(wake, self._end))
                continue
            self._sent += 1
            await self._one(now, self._sent - 1)

    async def _open_loop(self, rate: float) -> None:
        burst = self.plan.burst
        in_flight: set[asyncio.Task[None]] = set()
        due = self._start
        while not self._finished(due):
            await self._sleep_until(due)
            if self._stop.is_set():
                break
            self._sent += 1
            if len(in_flight) >= self.plan.max_in_flight:
                if due >= self._measure_start:
                    self._recorder.skipped += 1
            else:
                task = asyncio.create_task(self._one(due, self._sent - 1))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            factor = burst.factor if burst is not None and burst.active(due - self._start) else 1
            due += 1 / (rate * factor)
        if in_flight:
            await asyncio.gather(*in_flight)

    async def _sleep_until(self, when: float) -> None:
        """Sleep; a long sleep (a burst worker's) ends early on `stop()`."""
        delay = when - time.perf_counter()
        if delay < _SHORT_SLEEP_S:
            await asyncio.sleep(max(0.0, delay))
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
