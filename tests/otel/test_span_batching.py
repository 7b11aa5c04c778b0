"""`GroupingBatchSpanProcessor` queues spans encoded a group at a time and loses none the SDK's
batch processor would export."""

import logging
import os
import threading
from collections.abc import Iterator, Sequence

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Span, Tracer

from otel.selfmetrics import PipelineStats, count_queue_drops
from otel.span_batching import GroupingBatchSpanProcessor
from otel.span_encoding import SpanEncoder
from otel.tracing import LeanSpan, LeanTracerProvider
from tests.telemetry_capture import data_points


class Exported(SpanExporter):
    """Keeps every exported span, in export order; `arrived` is set at each export."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.arrived = threading.Event()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans.extend(spans)
        self.arrived.set()
        return SpanExportResult.SUCCESS

    def names(self) -> list[str]:
        return [span.name for span in self.spans]


@pytest.fixture
def exported() -> Exported:
    return Exported()


@pytest.fixture
def provider() -> Iterator[LeanTracerProvider]:
    """A provider whose processors are shut down after the test."""
    provider = LeanTracerProvider(shutdown_on_exit=False)
    yield provider
    provider.shutdown()


def _add(
    provider: LeanTracerProvider, exported: Exported, group: int
) -> tuple[GroupingBatchSpanProcessor, Tracer]:
    processor = GroupingBatchSpanProcessor(exported, SpanEncoder(), group)
    provider.add_span_processor(processor)
    return processor, provider.get_tracer("tests.batching")


def _ended(tracer: Tracer, *names: str) -> list[Span]:
    spans = [tracer.start_span(name) for name in names]
    for span in spans:
        span.end()
    return spans


def _encoded(spans: Sequence[Span]) -> list[bool]:
    return [isinstance(span, LeanSpan) and span.encoded is not None for span in spans]


def test_spans_are_encoded_and_queued_a_group_at_a_time(
    provider: LeanTracerProvider, exported: Exported
) -> None:
    processor, tracer = _add(provider, exported, group=3)

    first_two = _ended(tracer, "a", "b")
    assert _encoded(first_two) == [False, False]
    rest = _ended(tracer, "c", "d")
    assert _encoded(first_two + rest) == [True, True, True, False]

    assert processor.force_flush()  # the waiting span goes too
    assert exported.names() == ["a", "b", "c", "d"]
    sent = [span for span in exported.spans if isinstance(span, LeanSpan)]
    encoder = SpanEncoder()
    assert [span.encoded for span in sent[:3]] == [encoder.encode_span(span) for span in sent[:3]]


def test_a_trickle_is_exported_on_the_schedule(
    provider: LeanTracerProvider, exported: Exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
    _, tracer = _add(provider, exported, group=32)

    _ended(tracer, "lonely")

    assert exported.arrived.wait(10)
    assert exported.names() == ["lonely"]


def test_shutdown_exports_the_spans_still_waiting_and_drops_later_ones(
    provider: LeanTracerProvider, exported: Exported
) -> None:
    processor, tracer = _add(provider, exported, group=2)
    reader = _counting_drops(processor)

    _ended(tracer, "waiting")
    processor.shutdown()
    assert exported.names() == ["waiting"]

    _ended(tracer, "late", "later")  # a whole group after shutdown
    assert exported.names() == ["waiting"]
    assert _dropped(reader, "already_shutdown") == 2


def test_a_full_queue_loses_its_oldest_spans_and_counts_them(
    provider: LeanTracerProvider, exported: Exported, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in [("QUEUE_SIZE", "4"), ("EXPORT_BATCH_SIZE", "4")]:
        monkeypatch.setenv(f"OTEL_BSP_MAX_{name}", value)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    processor, tracer = _add(provider, exported, group=3)
    reader = _counting_drops(processor)

    _ended(tracer, *"abcdef")  # two groups of three into a queue of four

    assert _dropped(reader, "queue_full") == 2
    assert processor.force_flush()
    assert exported.names() == ["c", "d", "e", "f"]


def test_a_span_it_cannot_encode_is_dropped_and_counted_and_the_rest_exported(
    provider: LeanTracerProvider, exported: Exported, caplog: pytest.LogCaptureFixture
) -> None:
    processor, tracer = _add(provider, exported, group=2)
    reader = _counting_drops(processor)

    with caplog.at_level(logging.WARNING, logger="otel.span_batching"):
        broken, fine, _, _ = _ended(tracer, "lone surrogate \ud800", "fine", "\ud801", "x")

    assert _encoded([broken, fine]) == [False, True]
    assert _dropped(reader, "encoding_failed") == 2
    [warning] = caplog.records  # the second failure, seconds later, is only counted
    assert "lone surrogate" in warning.getMessage()
    assert processor.force_flush()
    assert exported.names() == ["fine", "x"]


def test_a_forked_child_starts_without_the_parents_waiting_spans_or_lock(
    provider: LeanTracerProvider, exported: Exported
) -> None:
    processor, tracer = _add(provider, exported, group=32)
    _ended(tracer, "waiting in the parent")

    with processor._ended_lock:  # held by the parent while it forks
        child = os.fork()
        if child == 0:  # pragma: no cover (the child)
            free = processor._ended_lock.acquire(timeout=5)
            os._exit(0 if free and not processor._ended else 1)
    _, status = os.waitpid(child, 0)

    assert os.waitstatus_to_exitcode(status) == 0
    assert processor.force_flush()
    assert exported.names() == ["waiting in the parent"]


def _counting_drops(processor: GroupingBatchSpanProcessor) -> InMemoryMetricReader:
    """A reader of the drops `processor` counts, as the bootstrap wires them."""
    reader = InMemoryMetricReader()
    stats = PipelineStats()
    stats.register(MeterProvider([reader]).get_meter("tests.batching"))
    count_queue_drops(processor, "traces", stats)
    return reader


def _dropped(reader: InMemoryMetricReader, reason: str) -> float:
    points = [
        point
        for point in data_points(reader, "inferwatch.telemetry.dropped")
        if point.attributes == {"signal": "traces", "reason": reason}
    ]
    assert all(isinstance(point, NumberDataPoint) for point in points)
    return sum(point.value for point in points if isinstance(point, NumberDataPoint))
