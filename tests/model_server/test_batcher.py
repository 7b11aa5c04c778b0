"""The dynamic batcher on its own: grouping, bounds, deadlines, cancellation, draining."""

import asyncio
import threading
import time
from collections.abc import Sequence
from types import SimpleNamespace

import numpy as np
import pytest
from opentelemetry.util.types import Attributes

from model_server import telemetry as server_telemetry
from model_server.batcher import DynamicBatcher
from model_server.errors import (
    DeadlineExceededError,
    ModelExecutionError,
    ModelNotReadyError,
    QueueFullError,
)
from otel.logs import trace_context
from tests.telemetry_capture import TelemetryCapture


class RecordingForward:
    """Doubles its input and remembers each batch's row count."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.batches.append(inputs[0].shape[0])
        return [inputs[0] * 2]


def _batcher(forward: RecordingForward, **overrides: object) -> DynamicBatcher:
    options: dict[str, object] = {
        "name": "test:1",
        "max_batch_size": 8,
        "max_queue_delay_s": 0.05,
        "max_queue_size": 16,
    }
    options.update(overrides)
    return DynamicBatcher(forward, **options)  # type: ignore[arg-type]


def _rows(start: int, count: int) -> list[np.ndarray]:
    return [np.arange(start, start + count, dtype=np.float32).reshape(count, 1)]


def test_concurrent_requests_share_a_batch_and_get_their_own_rows() -> None:
    forward = RecordingForward()

    async def scenario() -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        batcher = _batcher(forward)
        batcher.start()
        results = await asyncio.gather(
            batcher.submit(_rows(0, 3), None),
            batcher.submit(_rows(100, 2), None),
            batcher.submit(_rows(200, 3), None),
        )
        await batcher.close()
        return results

    first, second, third = asyncio.run(scenario())
    assert forward.batches == [8]  # full batch: dispatched without waiting for the delay
    np.testing.assert_array_equal(first[0], _rows(0, 3)[0] * 2)
    np.testing.assert_array_equal(second[0], _rows(100, 2)[0] * 2)
    np.testing.assert_array_equal(third[0], _rows(200, 3)[0] * 2)


@pytest.mark.parametrize("poll_while_waiting", [True, False])
def test_the_row_that_fills_the_batch_ends_the_wait(poll_while_waiting: bool) -> None:
    forward = RecordingForward()
    delay_s = 30.0

    async def scenario() -> None:
        batcher = _batcher(
            forward, max_queue_delay_s=delay_s, poll_while_waiting=poll_while_waiting
        )
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(_rows(0, 3), None))
        await asyncio.sleep(0.05)  # the worker is waiting for more rows by now
        assert not first.done()
        await asyncio.wait_for(
            asyncio.gather(first, batcher.submit(_rows(10, 5), None)), timeout=delay_s / 3
        )
        await batcher.close()

    asyncio.run(scenario())
    assert forward.batches == [8]


def test_a_batch_never_exceeds_the_max_rows() -> None:
    forward = RecordingForward()

    async def scenario() -> None:
        batcher = _batcher(forward, max_batch_size=4)
        batcher.start()
        await asyncio.gather(*(batcher.submit(_rows(i * 10, 3), None) for i in range(3)))
        await batcher.close()

    asyncio.run(scenario())
    assert forward.batches == [3, 3, 3]


def test_disabled_batching_runs_each_request_alone() -> None:
    forward = RecordingForward()

    async def scenario() -> None:
        batcher = _batcher(forward, enabled=False)
        batcher.start()
        await asyncio.gather(*(batcher.submit(_rows(i, 1), None) for i in range(4)))
        await batcher.close()

    asyncio.run(scenario())
    assert forward.batches == [1, 1, 1, 1]


def test_full_queue_rejects_at_once(telemetry: TelemetryCapture) -> None:
    forward = RecordingForward()
    rejected_before = _rejected(telemetry, "queue_full")

    async def scenario() -> None:
        batcher = _batcher(forward, max_queue_size=2, max_queue_delay_s=0.5, max_batch_size=64)
        batcher.start()
        queued = [asyncio.ensure_future(batcher.submit(_rows(i, 1), None)) for i in range(2)]
        await asyncio.sleep(0)  # let both reach the queue
        started = time.monotonic()
        with pytest.raises(QueueFullError, match="queue is full"):
            await batcher.submit(_rows(9, 1), None)
        assert time.monotonic() - started < 0.25  # well before the 0.5 s delay
        await asyncio.gather(*queued)
        await batcher.close()

    asyncio.run(scenario())
    assert forward.batches == [2]
    assert _rejected(telemetry, "queue_full") == rejected_before + 1


def _rejected(telemetry: TelemetryCapture, reason: str) -> float:
    return telemetry.total("inferwatch.server.requests.rejected", reason=reason)


def test_expired_request_is_not_computed(telemetry: TelemetryCapture) -> None:
    forward = RecordingForward()
    rejected_before = _rejected(telemetry, "deadline")

    async def scenario() -> None:
        batcher = _batcher(forward, max_queue_delay_s=0.05, max_batch_size=64)
        batcher.start()
        expired = batcher.submit(_rows(0, 5), deadline=time.monotonic() + 0.01)
        alive = batcher.submit(_rows(10, 1), deadline=None)
        results = await asyncio.gather(expired, alive, return_exceptions=True)
        assert isinstance(results[0], DeadlineExceededError)
        await batcher.close()

    asyncio.run(scenario())
    assert forward.batches == [1]
    assert _rejected(telemetry, "deadline") == rejected_before + 1


def test_cancelled_request_is_not_computed() -> None:
    forward = RecordingForward()

    async def scenario() -> None:
        batcher = _batcher(forward, max_queue_delay_s=0.05, max_batch_size=64)
        batcher.start()
        abandoned = asyncio.ensure_future(batcher.submit(_rows(0, 5), None))
        kept = asyncio.ensure_future(batcher.submit(_rows(10, 1), None))
        await asyncio.sleep(0)
        abandoned.cancel()
        await kept
        await batcher.close()

    asyncio.run(scenario())
    assert forward.batches == [1]


class BlockingForward(RecordingForward):
    """Holds each pass (on the inference thread) until `release` is set; `started` tells that
    one is running."""

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.started.set()
        self.release.wait(30)
        return super().__call__(inputs)


def test_requests_given_up_while_queued_stop_counting_at_once() -> None:
    """A caller that gives up (a cancel; gRPC cancels the handler when the deadline passes) no
    longer takes a place in the bounded queue or in its depth, even behind a long pass."""
    forward = BlockingForward()

    async def scenario() -> list[np.ndarray]:
        batcher = _batcher(forward, max_queue_size=2, max_queue_delay_s=0.0, max_batch_size=64)
        batcher.start()
        try:
            running = asyncio.ensure_future(batcher.submit(_rows(0, 1), None))
            await asyncio.to_thread(forward.started.wait, 30)
            given_up = [asyncio.ensure_future(batcher.submit(_rows(i, 1), None)) for i in (1, 2)]
            await asyncio.sleep(0)  # both are queued: the queue is full
            assert batcher.queue_depth == 2
            for call in given_up:
                call.cancel()
            await asyncio.gather(*given_up, return_exceptions=True)

            assert batcher.queue_depth == 0
            live = asyncio.ensure_future(batcher.submit(_rows(3, 1), None))
            await asyncio.sleep(0)
            assert batcher.queue_depth == 1
        finally:
            forward.release.set()
        await running
        result = await live
        await batcher.close()
        return result

    np.testing.assert_array_equal(asyncio.run(scenario())[0], _rows(3, 1)[0] * 2)
    assert forward.batches == [1, 1]  # the given-up requests were never computed


def test_close_finishes_queued_requests_then_refuses_new_ones() -> None:
    forward = RecordingForward()

    async def scenario() -> None:
        batcher = _batcher(forward, max_queue_delay_s=5.0, max_batch_size=64)
        batcher.start()
        queued = asyncio.ensure_future(batcher.submit(_rows(0, 2), None))
        await asyncio.sleep(0)
        await batcher.close()  # does not wait the 5 s delay
        np.testing.assert_array_equal((await queued)[0], _rows(0, 2)[0] * 2)
        with pytest.raises(ModelNotReadyError):
            await batcher.submit(_rows(0, 1), None)

    asyncio.run(scenario())


def test_forward_failure_fails_the_batch_not_the_batcher() -> None:
    calls = 0

    def flaky(inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        return [inputs[0]]

    async def scenario() -> None:
        batcher = DynamicBatcher(
            flaky, name="flaky:1", max_batch_size=4, max_queue_delay_s=0.0, max_queue_size=4
        )
        batcher.start()
        with pytest.raises(Exception, match="forward pass failed"):
            await batcher.submit(_rows(0, 1), None)
        assert (await batcher.submit(_rows(5, 1), None))[0][0, 0] == 5
        await batcher.close()

    asyncio.run(scenario())


def test_a_failure_around_the_pass_fails_the_batch_not_the_batcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = server_telemetry.queue_duration
    calls = 0

    def record_once_broken(amount: float, attributes: Attributes = None) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("telemetry broke")
        recorded.record(amount, attributes)

    monkeypatch.setattr(
        server_telemetry,
        "queue_duration",
        SimpleNamespace(record=record_once_broken),
    )
    forward = RecordingForward()

    async def scenario() -> None:
        batcher = _batcher(forward, max_queue_delay_s=0.0)
        batcher.start()
        # Before the fix the worker stopped: both calls waited forever.
        with pytest.raises(ModelExecutionError, match="the batch failed"):
            await asyncio.wait_for(batcher.submit(_rows(0, 1), None), 10)
        assert (await asyncio.wait_for(batcher.submit(_rows(5, 1), None), 10))[0][0, 0] == 10
        await batcher.close()

    asyncio.run(scenario())
    assert forward.batches == [1]


class ThreadRecordingForward(RecordingForward):
    """Also remembers which thread ran each pass."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.threads.append(threading.get_ident())
        return super().__call__(inputs)


@pytest.mark.parametrize(
    ("inline_forward_max_s", "later_passes_inline"), [(1.0, True), (0.0, False)]
)
def test_fast_forward_passes_move_onto_the_event_loop(
    inline_forward_max_s: float, later_passes_inline: bool
) -> None:
    forward = ThreadRecordingForward()

    async def scenario() -> int:
        batcher = _batcher(forward, max_queue_delay_s=0, inline_forward_max_s=inline_forward_max_s)
        batcher.start()
        for start in range(3):
            result = await batcher.submit(_rows(start, 1), None)
            np.testing.assert_array_equal(result[0], _rows(start, 1)[0] * 2)
        await batcher.close()
        return threading.get_ident()

    loop_thread = asyncio.run(scenario())
    first, *later = forward.threads
    assert first != loop_thread  # no pass measured yet: the first runs on the inference thread
    assert all((thread == loop_thread) is later_passes_inline for thread in later)


class SlowPassesForward(ThreadRecordingForward):
    """Sleeps (holding no GIL, like a pass waiting for it) on the passes numbered in `slow`."""

    def __init__(self, slow: set[int], seconds: float) -> None:
        super().__init__()
        self._slow = slow
        self._seconds = seconds

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(self.threads) in self._slow:
            time.sleep(self._seconds)
        return super().__call__(inputs)


def _threads_of_passes(forward: ThreadRecordingForward, passes: int) -> tuple[int, list[int]]:
    """(event loop thread, the thread of each pass) of `passes` one-row requests in a row."""

    async def scenario() -> int:
        batcher = _batcher(forward, max_queue_delay_s=0, inline_forward_max_s=0.002)
        batcher.start()
        for start in range(passes):
            await batcher.submit(_rows(start, 1), None)
        await batcher.close()
        return threading.get_ident()

    return asyncio.run(scenario()), forward.threads


def test_one_slow_pass_does_not_move_a_cheap_model_off_the_event_loop() -> None:
    loop_thread, threads = _threads_of_passes(SlowPassesForward({3}, 0.02), 8)

    assert threads[2] == loop_thread
    assert threads[3:] == [loop_thread] * 5  # the slow 4th pass, and every one after it


def test_a_model_whose_passes_stay_slow_leaves_the_event_loop() -> None:
    loop_thread, threads = _threads_of_passes(SlowPassesForward(set(range(3, 12)), 0.01), 12)

    assert threads[2] == loop_thread
    # 10 ms passes against a 2 ms bound: the cost passes the bound after five of them.
    assert threads[9:] == [threads[0]] * 3


@pytest.mark.parametrize("skip_unproductive_delay", [True, False])
def test_lone_requests_stop_paying_the_queue_delay(skip_unproductive_delay: bool) -> None:
    forward = RecordingForward()
    delay_s = 2.0

    async def scenario() -> bool:
        batcher = _batcher(
            forward,
            max_queue_delay_s=delay_s,
            skip_unproductive_delay=skip_unproductive_delay,
        )
        batcher.start()
        await batcher.submit(_rows(0, 1), None)  # waits the whole delay: nobody joins it
        try:
            # Half the delay is far more than a lone request needs when it does not wait.
            await asyncio.wait_for(batcher.submit(_rows(1, 1), None), timeout=delay_s / 2)
            answered_early = True
        except TimeoutError:
            answered_early = False
        await batcher.close()
        return answered_early

    assert asyncio.run(scenario()) is skip_unproductive_delay


@pytest.mark.parametrize("poll_while_waiting", [True, False])
def test_a_probe_notices_traffic_picking_up(poll_while_waiting: bool) -> None:
    forward = RecordingForward()

    async def scenario() -> None:
        batcher = _batcher(
            forward,
            max_batch_size=64,
            max_queue_delay_s=0.3,
            probe_every=4,
            poll_while_waiting=poll_while_waiting,
        )
        batcher.start()
        for start in range(3):  # lone requests: the first wait gathers nobody, then no waits
            await batcher.submit(_rows(start, 1), None)

        async def later(index: int) -> list[np.ndarray]:
            await asyncio.sleep(index * 0.02)
            return await batcher.submit(_rows(100 + index, 1), None)

        results = await asyncio.gather(*(later(i) for i in range(12)))
        for index, result in enumerate(results):
            np.testing.assert_array_equal(result[0], _rows(100 + index, 1)[0] * 2)
        await batcher.close()

    asyncio.run(scenario())
    assert forward.batches[:4] == [1, 1, 1, 1]  # the stream's first request did not wait
    assert sum(forward.batches) == 15
    # The 4th batch after the last wait waits again and gathers the requests arriving meanwhile.
    assert max(forward.batches[3:]) >= 5


class SlowForward(RecordingForward):
    """Takes `seconds` per pass (on the inference thread), like a model slower than the delay."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        time.sleep(self.seconds)
        return super().__call__(inputs)


def test_a_backlog_behind_a_slow_pass_does_not_stop_the_waits() -> None:
    """While passes take longer than the delay, every next batch is overdue before it could
    wait: that is no sign that waiting gathers nobody, so lone requests must still wait after."""
    delay_s = 0.1
    forward = SlowForward(seconds=0.25)

    async def scenario() -> None:
        batcher = _batcher(forward, max_batch_size=64, max_queue_delay_s=delay_s)
        batcher.start()

        async def later(index: int, spacing_s: float) -> list[np.ndarray]:
            await asyncio.sleep(index * spacing_s)
            return await batcher.submit(_rows(index, 1), None)

        await asyncio.gather(*(later(i, 0.06) for i in range(24)))  # a backlog, ~6 passes
        await asyncio.gather(*(later(i, delay_s / 5) for i in range(2)))  # 20 ms apart
        await batcher.close()

    asyncio.run(scenario())
    assert sum(forward.batches) == 26
    assert forward.batches[-1] == 2  # the first of the two waited and the second joined it


def test_a_pass_off_the_event_loop_runs_in_its_batchs_trace(telemetry: TelemetryCapture) -> None:
    """What the inference thread logs (the model, the batch observer) carries the forward span."""
    forward = RecordingForward()
    seen: list[tuple[threading.Thread, dict[str, str]]] = []

    def observe(inputs: Sequence[np.ndarray], outputs: list[np.ndarray]) -> None:
        seen.append((threading.current_thread(), trace_context()))

    async def scenario() -> None:
        batcher = _batcher(forward, observe_batch=observe, inline_forward_max_s=0.0)
        batcher.start()
        await batcher.submit(_rows(0, 1), None)
        await batcher.close()

    asyncio.run(scenario())
    (forward_span,) = [s for s in telemetry.finished_spans() if s.name == "infer.forward"]
    ((thread, context),) = seen
    assert thread is not threading.main_thread()
    assert context == {
        "trace_id": f"{forward_span.context.trace_id:032x}",
        "span_id": f"{forward_span.context.span_id:016x}",
    }
