"""The OpenAPI document: FastAPI's, plus the schemas of the bodies routes read themselves.

The inference routes read their body as bytes (it may carry binary tensor data after the JSON),
so FastAPI does not know its schema: `InferenceRequest` and the models it uses are added to the
components here, where the routes' `requestBody` refers to it. So is `FeedbackRequest` (its
routes read the body themselves too, to bound its size).
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway.schemas import FeedbackRequest, InferenceRequest

REF_TEMPLATE = "#/components/schemas/{model}"


def install_openapi(app: FastAPI) -> None:
    """Makes `app.openapi()` (and `/openapi.json`) return the completed document."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for body in (InferenceRequest, FeedbackRequest):
                request = body.model_json_schema(ref_template=REF_TEMPLATE)
                schemas.update(request.pop("$defs", {}))
                schemas[body.__name__] = request
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
