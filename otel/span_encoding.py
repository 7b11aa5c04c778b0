"""OTLP span encoding straight to protobuf wire bytes: the same message the SDK's encoder builds.

The OTLP exporter package builds one protobuf object per span, attribute, value and event in
Python (about 25 µs a span here), on the export thread, holding the GIL the serving event loop
needs. This writes the `ExportTraceServiceRequest` bytes directly and caches what repeats
between spans (span names, attribute key/value pairs, resources, scopes), at 1-3 µs a span
(the model server's `LeanSpan`s without events or a status are written from their fields);
`otel.span_batching.GroupingBatchSpanProcessor` encodes spans on the thread that ends them, 32
at a time, so that an export batch is only joined.
`tests/otel/test_span_encoding.py` checks that the bytes parse into a message equal to the
SDK's for every field the SDK sets.

Field numbers are those of opentelemetry/proto/trace/v1/trace.proto and common/v1/common.proto.
"""

import logging
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanKind, StatusCode
from opentelemetry.util.types import Attributes

from otel.tracing import LeanSpan

logger = logging.getLogger(__name__)

#: Entries kept per cache before it starts over (attribute values are bounded by design, but a
#: cache must not grow without limit if some library records unbounded ones).
CACHE_LIMIT = 4096

_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")

# Span.flags: the parent's "is remote" is known (0x100), and whether it is remote (0x200).
_FLAGS_LOCAL = b"\x85\x01" + _FIXED32.pack(0x100)
_FLAGS_REMOTE = b"\x85\x01" + _FIXED32.pack(0x300)
_EMPTY_STATUS = b"\x7a\x00"
# What ends a span with no dropped counts and an unset status: the empty status, the flags.
_PLAIN_TAIL_LOCAL = _EMPTY_STATUS + _FLAGS_LOCAL
_PLAIN_TAIL_REMOTE = _EMPTY_STATUS + _FLAGS_REMOTE
_BARE_LINK_HEAD = b"\x6a\x21"  # a Link of ids and flags only: 28 + 5 bytes
_LINK_FLAGS_LOCAL = b"\x35" + _FIXED32.pack(0x100)
_LINK_FLAGS_REMOTE = b"\x35" + _FIXED32.pack(0x300)
_LOW_64 = (1 << 64) - 1
_UNSET = StatusCode.UNSET
# trace_id (tag, length, high and low 64 bits) and span_id (tag, length, 64 bits), big-endian.
_IDS = struct.Struct(">BBQQBBQ")
_PARENT = struct.Struct(">BBQ")
_TIMES = struct.Struct("<BQBQ")  # start_time_unix_nano and end_time_unix_nano, fixed64 each
#: Attribute value types whose encoded key/value pairs are cached (equal values of one type
#: encode alike; a tuple may hold 1 where an equal one holds True).
_CACHED_TYPES = frozenset({str, bool, int, float})
_ONE_BYTE = [bytes((value,)) for value in range(0x80)]


def _varint(value: int) -> bytes:
    if value < 0x4000:  # every length in a span batch but the outer ones: one or two bytes
        return _ONE_BYTE[value] if value < 0x80 else bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An AnyValue message (without its own tag)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        pairs = b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        return _field(b"\x32", pairs)
    raise TypeError(f"cannot encode a {type(value).__name__} attribute value")


def _key_value(key: str, value: Any) -> bytes:
    """A KeyValue message (without its own tag)."""
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))


class SpanEncoder:
    """Encodes batches of finished SDK spans; keeps caches, so use one per exporter (its
    `GroupingBatchSpanProcessor` may share it: the caches are plain dicts, safe under the GIL)."""

    def __init__(self) -> None:
        self._key_values: dict[tuple[bytes, str, type, Any], bytes] = {}
        self._heads: dict[str, tuple[SpanKind, bytes]] = {}
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[int, tuple[InstrumentationScope | None, bytes]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialized `ExportTraceServiceRequest` of these spans, grouped by resource and
        scope in the order they first appear; a span's `encoded` bytes, when it has them, are
        used as they are."""
        grouped: dict[int, tuple[Resource, dict[int, list[bytes]]]] = {}
        scopes: dict[int, InstrumentationScope | None] = {}
        last: tuple[Resource | None, InstrumentationScope | None] = (None, None)
        encoded_spans: list[bytes] = []
        for span in spans:
            resource = span.resource
            scope = span.instrumentation_scope
            if resource is not last[0] or scope is not last[1]:  # usually once per batch
                by_scope = grouped.setdefault(id(resource), (resource, {}))[1]
                scopes[id(scope)] = scope
                encoded_spans = by_scope.setdefault(id(scope), [])
                last = (resource, scope)
            encoded = getattr(span, "encoded", None)
            encoded_spans.append(self.encode_span(span) if encoded is None else encoded)
        resource_spans = []
        for resource, by_scope in grouped.values():
            scope_spans = [
                _field(b"\x12", self._scope(scopes[scope_id]) + b"".join(encoded))
                for scope_id, encoded in by_scope.items()
            ]
            resource_spans.append(_field(b"\x0a", self._resource(resource) + b"".join(scope_spans)))
        return b"".join(resource_spans)

    def encode_span(self, span: ReadableSpan) -> bytes:
        """One span's `ScopeSpans.spans` field (tag, length, Span message)."""
        if type(span) is LeanSpan and span.is_plain():
            return self._encode_plain(span)
        context = span.get_span_context()
        assert context is not None  # a finished SDK span always has one
        # SpanContext is a typed tuple; unpacking it is cheaper than its properties.
        trace_id, span_id, _, _, trace_state, _ = context
        parent = span.parent
        name, kind = span.name, span.kind
        head = self._head(name, kind)
        parts = [_IDS.pack(0x0A, 16, trace_id >> 64, trace_id & _LOW_64, 0x12, 8, span_id)]
        if trace_state:
            state = ",".join(f"{key}={value}" for key, value in trace_state.items())
            parts.append(_field(b"\x1a", state.encode()))
        parent_remote = False
        if parent is not None:
            _, parent_span_id, parent_remote, _, _, _ = parent
            parts.append(_PARENT.pack(0x22, 8, parent_span_id))
        parts.append(head)
        start_time, end_time = span.start_time, span.end_time
        if start_time and end_time:
            parts.append(_TIMES.pack(0x39, start_time, 0x41, end_time))
        else:  # an SDK span always has both; a hand-made ReadableSpan may lack them
            if start_time:
                parts.append(b"\x39" + _FIXED64.pack(start_time))
            if end_time:
                parts.append(b"\x41" + _FIXED64.pack(end_time))
        if span.attributes:
            parts += self._attributes(b"\x4a", span.attributes)
        if span.dropped_attributes:
            parts.append(b"\x50" + _varint(span.dropped_attributes))
        for event in span.events:
            body = [b"\x09", _FIXED64.pack(event.timestamp), _field(b"\x12", event.name.encode())]
            body += self._attributes(b"\x1a", event.attributes)
            if event.dropped_attributes:
                body += (b"\x20", _varint(event.dropped_attributes))
            parts.append(_field(b"\x5a", b"".join(body)))
        if span.dropped_events:
            parts.append(b"\x60" + _varint(span.dropped_events))
        parts += map(self._link, span.links)
        if span.dropped_links:
            parts.append(b"\x70" + _varint(span.dropped_links))
        status = span.status
        if status.status_code is _UNSET and not status.description:
            parts.append(_EMPTY_STATUS)
        else:
            parts.append(_status(status.status_code.value, status.description))
        parts.append(_FLAGS_REMOTE if parent_remote else _FLAGS_LOCAL)
        encoded = b"".join(parts)
        return b"\x12" + _varint(len(encoded)) + encoded

    def _encode_plain(self, span: LeanSpan) -> bytes:
        """`encode_span` for the common span (see `LeanSpan.is_plain`), read from its fields
        instead of the `ReadableSpan` properties: about half the time for a span without
        attributes or links (benchmarks/bench_span_encoding.py)."""
        trace_id, span_id, _, _, _, _ = span.get_span_context()
        name, kind = span._name, span._kind
        head = self._head(name, kind)
        ids = _IDS.pack(0x0A, 16, trace_id >> 64, trace_id & _LOW_64, 0x12, 8, span_id)
        times = _TIMES.pack(0x39, span._start_time, 0x41, span._end_time)
        parent = span._parent
        if parent is None:
            parent_field, tail = b"", _PLAIN_TAIL_LOCAL
        else:
            _, parent_span_id, parent_remote, _, _, _ = parent
            parent_field = _PARENT.pack(0x22, 8, parent_span_id)
            tail = _PLAIN_TAIL_REMOTE if parent_remote else _PLAIN_TAIL_LOCAL
        attributes, links = span._attributes, span._links
        if attributes or links:
            encoded = b"".join(
                (
                    ids,
                    parent_field,
                    head,
                    times,
                    *self._attributes(b"\x4a", attributes),
                    *map(self._link, links),
                    tail,
                )
            )
        else:
            encoded = b"".join((ids, parent_field, head, times, tail))
        return b"\x12" + _varint(len(encoded)) + encoded

    def _link(self, link: Link) -> bytes:
        """One `Span.links` field (tag, length, Link message)."""
        trace_id, span_id, remote, _, _, _ = link.context
        ids = _IDS.pack(0x0A, 16, trace_id >> 64, trace_id & _LOW_64, 0x12, 8, span_id)
        flags = _LINK_FLAGS_REMOTE if remote else _LINK_FLAGS_LOCAL
        attributes = link.attributes
        if attributes is None:  # nothing set, so nothing dropped
            return _BARE_LINK_HEAD + ids + flags
        body = [ids, *self._attributes(b"\x22", attributes)]
        if link.dropped_attributes:
            body += (b"\x28", _varint(link.dropped_attributes))
        body.append(flags)
        return _field(b"\x6a", b"".join(body))

    def _head(self, name: str, kind: SpanKind) -> bytes:
        """The name and kind fields of a span, cached per name with the kind they were made
        for (a name seen with another kind is encoded again)."""
        head = self._heads.get(name)
        if head is not None and head[0] is kind:
            return head[1]
        if len(self._heads) >= CACHE_LIMIT:
            self._heads.clear()
        encoded = _field(b"\x2a", name.encode()) + b"\x30" + _varint(kind.value + 1)  # from 1
        self._heads[name] = kind, encoded
        return encoded

    def _attributes(self, tag: bytes, attributes: Attributes) -> Iterable[bytes]:
        if not attributes:
            return ()
        encoded = []
        cache = self._key_values
        for key, value in attributes.items():
            hashable = type(value) in _CACHED_TYPES
            cache_key = (tag, key, type(value), value)
            found = cache.get(cache_key) if hashable else None
            if found is None:
                try:
                    found = _field(tag, _key_value(key, value))
                except (TypeError, ValueError, OverflowError) as error:
                    logger.warning("span attribute %s not exported: %s", key, error)
                    continue
                if hashable:
                    if len(cache) >= CACHE_LIMIT:
                        cache.clear()
                    cache[cache_key] = found
            encoded.append(found)
        return encoded

    def _resource(self, resource: Resource) -> bytes:
        """ResourceSpans fields 1 (the resource) and 3 (its schema URL)."""
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource:
            return cached[1]
        encoded = _field(b"\x0a", b"".join(self._attributes(b"\x0a", resource.attributes)))
        if resource.schema_url:
            encoded += _field(b"\x1a", resource.schema_url.encode())
        if len(self._resources) >= CACHE_LIMIT:
            self._resources.clear()
        self._resources[id(resource)] = (resource, encoded)
        return encoded

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        """ScopeSpans fields 1 (the scope) and 3 (its schema URL)."""
        cached = self._scopes.get(id(scope))
        if cached is not None and cached[0] is scope:
            return cached[1]
        body = b""
        if scope is not None:
            body = _field(b"\x0a", scope.name.encode()) if scope.name else b""
            if scope.version:
                body += _field(b"\x12", scope.version.encode())
            body += b"".join(self._attributes(b"\x1a", scope.attributes))
        encoded = _field(b"\x0a", body)
        if scope is not None and scope.schema_url:
            encoded += _field(b"\x1a", scope.schema_url.encode())
        if len(self._scopes) >= CACHE_LIMIT:
            self._scopes.clear()
        self._scopes[id(scope)] = (scope, encoded)
        return encoded


def _status(code: int, description: str | None) -> bytes:
    if not code and not description:
        return _EMPTY_STATUS
    body = _field(b"\x12", description.encode()) if description else b""
    if code:
        body += b"\x18" + _varint(code)
    return _field(b"\x7a", body)
