"""`SpanEncoder` writes the same OTLP message as the SDK's encoder, field for field."""

from collections.abc import Sequence

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import AttributeValue

from otel.span_batching import GroupingBatchSpanProcessor
from otel.span_encoding import SpanEncoder
from otel.tracing import LeanSpan, LeanTracerProvider

REMOTE_PARENT = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "opaque"), ("other", "x")]),
)
ATTRIBUTES: dict[str, AttributeValue] = {
    "text": "héllo",
    "empty": "",
    "yes": True,
    "no": False,
    "count": 42,
    "negative": -7,
    "huge": 2**62,
    "ratio": 0.25,
    "texts": ("a", "b"),
    "numbers": (1, -2, 3),
    "flags": (True, False),
    "floats": (0.5, -1.5),
}


def _spans(provider: TracerProvider, exporter: InMemorySpanExporter) -> Sequence[ReadableSpan]:
    tracer = provider.get_tracer("tests.encoding", "1.2.3", schema_url="https://example.com/s")
    other = provider.get_tracer("tests.other")
    remote = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE_PARENT))
    for kind in SpanKind:
        with tracer.start_as_current_span(f"span {kind.name}", remote, kind=kind) as parent:
            parent.set_attributes(ATTRIBUTES)
            parent.add_event("checkpoint", {"step": 1, "label": "x"})
            parent.add_event("bare")
            parent.set_status(Status(StatusCode.ERROR, "it broke"))
            child = other.start_span(
                "child",
                links=[Link(REMOTE_PARENT, {"why": "batch"}), Link(parent.get_span_context())],
            )
            child.set_status(Status(StatusCode.OK))
            child.end()
    # Spans with nothing but ids, times, attributes and links (most of the model server's):
    # `SpanEncoder` writes a LeanSpan of this kind from its fields.
    with tracer.start_as_current_span("plain parent") as plain_parent:
        tracer.start_span("plain leaf").end()
        tracer.start_span(
            "plain with links",
            links=[Link(REMOTE_PARENT), Link(plain_parent.get_span_context(), {"why": "batch"})],
            attributes={"size": 8, "model": "digits"},
        ).end()
    stateless = SpanContext(REMOTE_PARENT.trace_id, 0x1234, True, REMOTE_PARENT.trace_flags)
    tracer.start_span(
        "plain under a remote parent",
        trace.set_span_in_context(trace.NonRecordingSpan(stateless)),
        kind=SpanKind.SERVER,
    ).end()
    for many in range(3):  # more attributes than the limit: dropped counts
        span = tracer.start_span("limited", attributes={f"a{i}": i for i in range(15 + many)})
        span.end()
    return exporter.get_finished_spans()


@pytest.fixture(params=[TracerProvider, LeanTracerProvider])
def provider(request: pytest.FixtureRequest) -> tuple[TracerProvider, InMemorySpanExporter]:
    """The SDK's provider, and ours whose spans the model server exports."""
    exporter = InMemorySpanExporter()
    resource = Resource.create({"service.name": "encoding-test", "replicas": 3}, "https://r")
    provider: TracerProvider = request.param(
        resource=resource, span_limits=SpanLimits(max_span_attributes=16)
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_the_bytes_parse_into_the_sdk_message(
    provider: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    spans = _spans(*provider)
    assert any(span.dropped_attributes for span in spans)

    encoder = SpanEncoder()
    ours = ExportTraceServiceRequest.FromString(encoder.encode(spans))

    assert ours == encode_spans(spans)
    # The caches give the same answer the second time.
    assert ExportTraceServiceRequest.FromString(encoder.encode(spans)) == ours


def test_an_attribute_value_it_cannot_encode_is_left_out() -> None:
    span = ReadableSpan(
        name="odd",
        context=REMOTE_PARENT,
        attributes={"weird": object(), "text": "a"},  # type: ignore[dict-item]  # no SDK checks
        start_time=1,
        end_time=2,
    )

    message = ExportTraceServiceRequest.FromString(SpanEncoder().encode([span]))

    [encoded] = message.resource_spans[0].scope_spans[0].spans
    assert [pair.key for pair in encoded.attributes] == ["text"]


def test_nothing_to_send_is_an_empty_request() -> None:
    assert SpanEncoder().encode([]) == b""


def test_interleaved_resources_reused_names_and_large_batches_match_the_sdk() -> None:
    exporter = InMemorySpanExporter()
    providers = [
        LeanTracerProvider(resource=Resource.create({"service.name": name}))
        for name in ("first", "second")
    ]
    for provider in providers:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    for index in range(600):  # past 16 KiB per resource: three-byte lengths
        tracer = providers[index % 2].get_tracer("tests.encoding")
        kind = SpanKind.SERVER if index % 3 else SpanKind.CLIENT  # one name, two kinds
        tracer.start_span("same name", kind=kind, attributes={"index": index}).end()
    spans = exporter.get_finished_spans()

    encoded = SpanEncoder().encode(spans)

    assert len(encoded) > 2 * 16384
    assert ExportTraceServiceRequest.FromString(encoded) == encode_spans(spans)


def test_spans_encoded_at_their_end_are_sent_as_they_were_encoded() -> None:
    encoder = SpanEncoder()
    exporter = InMemorySpanExporter()
    provider = LeanTracerProvider(
        resource=Resource.create({"service.name": "eager"}),
        span_limits=SpanLimits(max_span_attributes=16),
    )
    grouping = GroupingBatchSpanProcessor(InMemorySpanExporter(), encoder, group=1)
    provider.add_span_processor(grouping)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = [span for span in _spans(provider, exporter) if isinstance(span, LeanSpan)]
    grouping.shutdown()
    assert len(spans) == len(exporter.get_finished_spans())
    assert all(span.encoded for span in spans)

    assert ExportTraceServiceRequest.FromString(encoder.encode(spans)) == encode_spans(spans)
    # The bytes made at the end are what is sent: swapped, the message follows them.
    spans[0].encoded, spans[1].encoded = spans[1].encoded, spans[0].encoded
    message = ExportTraceServiceRequest.FromString(encoder.encode(spans))
    sent = [span.name for scope in message.resource_spans[0].scope_spans for span in scope.spans]
    assert sent[:2] == [spans[1].name, spans[0].name] != [spans[0].name, spans[1].name]
