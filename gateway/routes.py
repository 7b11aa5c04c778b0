"""The Open Inference Protocol REST v2 routes: thin, each converts, calls the core, converts back.

Every route with a model has two paths, with and without `/versions/{model_version}`. Errors
are raised as `GatewayError`s and answered by the one handler in `gateway.app`.
"""

from http import HTTPStatus
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from gateway import telemetry
from gateway.converters import (
    feedback_request_to_pb,
    feedback_response_to_body,
    infer_request_to_pb,
    infer_response_to_body,
    model_metadata_from_pb,
    server_metadata_from_pb,
)
from gateway.core import GatewayCore
from gateway.errors import (
    ClientClosedRequestError,
    InvalidRequestError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from gateway.schemas import (
    ErrorResponse,
    FeedbackResponse,
    InferenceResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)

MODEL_VERSION_HEADER = "x-model-version"
JSON_LENGTH_HEADER = "inference-header-content-length"
BINARY = "application/octet-stream"
_BINARY_SCHEMA = {"schema": {"type": "string", "format": "binary"}}
INFER_PATH = "/v2/models/{model_name}/infer"
VERSION_INFER_PATH = "/v2/models/{model_name}/versions/{model_version}/infer"
INFER_PATHS = (INFER_PATH, VERSION_INFER_PATH)
"""The inference routes (`GATEWAY_MAX_CONCURRENT_INFERENCES` limits these alone)."""

RequestTimeout = Annotated[
    float | None,
    Header(
        gt=0,
        allow_inf_nan=False,
        description="Seconds the client waits; becomes the gRPC deadline to the model server.",
    ),
]
JsonLength = Annotated[
    int | None,
    Header(
        ge=0,
        description="Binary tensor data extension: length of the JSON part of the body.",
    ),
]


def error_responses(*statuses: HTTPStatus) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: these error statuses, and any other, with an ErrorResponse body."""
    documented: dict[int | str, dict[str, Any]] = {
        int(status): {"model": ErrorResponse, "description": status.phrase} for status in statuses
    }
    documented["default"] = {"model": ErrorResponse, "description": "Any other error"}
    return documented


_UPSTREAM_ERRORS = (
    HTTPStatus.NOT_FOUND,
    HTTPStatus.INTERNAL_SERVER_ERROR,
    HTTPStatus.BAD_GATEWAY,
    HTTPStatus.SERVICE_UNAVAILABLE,
    HTTPStatus.GATEWAY_TIMEOUT,
)

_DRIFT_REPORT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The drift report",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}
_INFER_ERRORS = error_responses(
    HTTPStatus.BAD_REQUEST,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    HTTPStatus.TOO_MANY_REQUESTS,
    *_UPSTREAM_ERRORS,
)
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferenceResponse,
        "description": "The outputs; with binary outputs the JSON part is followed by their "
        f"bytes and `{JSON_LENGTH_HEADER}` gives its length.",
        "content": {BINARY: _BINARY_SCHEMA},
        "headers": {
            MODEL_VERSION_HEADER: {
                "description": "The model version that answered.",
                "schema": {"type": "string"},
            }
        },
    },
    **_INFER_ERRORS,
}
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferenceRequest"}},
            BINARY: _BINARY_SCHEMA,
        },
    }
}
_FEEDBACK_ERRORS = error_responses(
    HTTPStatus.BAD_REQUEST,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    *_UPSTREAM_ERRORS,
)
_FEEDBACK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/FeedbackRequest"}}
        },
    }
}


class BodyReader:
    """Dependency: the request body; 415 for a Content-Type that is not JSON (none at all is
    taken as JSON) or, with `binary`, the binary tensor extension's octet stream; 413 above
    `limit` bytes; 499 when the client goes away while sending it."""

    def __init__(self, limit: int, *, binary: bool) -> None:
        self._limit = limit
        self._binary = binary

    async def __call__(self, request: Request) -> bytes:
        declared_type = request.headers.get("content-type")
        if declared_type is not None:
            self._check_media_type(declared_type, request)
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self._limit:
            raise PayloadTooLargeError(self._too_large(int(declared)))
        chunks, size = [], 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self._limit:
                    raise PayloadTooLargeError(self._too_large(size))
                chunks.append(chunk)
        except ClientDisconnect:
            raise ClientClosedRequestError("the client closed the connection") from None
        return b"".join(chunks)

    def _check_media_type(self, declared_type: str, request: Request) -> None:
        media_type = declared_type.partition(";")[0].strip().lower()
        if media_type == BINARY and self._binary:
            if JSON_LENGTH_HEADER not in request.headers:
                raise InvalidRequestError(f"header.{JSON_LENGTH_HEADER}: required with {BINARY}")
        elif media_type != "application/json" and not media_type.endswith("+json"):
            supported = (
                f"application/json, or {BINARY} with the Inference-Header-Content-Length header"
                if self._binary
                else "application/json"
            )
            raise UnsupportedMediaTypeError(
                f"header.content-type: {media_type!r} is not supported; send {supported}"
            )

    def _too_large(self, size: int) -> str:
        return f"request body of {size} bytes or more is above the limit of {self._limit} bytes"


def health_router(core: GatewayCore) -> APIRouter:
    """Server liveness and readiness: open to everyone (probes send no API key)."""
    router = APIRouter(tags=["health"])

    @router.get("/v2/health/live", responses=error_responses())
    async def server_live() -> ServerLiveResponse:
        """The gateway process answers."""
        return ServerLiveResponse(live=True)

    @router.get(
        "/v2/health/ready",
        response_model=ServerReadyResponse,
        responses={
            400: {"model": ServerReadyResponse, "description": "No model server is ready"},
            "default": error_responses()["default"],
        },
    )
    async def server_ready() -> ServerReadyResponse | JSONResponse:
        """200 when at least one model server is ready, 400 when none is."""
        answer = ServerReadyResponse(ready=await core.server_ready())
        return answer if answer.ready else _not_ready(answer)

    return router


def model_router(core: GatewayCore, *, max_body_bytes: int) -> APIRouter:
    """Server metadata, and per model: metadata, readiness, inference."""
    router = APIRouter(tags=["inference"])
    read_infer_body = BodyReader(max_body_bytes, binary=True)
    read_feedback_body = BodyReader(max_body_bytes, binary=False)

    @router.get("/v2", responses=error_responses())
    async def server_metadata() -> ServerMetadataResponse:
        """The gateway's name, version and protocol extensions."""
        return server_metadata_from_pb(core.server_metadata())

    async def metadata(
        name: str, version: str, x_request_timeout: float | None
    ) -> ModelMetadataResponse:
        return model_metadata_from_pb(await core.model_metadata(name, version, x_request_timeout))

    @router.get("/v2/models/{model_name}", responses=error_responses(*_UPSTREAM_ERRORS))
    async def model_metadata(
        model_name: str, x_request_timeout: RequestTimeout = None
    ) -> ModelMetadataResponse:
        """The model's signature (its newest ready version's)."""
        return await metadata(model_name, "", x_request_timeout)

    @router.get(
        "/v2/models/{model_name}/versions/{model_version}",
        responses=error_responses(*_UPSTREAM_ERRORS),
    )
    async def model_version_metadata(
        model_name: str, model_version: str, x_request_timeout: RequestTimeout = None
    ) -> ModelMetadataResponse:
        """The signature of one version of the model."""
        return await metadata(model_name, model_version, x_request_timeout)

    async def drift(name: str, version: str, x_request_timeout: float | None) -> Response:
        report = await core.model_drift(name, version, x_request_timeout)
        return Response(report, media_type="application/json")

    @router.get(
        "/v2/models/{model_name}/drift",
        responses=error_responses(*_UPSTREAM_ERRORS) | _DRIFT_REPORT,
        response_class=Response,
    )
    async def model_drift(model_name: str, x_request_timeout: RequestTimeout = None) -> Response:
        """A fresh drift report of the model's newest ready version against its training data
        (fields: monitoring/drift/METHOD.md); 404 when the model has no drift reference."""
        return await drift(model_name, "", x_request_timeout)

    @router.get(
        "/v2/models/{model_name}/versions/{model_version}/drift",
        responses=error_responses(*_UPSTREAM_ERRORS) | _DRIFT_REPORT,
        response_class=Response,
    )
    async def model_version_drift(
        model_name: str, model_version: str, x_request_timeout: RequestTimeout = None
    ) -> Response:
        """A fresh drift report of one version of the model."""
        return await drift(model_name, model_version, x_request_timeout)

    async def ready(name: str, version: str) -> ModelReadyResponse | JSONResponse:
        answer = ModelReadyResponse(name=name, ready=await core.model_ready(name, version))
        return answer if answer.ready else _not_ready(answer)

    ready_responses: dict[int | str, dict[str, Any]] = {
        400: {"model": ModelReadyResponse, "description": "Not ready (or unknown)"},
        "default": error_responses()["default"],
    }

    @router.get(
        "/v2/models/{model_name}/ready",
        response_model=ModelReadyResponse,
        responses=ready_responses,
    )
    async def model_ready(model_name: str) -> ModelReadyResponse | JSONResponse:
        """200 when a model server has the model ready, 400 when none has."""
        return await ready(model_name, "")

    @router.get(
        "/v2/models/{model_name}/versions/{model_version}/ready",
        response_model=ModelReadyResponse,
        responses=ready_responses,
    )
    async def model_version_ready(
        model_name: str, model_version: str
    ) -> ModelReadyResponse | JSONResponse:
        """200 when a model server has this version ready, 400 when none has."""
        return await ready(model_name, model_version)

    async def infer(
        name: str, version: str, body: bytes, timeout_s: float | None, json_length: int | None
    ) -> Response:
        decoded = infer_request_to_pb(name, version, body, json_length)
        timeouts = [t for t in (timeout_s, decoded.timeout_s) if t is not None]
        response = await core.infer(decoded.request, min(timeouts, default=None))
        content, header_length = infer_response_to_body(response, decoded)
        headers = {MODEL_VERSION_HEADER: response.model_version}
        if header_length is None:
            return Response(content, media_type="application/json", headers=headers)
        headers[JSON_LENGTH_HEADER] = str(header_length)
        return Response(content, media_type=BINARY, headers=headers)

    @router.post(
        INFER_PATH,
        response_model=None,
        responses=_INFER_RESPONSES,
        openapi_extra=_INFER_BODY,
    )
    async def model_infer(
        model_name: str,
        body: Annotated[bytes, Depends(read_infer_body)],
        x_request_timeout: RequestTimeout = None,
        inference_header_content_length: JsonLength = None,
    ) -> Response:
        """Inference on the model; the traffic split, if any, picks the version."""
        return await infer(model_name, "", body, x_request_timeout, inference_header_content_length)

    @router.post(
        VERSION_INFER_PATH,
        response_model=None,
        responses=_INFER_RESPONSES,
        openapi_extra=_INFER_BODY,
    )
    async def model_version_infer(
        model_name: str,
        model_version: str,
        body: Annotated[bytes, Depends(read_infer_body)],
        x_request_timeout: RequestTimeout = None,
        inference_header_content_length: JsonLength = None,
    ) -> Response:
        """Inference on one version of the model."""
        return await infer(
            model_name, model_version, body, x_request_timeout, inference_header_content_length
        )

    async def feedback(
        name: str, version: str, body: bytes, timeout_s: float | None
    ) -> FeedbackResponse:
        request = feedback_request_to_pb(name, version, body)
        response = feedback_response_to_body(request, await core.feedback(request, timeout_s))
        telemetry.record_feedback(
            core.known.attributes(name, ""), (item.result for item in response.results)
        )
        return response

    @router.post(
        "/v2/models/{model_name}/feedback",
        response_model_exclude_none=True,
        responses=_FEEDBACK_ERRORS,
        openapi_extra=_FEEDBACK_BODY,
    )
    async def model_feedback(
        model_name: str,
        body: Annotated[bytes, Depends(read_feedback_body)],
        x_request_timeout: RequestTimeout = None,
    ) -> FeedbackResponse:
        """True labels for earlier predictions of the model, by response `id`: one result per
        item, in order; an item's error never fails the request (docs/feedback.md)."""
        return await feedback(model_name, "", body, x_request_timeout)

    @router.post(
        "/v2/models/{model_name}/versions/{model_version}/feedback",
        response_model_exclude_none=True,
        responses=_FEEDBACK_ERRORS,
        openapi_extra=_FEEDBACK_BODY,
    )
    async def model_version_feedback(
        model_name: str,
        model_version: str,
        body: Annotated[bytes, Depends(read_feedback_body)],
        x_request_timeout: RequestTimeout = None,
    ) -> FeedbackResponse:
        """True labels for earlier predictions of one version of the model; a prediction of
        another version is refused (`other_model`)."""
        return await feedback(model_name, model_version, body, x_request_timeout)

    return router


def _not_ready(answer: ServerReadyResponse | ModelReadyResponse) -> JSONResponse:
    """The protocol's 'false' for a health check: a 4xx status."""
    return JSONResponse(answer.model_dump(), status_code=HTTPStatus.BAD_REQUEST)
