"""A sliding window of summed count vectors, bounded by rows and by age, in sub-window buckets.

The window never stores rows. Each bucket holds one float64 vector (bin counts and a few
sums, laid out by the monitor) for a slice of consecutive updates. New updates add into the
newest ("open") bucket; it closes when it holds `ceil(max_rows / buckets)` rows or has been
open `max_seconds / buckets`, and a fresh one opens. Expiry drops whole buckets from the old
end:

* by count: while the rows *without* the oldest bucket still number at least `max_rows`. Once
  warm the window holds at least `max_rows` rows and fewer than `max_rows` plus one bucket.
* by time: a bucket whose newest row is older than `max_seconds`. So no row older than
  `max_seconds + max_seconds / buckets` is counted.

Thread-safety: `add` and `snapshot` take one lock, briefly. Only the open bucket is ever
written; `snapshot` copies it and keeps references to the closed ones (never written again),
so the summing happens outside the lock.
"""

import math
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


class _Bucket:
    __slots__ = ("first", "last", "rows", "values")

    def __init__(self, size: int, now: float) -> None:
        self.values: FloatArray = np.zeros(size, dtype=np.float64)
        self.rows = 0
        self.first = now
        self.last = now


@dataclass(frozen=True)
class WindowSnapshot:
    """The window's summed vector at one instant."""

    totals: FloatArray
    rows: int
    buckets: int
    oldest: float | None
    """Clock time of the oldest counted update (None when empty)."""
    newest: float | None
    """Clock time of the newest counted update (None when empty)."""


class SlidingWindow:
    """Sums of vectors over the most recent rows and seconds (see the module docstring)."""

    def __init__(
        self,
        size: int,
        *,
        max_rows: int | None,
        max_seconds: float | None,
        buckets: int,
        clock: Callable[[], float],
    ) -> None:
        if max_rows is None and max_seconds is None:
            raise ValueError("a window needs max_rows, max_seconds or both")
        if max_rows is not None and max_rows < 1:
            raise ValueError(f"max_rows must be >= 1, got {max_rows}")
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        if buckets < 1:
            raise ValueError(f"buckets must be >= 1, got {buckets}")
        self._size = size
        self._max_rows = max_rows
        self._max_seconds = max_seconds
        self._bucket_rows = math.ceil(max_rows / buckets) if max_rows is not None else None
        self._bucket_seconds = max_seconds / buckets if max_seconds is not None else None
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: deque[_Bucket] = deque()
        self._rows = 0

    @property
    def max_rows(self) -> int | None:
        """Row bound (None: unbounded by count)."""
        return self._max_rows

    @property
    def max_seconds(self) -> float | None:
        """Age bound (None: unbounded by time)."""
        return self._max_seconds

    def add(self, rows: int, delta: FloatArray) -> None:
        """Count `rows` rows whose summed contribution to the vector is `delta`."""
        if rows <= 0:
            return
        now = self._clock()
        with self._lock:
            self._expire(now)
            bucket = self._buckets[-1] if self._buckets else None
            if bucket is None or self._full(bucket, now):
                bucket = _Bucket(self._size, now)
                self._buckets.append(bucket)
            bucket.values += delta
            bucket.rows += rows
            bucket.last = now
            self._rows += rows
            self._expire(now)

    def snapshot(self) -> WindowSnapshot:
        """The current sums; expires old buckets first."""
        now = self._clock()
        with self._lock:
            self._expire(now)
            buckets = list(self._buckets)
            open_values = buckets[-1].values.copy() if buckets else None
            rows = self._rows
        if open_values is None:
            return WindowSnapshot(np.zeros(self._size), 0, 0, None, None)
        totals = open_values
        for bucket in buckets[:-1]:
            totals += bucket.values
        return WindowSnapshot(totals, rows, len(buckets), buckets[0].first, buckets[-1].last)

    def clear(self) -> None:
        """Forget every row."""
        with self._lock:
            self._buckets.clear()
            self._rows = 0

    def _full(self, bucket: _Bucket, now: float) -> bool:
        if self._bucket_rows is not None and bucket.rows >= self._bucket_rows:
            return True
        return self._bucket_seconds is not None and now - bucket.first >= self._bucket_seconds

    def _expire(self, now: float) -> None:
        buckets = self._buckets
        if self._max_seconds is not None:
            horizon = now - self._max_seconds
            while buckets and buckets[0].last < horizon:
                self._rows -= buckets.popleft().rows
        if self._max_rows is not None:
            while len(buckets) > 1 and self._rows - buckets[0].rows >= self._max_rows:
                self._rows -= buckets.popleft().rows
