"""The HTTP server span, `http.server.request.duration` and the `x-trace-id` response header.

A lean pure-ASGI middleware wrapped around the whole application, error handling included, so
every response (a 500 too) carries the trace id and is measured. It continues the caller's W3C
`traceparent`; after routing it names the span `{method} {route template}` and sets the HTTP
semantic-convention attributes. Attributes are bounded: no URL path, query or client address,
only the route template, which names no model.
"""

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import telemetry

logger = logging.getLogger(__name__)

TRACE_ID_HEADER = "x-trace-id"
_TRACE_ID_HEADER = TRACE_ID_HEADER.encode()
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)

Headers = Sequence[tuple[bytes, bytes]]


class _HeaderGetter(Getter[Headers]):
    """Reads ASGI headers (lower-case byte names) for the W3C propagator."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        name = key.encode()
        values = [value.decode("latin-1") for header, value in carrier if header == name]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [header.decode("latin-1") for header, _ in carrier]


_GETTER = _HeaderGetter()


@dataclass
class _Response:
    status: int = 0
    finished: bool = False


class TelemetryMiddleware:
    """Traces and measures every HTTP request; optionally logs one access line per request."""

    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self._access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        method = scope["method"] if scope["method"] in _METHODS else "_OTHER"
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "url.scheme": scope["scheme"],
            "network.protocol.version": scope["http_version"],
        }
        parent = propagate.extract(scope["headers"], getter=_GETTER)
        span = telemetry.tracer.start_span(
            method, parent, kind=trace.SpanKind.SERVER, attributes=attributes
        )
        token = context.attach(trace.set_span_in_context(span))
        span_context = span.get_span_context()
        trace_id = [(_TRACE_ID_HEADER, f"{span_context.trace_id:032x}".encode())]
        extra_headers = trace_id if span_context.is_valid else []
        response = _Response()

        async def send_with_trace_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), *extra_headers]}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                response.finished = True
            await send(message)

        try:
            await self.app(scope, receive, send_with_trace_id)
        except Exception as error:
            span.record_exception(error)
            if not response.finished:
                raise
            # The error handler answered 500 and logged it; the server need not log it again.
        finally:
            status = response.status or 500
            outcome: dict[str, str | int] = {"http.response.status_code": status}
            route = getattr(scope.get("route"), "path", None)
            if route is not None:
                outcome["http.route"] = route
                span.update_name(f"{method} {route}")
            if status >= 500:
                outcome["error.type"] = str(status)
                span.set_status(trace.StatusCode.ERROR)
            span.set_attributes(outcome)
            elapsed_s = time.perf_counter() - started
            telemetry.http_server_duration.record(elapsed_s, {**attributes, **outcome})
            if self._access_log:
                logger.info(
                    "%s %s %d %.2f ms", scope["method"], scope["path"], status, elapsed_s * 1000
                )
            span.end()
            context.detach(token)
