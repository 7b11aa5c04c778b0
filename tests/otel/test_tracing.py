"""`LeanTracerProvider` makes the spans the SDK's `TracerProvider` makes, field for field.

Every scenario runs twice, once per provider, with the same deterministic ids and the same
processors, and what reaches the processors is compared: through the SDK's own OTLP encoder
(every field the SDK exports), and the span contexts and sampling decisions directly.
"""

import itertools
from collections.abc import Callable, Sequence

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    Decision,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from otel.tracing import LeanSpan, LeanTracerProvider
from tests.otel.support import MakeTelemetry

PROVIDERS = (TracerProvider, LeanTracerProvider)
REMOTE_PARENT = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID),
    trace_state=TraceState([("vendor", "opaque")]),
)
UNSAMPLED_PARENT = SpanContext(
    trace_id=0x1AF7651916CD43DD8448EB211C80319C, span_id=0x10F067AA0BA902B7, is_remote=True
)
LOCAL_PARENT = SpanContext(
    trace_id=0x2AF7651916CD43DD8448EB211C80319C,
    span_id=0x20F067AA0BA902B7,
    is_remote=False,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
)
CLOCK_TIMES = 1_000_000
"""Timestamps above this came from the clock; the scenarios' own are small."""
LIMITS = SpanLimits(
    max_span_attributes=4,
    max_events=2,
    max_links=2,
    max_span_attribute_length=5,
    max_event_attributes=1,
    max_link_attributes=1,
)


class CountingIds(IdGenerator):
    """Deterministic ids, spread over the whole range (so ratio samplers decide both ways)."""

    def __init__(self, random: bool) -> None:
        self._next = itertools.count(1)
        self._random = random

    def generate_span_id(self) -> int:
        return (next(self._next) * 0x9E3779B97F4A7C15) % 2**64 or 1

    def generate_trace_id(self) -> int:
        return (next(self._next) * 0x9E3779B97F4A7C15F39CC0605CEDC835) % 2**128 or 1

    def is_trace_id_random(self) -> bool:
        return self._random


class AnnotatingSampler(Sampler):
    """Samples every other root span, adds an attribute and a trace state entry."""

    def __init__(self) -> None:
        self._calls = itertools.count()

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        decision = Decision.RECORD_AND_SAMPLE if next(self._calls) % 2 else Decision.RECORD_ONLY
        return SamplingResult(
            decision, {**(attributes or {}), "sampled.by": "test"}, TraceState([("s", name[:3])])
        )

    def get_description(self) -> str:
        return "AnnotatingSampler"


def _provider(
    kind: type[TracerProvider],
    *processors: SpanProcessor,
    sampler: Sampler | None = None,
    random_ids: bool = False,
    limits: SpanLimits | None = None,
) -> TracerProvider:
    provider = kind(
        sampler=sampler or DEFAULT_ON,
        resource=Resource.create({"service.name": "tracing-test"}),
        shutdown_on_exit=False,
        id_generator=CountingIds(random_ids),
        span_limits=limits,
    )
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _everything(provider: TracerProvider) -> None:
    """Every span operation the API has, with fixed times where the API takes one."""
    tracer = provider.get_tracer("tests.tracing", "1.0", "https://example.com/s", {"scope": "x"})
    remote = trace.set_span_in_context(NonRecordingSpan(REMOTE_PARENT))
    with tracer.start_as_current_span(
        "server",
        remote,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "ids": [1, 2]},
        start_time=10,
    ) as server:
        server.set_attribute("late", 1)
        server.set_attributes({"ratio": 0.5, "flags": [True, False], "nested": {"a": "b"}})
        server.set_attribute("", "an empty key is rejected")
        server.set_attribute("odd", frozenset({1}))  # type: ignore[arg-type]  # cleaned, not kept
        server.add_event("checkpoint", {"step": 1}, timestamp=11)
        tracer.start_span("decode", start_time=20).end(end_time=21)
        forward = tracer.start_span(
            "forward",
            links=[
                Link(REMOTE_PARENT, {"why": "batch"}),
                Link(server.get_span_context()),
                Link(INVALID_SPAN_CONTEXT),  # no context, no attributes: not kept
            ],
            attributes={"rows": 3},
            start_time=30,
        )
        forward.add_link(LOCAL_PARENT, {"late": True})
        forward.update_name("forward pass")
        forward.set_status(StatusCode.ERROR, "broke")
        forward.set_status(Status(StatusCode.OK))
        forward.set_status(StatusCode.ERROR, "ignored: OK is final")
        forward.record_exception(ValueError("bad rows"), {"extra": 1}, timestamp=35)
        forward.end(end_time=40)
        forward.end(end_time=41)
        forward.set_attribute("after", "the end")
        forward.add_event("after the end", timestamp=42)
        forward.update_name("renamed after the end")
    with pytest.raises(RuntimeError), tracer.start_as_current_span("failing", start_time=50):
        raise RuntimeError("boom")
    quiet = tracer.start_span("unset status", record_exception=False, start_time=60)
    quiet.set_status(Status(StatusCode.UNSET))
    quiet.end(end_time=61)


def _limited(provider: TracerProvider) -> None:
    tracer = provider.get_tracer("tests.limits")
    span = tracer.start_span(
        "limited",
        attributes={f"a{i}": "abcdefgh" for i in range(6)},
        links=[Link(REMOTE_PARENT, {"x": 1, "y": 2}) for _ in range(3)],
        start_time=1,
    )
    span.set_attribute("a0", "replaced, not dropped")
    span.set_attribute("one too many", 1)
    for step in range(3):
        span.add_event(f"e{step}", {"k": 1, "j": 2}, timestamp=2 + step)
    span.end(end_time=9)


def _run(
    scenario: Callable[[TracerProvider], None], kind: type[TracerProvider], **options: object
) -> Sequence[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = _provider(kind, SimpleSpanProcessor(exporter), **options)  # type: ignore[arg-type]
    scenario(provider)
    return exporter.get_finished_spans()


def _message(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The SDK's OTLP encoding, with the clock's timestamps zeroed and only the last line of a
    stack trace (the frames above it are the two providers' own)."""
    message = encode_spans(spans)
    for resource_spans in message.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                for event in span.events:
                    if event.time_unix_nano > CLOCK_TIMES:
                        event.time_unix_nano = 0
                    for pair in event.attributes:
                        if pair.key == "exception.stacktrace":
                            pair.value.string_value = pair.value.string_value.splitlines()[-1]
                if span.end_time_unix_nano > CLOCK_TIMES:
                    span.end_time_unix_nano = 0
    return message


@pytest.mark.parametrize("random_ids", [False, True])
def test_every_span_operation_exports_what_the_sdk_exports(random_ids: bool) -> None:
    sdk = _run(_everything, TracerProvider, random_ids=random_ids)
    lean = _run(_everything, LeanTracerProvider, random_ids=random_ids)

    assert all(isinstance(span, LeanSpan) for span in lean)
    assert [span.name for span in lean] == [
        "decode",
        "forward pass",
        "server",
        "failing",
        "unset status",
    ]
    assert _message(lean) == _message(sdk)
    assert [span.context for span in lean] == [span.context for span in sdk]
    roots = lean[3:]  # "failing" and "unset status": their trace ids are the generator's
    assert [span.context.trace_flags.random_trace_id for span in roots] == [random_ids] * 2
    assert lean[1].events[0].attributes == sdk[1].events[0].attributes


def test_span_limits_drop_and_truncate_as_in_the_sdk() -> None:
    sdk = _run(_limited, TracerProvider, limits=LIMITS)
    lean = _run(_limited, LeanTracerProvider, limits=LIMITS)

    [span], [expected] = lean, sdk
    dropped = (span.dropped_attributes, span.dropped_events, span.dropped_links)
    assert dropped == (expected.dropped_attributes, expected.dropped_events, expected.dropped_links)
    assert dropped == (4, 1, 1)
    assert span.attributes is not None
    assert span.attributes["a0"] == "repla"
    assert _message(lean) == _message(sdk)


PARENTS = {
    "root": None,
    "remote sampled": REMOTE_PARENT,
    "remote unsampled": UNSAMPLED_PARENT,
    "local sampled": LOCAL_PARENT,
}
SAMPLERS: dict[str, Callable[[], Sampler]] = {
    "parentbased_always_on": lambda: DEFAULT_ON,
    "parentbased_always_off": lambda: DEFAULT_OFF,
    "always_on": lambda: ALWAYS_ON,
    "always_off": lambda: ALWAYS_OFF,
    "parentbased_traceidratio": lambda: ParentBasedTraceIdRatio(0.5),
    "traceidratio": lambda: TraceIdRatioBased(0.5),
    "custom": AnnotatingSampler,
}


SpanDecision = tuple[SpanContext, bool, dict[str, object]]


def _decisions(
    kind: type[TracerProvider], sampler: Sampler, parent: SpanContext | None
) -> list[SpanDecision]:
    provider = _provider(kind, sampler=sampler)
    tracer = provider.get_tracer("tests.sampling")
    context = None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
    decisions: list[SpanDecision] = []
    for number in range(40):
        span = tracer.start_span(f"span {number}", context, attributes={"n": number})
        decisions.append(
            (
                span.get_span_context(),
                span.is_recording(),
                dict(getattr(span, "attributes", {}) or {}),
            )
        )
        span.end()
    return decisions


@pytest.mark.parametrize("parent", PARENTS, ids=list(PARENTS))
@pytest.mark.parametrize("sampler", SAMPLERS, ids=list(SAMPLERS))
def test_sampling_decides_as_the_sdk_does(sampler: str, parent: str) -> None:
    sdk = _decisions(TracerProvider, SAMPLERS[sampler](), PARENTS[parent])
    lean = _decisions(LeanTracerProvider, SAMPLERS[sampler](), PARENTS[parent])

    assert lean == sdk
    if sampler.endswith("ratio") and parent == "root":
        assert {recording for _, recording, _ in lean} == {True, False}  # both ways, really


class Recording(SpanProcessor):
    """Remembers the spans it is given at start, ending and end, and the order of the calls."""

    def __init__(self) -> None:
        self.started: list[tuple[trace.Span, Context | None]] = []
        self.ended: list[ReadableSpan] = []
        self.calls: list[str] = []

    def on_start(self, span: trace.Span, parent_context: Context | None = None) -> None:
        self.started.append((span, parent_context))
        self.calls.append("on_start")

    def _on_ending(self, span: trace.Span) -> None:
        self.calls.append("_on_ending")

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span)
        self.calls.append("on_end")


def test_processors_get_the_span_at_start_and_once_at_its_end() -> None:
    processor, exporter = Recording(), InMemorySpanExporter()
    # The simple processor's empty start and ending hooks are skipped; its end is not.
    provider = _provider(LeanTracerProvider, SimpleSpanProcessor(exporter), processor)
    tracer = provider.get_tracer("tests.processors")
    context = trace.set_span_in_context(NonRecordingSpan(REMOTE_PARENT))

    span = tracer.start_span("once", context)
    span.end()
    span.end()

    assert processor.started == [(span, context)]
    assert processor.calls == ["on_start", "_on_ending", "on_end"]
    assert isinstance(span, LeanSpan)
    assert len(processor.ended) == 1
    assert processor.ended[0] is span
    assert exporter.get_finished_spans() == (span,)
    assert not span.is_recording()


def test_an_unsampled_span_is_not_recording_and_reaches_no_processor() -> None:
    processor = Recording()
    tracer = _provider(LeanTracerProvider, processor).get_tracer("tests.processors")

    span = tracer.start_span(
        "skipped", trace.set_span_in_context(NonRecordingSpan(UNSAMPLED_PARENT))
    )
    span.end()

    assert isinstance(span, NonRecordingSpan)
    assert span.get_span_context().trace_id == UNSAMPLED_PARENT.trace_id
    assert span.get_span_context().span_id not in (0, UNSAMPLED_PARENT.span_id)
    assert processor.started == []
    assert processor.ended == []


def test_one_tracer_per_scope() -> None:
    provider = _provider(LeanTracerProvider)

    assert provider.get_tracer("a", "1") is provider.get_tracer("a", "1")
    assert provider.get_tracer("a", "1") is not provider.get_tracer("a", "2")


def test_a_disabled_sdk_gives_no_op_tracers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    processor = Recording()
    tracer = _provider(LeanTracerProvider, processor).get_tracer("tests.disabled")

    span = tracer.start_span("nothing")
    span.end()

    assert not span.is_recording()
    assert processor.ended == []


def test_the_bootstrap_makes_lean_spans(make_telemetry: MakeTelemetry) -> None:
    exporter = InMemorySpanExporter()
    telemetry = make_telemetry(span_processors=[SimpleSpanProcessor(exporter)])

    telemetry.tracer_provider.get_tracer("tests.bootstrap").start_span("lean").end()

    [span] = exporter.get_finished_spans()
    assert isinstance(span, LeanSpan)
    assert span.resource.attributes["service.name"] == "otel-test"
