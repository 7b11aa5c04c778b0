"""Property-based fuzz of a running gateway from its own OpenAPI schema (schemathesis).

Per operation, valid and invalid requests (path, headers, body), also aimed at a model that
exists: no answer may be a 5xx, and every answer must match the schema (documented status,
content type, body and headers). `X-Request-Timeout` is pinned to 10 s in valid requests: a
client that asks for a microscopic timeout rightly gets 504.
"""

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.conftest import Serve
from tests.gateway.conftest import StartGateway

EXAMPLES = 60
"""Cases per operation: about 1 s each on these machines."""
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation in the schema (it depends on no running server)."""
    app = create_app(GatewaySettings())
    document = app.app.openapi()  # type: ignore[attr-defined]
    return [(method.upper(), path) for path, item in document["paths"].items() for method in item]


@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_request_gets_a_server_error(
    method: str, path: str, repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    gateway = start_gateway([serve(repository).address])
    operation = schemathesis.openapi.from_url(f"{gateway.url}/openapi.json")[path][method]
    fixed_paths = [None, {"model_name": "digits"}] if "{model_name}" in path else [None]
    strategies = [
        operation.as_strategy(
            GenerationMode.POSITIVE, path_parameters=fixed, headers={"x-request-timeout": "10"}
        )
        for fixed in fixed_paths
    ]
    if len(operation.headers) or len(operation.body):
        strategies += [
            operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=fixed)
            for fixed in fixed_paths
        ]

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Case[Any]) -> None:
        case.call_and_validate(base_url=gateway.url, checks=CHECKS)

    fuzz()
