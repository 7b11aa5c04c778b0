"""Self-metrics of the telemetry pipeline: failed exports and dropped items, per signal.

The SDK keeps these to itself, so exporters are wrapped (to see each export's result) and the
batch processors' drop hook is wrapped (to see what a full queue discards). Counts are plain
tallies, cheap on the application thread, observed as counters at collection time:

- `inferwatch.telemetry.export.failures` {signal}: export requests that failed or raised.
- `inferwatch.telemetry.dropped` {signal, reason}: spans and log records that never reached
  the backend; reason is `queue_full`, `export_failed`, `already_shutdown` or (spans)
  `encoding_failed`.

A full queue is also logged, once when drops begin and then at most every
`DROP_WARNING_INTERVAL_S`, in place of the SDK's warning for each dropped item (see
`count_queue_drops`).
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, TypeVar

from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

Signal = Literal["traces", "metrics", "logs"]

logger = logging.getLogger(__name__)

_Result = TypeVar("_Result", SpanExportResult, MetricExportResult, LogRecordExportResult)

DROP_WARNING_INTERVAL_S = 60.0
"""Least time between two of our warnings that a processor's queue is full."""


class PipelineStats:
    """Thread-safe tallies, observed by `register(meter)`; every series starts at 0."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: Counter[Signal] = Counter({"traces": 0, "metrics": 0, "logs": 0})
        self._dropped: Counter[tuple[Signal, str]] = Counter(
            {("traces", "queue_full"): 0, ("logs", "queue_full"): 0}
        )

    def export_failed(self, signal: Signal, items: int) -> None:
        """One export request failed; its `items` spans or log records are lost."""
        with self._lock:
            self._failures[signal] += 1
            if signal != "metrics":
                self._dropped[signal, "export_failed"] += items

    def dropped(self, signal: Signal, items: int, reason: str) -> None:
        """A processor discarded `items` before export."""
        with self._lock:
            self._dropped[signal, reason] += items

    def register(self, meter: Meter) -> None:
        """Creates the two observable counters on `meter`."""
        meter.create_observable_counter(
            "inferwatch.telemetry.export.failures",
            [self._observe_failures],
            unit="{request}",
            description="Telemetry export requests that failed, per signal.",
        )
        meter.create_observable_counter(
            "inferwatch.telemetry.dropped",
            [self._observe_dropped],
            unit="{item}",
            description="Spans and log records dropped before export, per signal and reason.",
        )

    def _observe_failures(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            return [Observation(n, {"signal": s}) for s, n in self._failures.items()]

    def _observe_dropped(self, _: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            return [
                Observation(n, {"signal": s, "reason": r}) for (s, r), n in self._dropped.items()
            ]


def count_queue_drops(
    processor: BatchSpanProcessor | BatchLogRecordProcessor, signal: Signal, stats: PipelineStats
) -> None:
    """Counts what `processor` drops into `stats`.

    SDK 1.45 reports drops only to the batch processor's internal-metrics hook
    (`_batch_processor._metrics.drop_items`, a no-op unless OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED
    is set); the hook is wrapped, so the count is exactly the SDK's own drop decision.

    The SDK also calls `logger.warning` for every item a full queue drops, on the thread that
    ended the span or wrote the log line. Its duplicate filter prints one line in 20 s, but only
    after the logging module has built the record, caller lookup included: about 7 µs per span
    on the serving thread (measured alone), which cost a model server 5-34% of its throughput
    at c=32 during an OTLP outage (docs/RELIABILITY.md). So the SDK module's logger is raised
    to ERROR (its export errors still show) and the wrapped hook logs the full queue itself,
    rarely.
    """
    batch = getattr(processor, "_batch_processor", None)
    hook = getattr(batch, "_metrics", None)
    if batch is None or not callable(getattr(hook, "drop_items", None)):
        logger.warning("Dropped %s are not counted: unexpected SDK batch processor", signal)
        return
    logging.getLogger(type(batch).__module__).setLevel(logging.ERROR)
    batch._metrics = _DropHook(hook, signal, stats)


class _DropHook:
    """The SDK's processor-metrics hook, with drops also tallied in `PipelineStats` and a full
    queue logged at most every `DROP_WARNING_INTERVAL_S`."""

    def __init__(self, inner: Any, signal: Signal, stats: PipelineStats) -> None:
        self._inner = inner
        self._signal: Signal = signal
        self._stats = stats
        self._next_warning = 0.0

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        self._stats.dropped(self._signal, count, error_type)
        self._inner.drop_items(count, error_type)
        if error_type == "queue_full" and (now := time.monotonic()) >= self._next_warning:
            # Set before logging: a log record dropped by a full logs queue comes back here.
            self._next_warning = now + DROP_WARNING_INTERVAL_S
            logger.warning(
                "Telemetry export queue full: dropping %s (counted in "
                "inferwatch_telemetry_dropped_total; logged again in %.0f s at most)",
                self._signal,
                DROP_WARNING_INTERVAL_S,
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _ExporterWrapper:
    """Counts failed exports; `shutdown` reaches the wrapped exporter once, and afterwards
    exports fail here (quietly: the SDK exporters warn on every call after their shutdown)."""

    def __init__(self, signal: Signal, stats: PipelineStats, shutdown: Callable[[], None]) -> None:
        self._signal: Signal = signal
        self._stats = stats
        self._shutdown_inner = shutdown
        self._shut_down = False

    def _counted(
        self, items: int, success: _Result, failure: _Result, export: Callable[[], _Result]
    ) -> _Result:
        """`export()`'s result, counted; after `shutdown` a failure without calling it."""
        if self._shut_down:
            self._stats.export_failed(self._signal, items)
            return failure
        try:
            result = export()
        except Exception:
            self._stats.export_failed(self._signal, items)
            raise
        if result is not success:
            self._stats.export_failed(self._signal, items)
        return result

    def _shutdown_once(self) -> None:
        if not self._shut_down:
            self._shut_down = True
            self._shutdown_inner()


class CountingSpanExporter(_ExporterWrapper, SpanExporter):
    """A span exporter whose failures are counted."""

    def __init__(self, inner: SpanExporter, stats: PipelineStats) -> None:
        super().__init__("traces", stats, inner.shutdown)
        self._inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._counted(
            len(spans),
            SpanExportResult.SUCCESS,
            SpanExportResult.FAILURE,
            lambda: self._inner.export(spans),
        )

    def shutdown(self) -> None:
        self._shutdown_once()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingLogExporter(_ExporterWrapper, LogRecordExporter):
    """A log record exporter whose failures are counted."""

    def __init__(self, inner: LogRecordExporter, stats: PipelineStats) -> None:
        super().__init__("logs", stats, inner.shutdown)
        self._inner = inner

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        return self._counted(
            len(batch),
            LogRecordExportResult.SUCCESS,
            LogRecordExportResult.FAILURE,
            lambda: self._inner.export(batch),
        )

    def shutdown(self) -> None:
        self._shutdown_once()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


class CountingMetricExporter(_ExporterWrapper, MetricExporter):
    """A metric exporter whose failures are counted (metrics are cumulative: nothing is lost)."""

    def __init__(self, inner: MetricExporter, stats: PipelineStats) -> None:
        _ExporterWrapper.__init__(self, "metrics", stats, inner.shutdown)
        MetricExporter.__init__(
            self,
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self._inner = inner

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        return self._counted(
            0,
            MetricExportResult.SUCCESS,
            MetricExportResult.FAILURE,
            lambda: self._inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs),
        )

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._shutdown_once()

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)
