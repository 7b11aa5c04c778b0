"""The gateway's ASGI application: routes, the one error handler, lifespan and telemetry.

`create_app(settings)` returns the FastAPI app wrapped in `TelemetryMiddleware`. The lifespan
opens the gRPC channels to the model servers and closes them on exit.
"""

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from gateway import __version__
from gateway.auth import ApiKeys
from gateway.converters import validation_message
from gateway.core import GatewayCore
from gateway.errors import GatewayError
from gateway.limits import HeaderLimit, InferenceLimit
from gateway.middleware import TRACE_ID_HEADER, TelemetryMiddleware
from gateway.openapi import install_openapi
from gateway.routes import (
    INFER_PATHS,
    JSON_LENGTH_HEADER,
    MODEL_VERSION_HEADER,
    health_router,
    model_router,
)
from gateway.settings import GatewaySettings

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "internal error; see the gateway log"
_NO_NATIVE_TELEMETRY: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}
"""FastAPI's own OpenTelemetry instrumentation, off: `TelemetryMiddleware` traces and measures
every request (see its docstring and docs/telemetry.md for why)."""
_CORS_HEADERS = ["authorization", "content-type", "traceparent", "tracestate", "x-request-timeout"]


def create_app(settings: GatewaySettings) -> ASGIApp:
    """The complete application for these settings."""
    core = GatewayCore(settings)
    keys = ApiKeys.from_settings(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        core.open()
        logger.info("gateway ready; model servers %s", ", ".join(settings.backends))
        try:
            yield
        finally:
            await core.close()
            logger.info("gateway stopped")

    app = FastAPI(
        title="InferWatch gateway",
        version=__version__,
        description="The Open Inference Protocol (REST v2) in front of InferWatch model servers.",
        lifespan=lifespan,
        telemetry=_NO_NATIVE_TELEMETRY,
    )
    app.include_router(health_router(core))
    bearer = HTTPBearer(auto_error=False, description="A key from GATEWAY_API_KEYS")

    def require_key(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    ) -> None:
        keys.check(credentials)

    models = model_router(core, max_body_bytes=settings.max_message_bytes)
    app.include_router(models, dependencies=[Security(require_key)] if keys.enabled else [])
    for handled in (GatewayError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(handled, error_response)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=[*_CORS_HEADERS, JSON_LENGTH_HEADER],
            expose_headers=[TRACE_ID_HEADER, MODEL_VERSION_HEADER, JSON_LENGTH_HEADER],
        )
    install_openapi(app)
    app.add_middleware(HeaderLimit, limit=settings.max_header_bytes)
    if settings.max_concurrent_inferences:
        inference = [r for r in models.routes if getattr(r, "path", None) in INFER_PATHS]
        app.add_middleware(
            InferenceLimit, limit=settings.max_concurrent_inferences, routes=inference
        )
    return TelemetryMiddleware(app, access_log=settings.access_log)


def error_response(request: Request, exc: Exception) -> Response:
    """The one mapping of errors to HTTP: status, `{"error": "..."}` and headers."""
    status, message, headers = _describe(request, exc)
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers))


def _describe(request: Request, exc: Exception) -> tuple[int, str, Mapping[str, str]]:
    if isinstance(exc, GatewayError):
        return exc.status, str(exc), exc.headers
    if isinstance(exc, RequestValidationError):
        return 400, validation_message(exc.errors()), {}
    if isinstance(exc, HTTPException):
        return exc.status_code, str(exc.detail), exc.headers or {}
    logger.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
    return 500, INTERNAL_ERROR, {}
