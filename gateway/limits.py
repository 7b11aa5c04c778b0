"""`HeaderLimit`: refuses a request whose headers are larger than the configured limit (431).

The HTTP server has already read them; refusing keeps them out of the rest of the gateway (the
routes, the logs and the call to the model server, which allows 16 KiB of gRPC metadata).
"""

import json
from http import HTTPStatus

from starlette.types import ASGIApp, Receive, Scope, Send


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
                await _refuse(
                    send,
                    f"request headers hold {size} bytes, above the limit of {self._limit} "
                    f"bytes; header {largest[0].decode('latin-1')!r} alone holds "
                    f"{len(largest[1])} bytes",
                )
                return
        await self._app(scope, receive, send)


async def _refuse(send: Send, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    await send(
        {
            "type": "http.response.start",
            "status": int(status),
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
