"""Middleware that refuses a request before the routes see it, and so before its body is read.

`HeaderLimit`: headers larger than the configured limit (431); the HTTP server has already read
them, and refusing keeps them out of the rest of the gateway (the routes, the logs and the call
to the model server, which allows 16 KiB of gRPC metadata).

`InferenceLimit`: at most `limit` inference requests in the gateway at once; beyond it 429 with
`Retry-After` at once, so an overload is refused at the door instead of queueing without bound
in front of the model servers (docs/RELIABILITY.md has what it does at three times capacity).

Both sit inside `TelemetryMiddleware`: their refusals are counted and traced like any answer.
"""

from collections.abc import Sequence

from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError, RequestHeadersTooLargeError, TooManyRequestsError

LIMIT_SETTING = "GATEWAY_MAX_CONCURRENT_INFERENCES"
_INFER_SUFFIX = "/infer"


class HeaderLimit:
    """ASGI middleware: 431 with `{"error": ...}` when a request's headers exceed `limit` bytes."""

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self._app = app
        self._limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            size = sum(len(name) + len(value) for name, value in headers)
            if size > self._limit:
                largest = max(headers, key=lambda header: len(header[1]))
                error = RequestHeadersTooLargeError(
                    f"request headers hold {size} bytes, above the limit of {self._limit} "
                    f"bytes; header {largest[0].decode('latin-1')!r} alone holds "
                    f"{len(largest[1])} bytes"
                )
                await _refuse(scope, receive, send, error)
                return
        await self._app(scope, receive, send)


class InferenceLimit:
    """ASGI middleware: 429 when `limit` requests to `routes` (the inference routes) are in
    flight. A refused request is matched to its route first, so its metrics and span carry the
    route template like an answered one."""

    def __init__(self, app: ASGIApp, *, limit: int, routes: Sequence[BaseRoute]) -> None:
        self._app = app
        self._limit = limit
        self._routes = tuple(routes)
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self._app(scope, receive, send)
            return
        if self._in_flight >= self._limit:
            scope["route"] = route
            error = TooManyRequestsError(
                f"gateway busy: {self._limit} inference requests in flight, the most it takes "
                f"at once ({LIMIT_SETTING}={self._limit}); retry later"
            )
            await _refuse(scope, receive, send, error)
            return
        self._in_flight += 1
        try:
            await self._app(scope, receive, send)
        finally:
            self._in_flight -= 1

    def _route(self, scope: Scope) -> BaseRoute | None:
        if scope["type"] != "http" or not scope["path"].endswith(_INFER_SUFFIX):
            return None  # the cheap test first, so other requests pay no route matching
        for route in self._routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
        return None


async def _refuse(scope: Scope, receive: Receive, send: Send, error: GatewayError) -> None:
    """The same answer `gateway.app.error_response` gives for this error."""
    response = JSONResponse(
        {"error": str(error)}, status_code=error.status, headers=dict(error.headers)
    )
    await response(scope, receive, send)
