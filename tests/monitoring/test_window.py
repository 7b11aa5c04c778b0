"""Sliding-window expiry by count and by time (an injected clock, no sleeping) and locking."""

import threading

import numpy as np
import pytest

from monitoring.drift import DriftConfig, DriftMonitor, build_reference
from monitoring.drift.window import SlidingWindow


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _window(
    clock: FakeClock, rows: int | None, seconds: float | None, buckets: int
) -> SlidingWindow:
    return SlidingWindow(2, max_rows=rows, max_seconds=seconds, buckets=buckets, clock=clock)


def _add(window: SlidingWindow, rows: int, value: float = 1.0) -> None:
    window.add(rows, np.array([rows * value, rows]))


def test_count_window_holds_between_n_and_n_plus_one_bucket() -> None:
    clock = FakeClock()
    window = _window(clock, rows=100, seconds=None, buckets=4)  # buckets of 25 rows
    for i in range(1, 400):
        _add(window, 1)
        snap = window.snapshot()
        assert snap.rows == snap.totals[1]
        if i >= 100:
            assert 100 <= snap.rows < 125
        else:
            assert snap.rows == i
    assert window.snapshot().buckets <= 5


def test_count_window_forgets_old_values() -> None:
    clock = FakeClock()
    window = _window(clock, rows=100, seconds=None, buckets=10)
    for _ in range(10):
        _add(window, 10, value=0.0)
    for _ in range(10):
        _add(window, 10, value=1.0)
    snap = window.snapshot()
    assert snap.rows == 100
    assert snap.totals[0] == 100.0  # only the newer rows, each worth 1


def test_batches_larger_than_a_bucket_stay_whole() -> None:
    clock = FakeClock()
    window = _window(clock, rows=100, seconds=None, buckets=10)
    for _ in range(5):
        _add(window, 64)
    snap = window.snapshot()
    assert snap.rows == 128  # two batches: one alone would be < 100 rows
    assert snap.totals[1] == 128


def test_time_window_expires_by_age() -> None:
    clock = FakeClock()
    window = _window(clock, rows=None, seconds=60.0, buckets=6)  # buckets of 10 s
    for _ in range(12):  # one row every 5 s for 60 s
        _add(window, 1)
        clock.now += 5.0
    snap = window.snapshot()
    # Rows at t=0..55 s; now 60 s. The bucket [0, 10) s has its newest row at 5 s, 55 s old.
    assert snap.rows == 12
    assert snap.oldest == 1000.0
    clock.now += 6.0  # now 66 s: the first bucket's newest row (5 s) is 61 s old
    assert window.snapshot().rows == 10
    clock.now += 100.0
    snap = window.snapshot()
    assert (snap.rows, snap.buckets, snap.oldest, snap.newest) == (0, 0, None, None)
    assert not snap.totals.any()


def test_count_and_time_together() -> None:
    clock = FakeClock()
    window = _window(clock, rows=50, seconds=10.0, buckets=5)
    for _ in range(200):  # fast traffic: the count bound rules
        _add(window, 1)
        clock.now += 0.001
    assert 50 <= window.snapshot().rows < 60
    clock.now += 30.0  # silence: the time bound empties the window
    assert window.snapshot().rows == 0
    _add(window, 3)
    assert window.snapshot().rows == 3


def test_window_arguments_are_checked() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="max_rows, max_seconds"):
        _window(clock, rows=None, seconds=None, buckets=3)
    with pytest.raises(ValueError, match="buckets"):
        _window(clock, rows=10, seconds=None, buckets=0)
    with pytest.raises(ValueError, match="window_rows, window_seconds"):
        DriftConfig(window_rows=None, window_seconds=None)


def test_monitor_window_by_time_reports_ages() -> None:
    clock = FakeClock()
    reference = build_reference(np.random.default_rng(0).normal(size=(500, 3)))
    monitor = DriftMonitor(
        reference, DriftConfig(window_rows=None, window_seconds=30.0, buckets=3), clock=clock
    )
    rng = np.random.default_rng(1)
    monitor.update(rng.normal(size=(200, 3)))
    clock.now += 15.0
    monitor.update(rng.normal(size=(200, 3)))
    clock.now += 5.0
    report = monitor.evaluate()
    assert report.window.rows == 400
    assert report.window.oldest_age_s == pytest.approx(20.0)
    assert report.window.newest_age_s == pytest.approx(5.0)
    assert report.features[0].samples == 400
    clock.now += 20.0  # the first batch is 40 s old
    report = monitor.evaluate()
    assert report.window.rows == report.features[0].samples == 200
    clock.now += 100.0
    report = monitor.evaluate()
    assert report.status == "insufficient_data"
    assert report.window.rows == 0


def test_concurrent_update_and_evaluate_lose_nothing() -> None:
    reference = build_reference(np.random.default_rng(0).integers(0, 17, (500, 64)).astype(float))
    monitor = DriftMonitor(reference, DriftConfig(window_rows=10**9, window_seconds=None))
    batch = np.random.default_rng(1).integers(0, 17, (32, 64)).astype(np.float32)
    stop = threading.Event()
    seen: list[tuple[int, bool]] = []

    def evaluate_loop() -> None:
        while not stop.is_set():
            report = monitor.evaluate()
            # A snapshot is consistent: every feature saw every counted row.
            consistent = all(f.samples == report.window.rows for f in report.features)
            seen.append((report.window.rows, consistent))

    def update_loop() -> None:
        for _ in range(300):
            monitor.update(batch)

    evaluator = threading.Thread(target=evaluate_loop)
    updaters = [threading.Thread(target=update_loop) for _ in range(2)]
    evaluator.start()
    for t in updaters:
        t.start()
    for t in updaters:
        t.join()
    stop.set()
    evaluator.join()
    assert monitor.evaluate().window.rows == 2 * 300 * 32
    assert seen
    assert all(consistent for _, consistent in seen)
    rows = [r for r, _ in seen]
    assert rows == sorted(rows)
