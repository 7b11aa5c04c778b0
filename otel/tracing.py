"""`LeanTracerProvider`: the SDK's tracer provider with a cheaper span on the request path.

The SDK's span costs about 16 µs to start and end on the 2-vCPU development VM, idle, and
several times that under load: a lock, bounded containers for its attributes, events and links
built for every span, a sampler call with its result objects, and a readable copy at the end.
A model-server request makes four spans and a share of a fifth, so the spans alone cost about
as much as the model's forward pass (benchmarks/RESULTS.md, telemetry section).

This provider keeps the SDK for everything around the span: the sampler read from
`OTEL_TRACES_SAMPLER`, the resource, the id generator, the span limits (`OTEL_SPAN_*`), the span
processors with their batching and export, force-flush and shutdown. Only the span object and
its start are replaced. `LeanSpan` is an API `Span` and an SDK `ReadableSpan` at once, so every
SDK span processor and exporter takes it as it is; it keeps its attributes in a plain dict,
makes its bounded event and link lists only when it has any, and is handed to the processors
at its end without a copy (after `end()` it ignores every change, as the SDK's does).

Sampling follows the SDK's sampler exactly. The parent-based samplers that
`OTEL_TRACES_SAMPLER` can name (`parentbased_always_on`, `parentbased_always_off`,
`parentbased_traceidratio`) follow a valid parent's sampled flag without a sampler call;
`always_on` (and `parentbased_always_on` for a root span) samples and `always_off` drops
without one; every other decision is the sampler's own `should_sample`.
Not carried over from the SDK tracer: its experimental tracer configurator (per-scope
enabling), its opt-in internal span metrics (`OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED`), and
the lock around each change of a span: a span is changed by the code that started it, and
only `end()` is guarded against two threads at once.
`tests/otel/test_tracing.py` runs the same spans through both providers and compares them.
"""

import logging
import os
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from time import time_ns
from types import TracebackType
from typing import cast

from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    Event,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    DEFAULT_OFF,
    DEFAULT_ON,
    ParentBasedTraceIdRatio,
    Sampler,
)
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv.attributes.exception_attributes import (
    EXCEPTION_ESCAPED,
    EXCEPTION_MESSAGE,
    EXCEPTION_STACKTRACE,
    EXCEPTION_TYPE,
)
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    TraceFlags,
    TraceState,
)
from opentelemetry.trace.status import Status, StatusCode
from opentelemetry.util import types
from opentelemetry.util._decorator import _agnosticcontextmanager

logger = logging.getLogger(__name__)

_PRIMITIVE_TYPES = frozenset({str, bool, int, float})
_FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else 0) | (TraceFlags.RANDOM_TRACE_ID if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}
_UNSET_STATUS = Status(StatusCode.UNSET)  # shared: a Status is never changed, only replaced
_END_LOCK = threading.Lock()
"""Makes `end()`'s check-and-set atomic: a span ended twice at once reaches the processors once."""
#: The SDK processors' hooks that do nothing: a span does not call them.
_NO_OP_HOOKS = frozenset(
    getattr(processor, hook)
    for processor in (SpanProcessor, BatchSpanProcessor, SimpleSpanProcessor)
    for hook in ("on_start", "_on_ending")
)


class LeanSpanProcessors(SynchronousMultiSpanProcessor):
    """The provider's span processors, in order, with the hooks each span calls listed once
    when a processor is added: a span calls them directly, and skips the ones the SDK's own
    processors leave empty (`on_start` and `_on_ending` of the batch and simple processors)."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.starting: tuple[Callable[..., None], ...] = ()
        """Every processor's `on_start` that does something."""
        self.ending: tuple[Callable[[LeanSpan], None], ...] = ()
        """Every processor's `_on_ending` that does something."""
        self.ended: tuple[Callable[[LeanSpan], None], ...] = ()
        """Every processor's `on_end`."""

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        with self._lock:
            processors = (*self._span_processors, span_processor)
            self.starting = tuple(
                p.on_start for p in processors if type(p).on_start not in _NO_OP_HOOKS
            )
            self.ending = tuple(
                p._on_ending  # type: ignore[misc]
                for p in processors
                if type(p)._on_ending not in _NO_OP_HOOKS
            )
            self.ended = tuple(p.on_end for p in processors)
            self._span_processors = processors


class LeanTracerProvider(TracerProvider):
    """An SDK `TracerProvider` whose tracers make `LeanSpan`s (see the module docstring)."""

    def __init__(
        self,
        sampler: Sampler | None = None,
        resource: Resource | None = None,
        shutdown_on_exit: bool = True,
        id_generator: IdGenerator | None = None,
        span_limits: SpanLimits | None = None,
    ) -> None:
        self._processor = LeanSpanProcessors()
        self._limits = span_limits or SpanLimits()
        super().__init__(
            sampler=sampler,
            resource=resource,
            shutdown_on_exit=shutdown_on_exit,
            active_span_processor=self._processor,
            id_generator=id_generator,
            span_limits=self._limits,
        )
        self._sdk_disabled = os.environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true"
        self._lean_tracers: dict[InstrumentationScope, LeanTracer] = {}
        self._lean_lock = threading.Lock()

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace_api.Tracer:
        """One `LeanTracer` per instrumentation scope (a no-op tracer if the SDK is disabled)."""
        if self._sdk_disabled:
            return trace_api.NoOpTracer()
        if not instrumenting_module_name:
            logger.error("get_tracer called with missing module name.")
        scope = InstrumentationScope(
            instrumenting_module_name or "",
            instrumenting_library_version or "",
            schema_url,
            attributes,
        )
        with self._lean_lock:
            tracer = self._lean_tracers.get(scope)
            if tracer is None:
                tracer = self._lean_tracers[scope] = LeanTracer(self, scope)
        return tracer


def _follows_parent(sampler: Sampler) -> bool:
    """Whether this sampler samples a span with a valid parent exactly when the parent was."""
    return (
        sampler is DEFAULT_ON or sampler is DEFAULT_OFF or type(sampler) is ParentBasedTraceIdRatio
    )


class LeanTracer(trace_api.Tracer):
    """Starts `LeanSpan`s; sampling, ids and processors are its provider's."""

    def __init__(self, provider: LeanTracerProvider, scope: InstrumentationScope) -> None:
        self._provider = provider
        self.scope = scope
        """The instrumentation scope of every span this tracer starts."""
        self.processor = provider._processor
        """The provider's span processors, called at each span's start and end."""
        self.limits = provider._limits
        """The provider's span limits."""

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        """A recording `LeanSpan`, or a `NonRecordingSpan` when the sampler drops it."""
        provider = self._provider
        ids = provider.id_generator
        sampler = provider.sampler
        parent: SpanContext | None = trace_api.get_current_span(context).get_span_context()
        trace_state: TraceState | None
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = ids.generate_trace_id()
            random_trace_id = ids.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
        if parent is not None and _follows_parent(sampler):
            sampled = recording = parent.trace_flags.sampled
            trace_state = parent.trace_state
        elif sampler is ALWAYS_ON or (parent is None and sampler is DEFAULT_ON):
            sampled = recording = True  # what their should_sample answers, without its objects
            trace_state = None if parent is None else parent.trace_state
        elif sampler is ALWAYS_OFF:
            sampled = recording = False
            trace_state = None if parent is None else parent.trace_state
        else:
            result = sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = result.decision.is_sampled()  # type: ignore[no-untyped-call]
            recording = result.decision.is_recording()  # type: ignore[no-untyped-call]
            attributes, trace_state = result.attributes, result.trace_state
        span_context = SpanContext(
            trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=_FLAGS[sampled, random_trace_id],
            trace_state=trace_state,
        )
        if not recording:
            return NonRecordingSpan(span_context)
        span = LeanSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            attributes,
            links,
            time_ns() if start_time is None else start_time,
            record_exception,
            set_status_on_exception,
        )
        for on_start in self.processor.starting:
            on_start(span, parent_context=context)
        return span

    @_agnosticcontextmanager
    def start_as_current_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace_api.Span]:
        """`start_span`, current for the `with` block (the API's `use_span` semantics)."""
        span = self.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        with trace_api.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class LeanSpan(trace_api.Span, ReadableSpan):
    """A recording span that is its own finished (readable) span; made by `LeanTracer` only."""

    def __init__(
        self,
        tracer: LeanTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Sequence[Link] | None,
        start_time: int,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> None:
        # ReadableSpan's fields, set directly: its __init__ would build a resource when none.
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._resource = tracer._provider.resource
        self._instrumentation_scope = tracer.scope
        self._instrumentation_info = None
        self._start_time = start_time
        self._end_time: int | None = None
        self._status = _UNSET_STATUS
        self._attributes: dict[str, types.AnyValue] = {}
        self._events: BoundedList[Event] | tuple[()] = ()
        self._links: BoundedList[Link] | tuple[()] = ()
        self._dropped_attributes = 0
        self._tracer = tracer
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self.encoded: bytes | None = None
        """Its OTLP bytes (`SpanEncoder.encode_span`), once
        `otel.span_batching.GroupingBatchSpanProcessor` has made them."""
        if attributes:
            self._set_items(attributes)
        if links:
            self._add_links(links)

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._name}", context={self._context})'

    @property
    def dropped_attributes(self) -> int:
        """Attributes refused or dropped by the span's attribute count limit."""
        return self._dropped_attributes

    # The SDK's versions test with isinstance against an abstract base class, slow for the
    # empty tuple a LeanSpan keeps until it has an event or a link.
    @property
    def dropped_events(self) -> int:
        """Events dropped by the span's event count limit."""
        return self._events.dropped if type(self._events) is BoundedList else 0

    @property
    def dropped_links(self) -> int:
        """Links dropped by the span's link count limit."""
        return self._links.dropped if type(self._links) is BoundedList else 0

    def is_plain(self) -> bool:
        """Ended, with no events, trace state or dropped attributes or links, and its status
        never set: most spans, which `SpanEncoder` then encodes from their fields."""
        return (
            self._end_time is not None
            and not self._events
            and self._status is _UNSET_STATUS
            and not self._dropped_attributes
            and not self.dropped_links
            and not self.get_span_context().trace_state
        )

    def get_span_context(self) -> SpanContext:
        """This span's context (trace id, span id, flags, state)."""
        return cast(SpanContext, self._context)

    def is_recording(self) -> bool:
        """True until the span ends."""
        return self._end_time is None

    def _ended(self, what: str) -> bool:
        if self._end_time is None:
            return False
        logger.warning("%s on ended span.", what)
        return True

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        """Sets one attribute (cleaned as the SDK cleans it; ignored once ended)."""
        if not self._ended("Setting attribute"):
            self._set_items({key: value})

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        """Sets several attributes (ignored once ended)."""
        if not self._ended("Setting attribute"):
            self._set_items(attributes)

    def _set_items(self, attributes: Mapping[str, types.AnyValue]) -> None:
        """The SDK's rules: values cleaned, a re-set key moves to the end, and beyond the count
        limit the oldest attribute is dropped to make room."""
        limits = self._tracer.limits
        length = limits.max_span_attribute_length
        maximum = limits.max_span_attributes
        stored = self._attributes
        for key, value in attributes.items():
            if not (type(key) is str and key and type(value) in _PRIMITIVE_TYPES) or (
                length is not None and type(value) is str and len(value) > length
            ):  # the rare cases are cleaned (or refused, with a warning) by the API's own rules
                cleaned = BoundedAttributes(None, {key: value}, max_value_len=length)
                if key not in cleaned:
                    self._dropped_attributes += 1
                    continue
                value = cleaned[key]
            if key in stored:
                del stored[key]
            elif maximum is not None and len(stored) >= maximum:
                self._dropped_attributes += 1
                if not stored:
                    continue
                logger.warning("Span attribute limit (%d) reached: dropping the oldest.", maximum)
                del stored[next(iter(stored))]
            stored[key] = value

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        """Adds an event; beyond the event count limit the oldest is dropped (ignored once
        ended)."""
        if self._ended("Adding event"):
            return
        limits = self._tracer.limits
        if not isinstance(self._events, BoundedList):
            self._events = BoundedList(limits.max_events)
        bounded = BoundedAttributes(
            limits.max_event_attributes,
            attributes,
            max_value_len=limits.max_attribute_length,
            immutable=True,
        )
        self._events.append(Event(name=name, attributes=bounded, timestamp=timestamp))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        """Adds a link after the start (ignored once ended)."""
        if not self._ended("Adding link"):
            self._add_links([Link(context, attributes)])

    def _add_links(self, links: Sequence[Link]) -> None:
        """Links with a valid context, attributes or a trace state (as the SDK keeps); beyond
        the link count limit the oldest are dropped."""
        limits = self._tracer.limits
        if not isinstance(self._links, BoundedList):
            self._links = BoundedList(limits.max_links)
        for link in links:
            if not link or not (
                link.context.is_valid or link.attributes or link.context.trace_state
            ):
                continue
            if link.attributes:
                link = Link(
                    link.context,
                    BoundedAttributes(
                        limits.max_link_attributes,
                        link.attributes,
                        max_value_len=limits.max_attribute_length,
                        immutable=True,
                    ),
                )
            self._links.append(link)

    def update_name(self, name: str) -> None:
        """Renames the span (ignored once ended)."""
        if not self._ended("Updating name"):
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        """The SDK's rules: OK is final, UNSET is ignored, a description only with a code."""
        if self._ended("Setting status"):
            return
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                logger.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                    description,
                )
            self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """Adds an "exception" event with the exception's type, message and stack trace."""
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        event_attributes: dict[str, types.AnyValue] = {
            EXCEPTION_TYPE: f"{module}.{qualname}" if module and module != "builtins" else qualname,
            EXCEPTION_MESSAGE: str(exception),
            EXCEPTION_STACKTRACE: "".join(traceback.format_exception(exception)),
            EXCEPTION_ESCAPED: str(escaped),
        }
        if attributes:
            event_attributes.update(attributes)
        self.add_event("exception", event_attributes, timestamp)

    def end(self, end_time: int | None = None) -> None:
        """Ends the span once and hands it, as it is, to the span processors."""
        with _END_LOCK:
            if self._end_time is not None:
                logger.warning("Calling end() on an ended span.")
                return
            self._end_time = time_ns() if end_time is None else end_time
        processors = self._tracer.processor
        for on_ending in processors.ending:
            on_ending(self)
        for on_end in processors.ended:
            on_end(self)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        """Ends the span; an exception leaving the block is recorded and sets ERROR first."""
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exception=exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        super().__exit__(exc_type, exc_val, exc_tb)
