"""API keys (environment or file), and CORS, off unless configured."""

from pathlib import Path

import numpy as np
import pytest

from gateway.settings import GatewaySettings
from tests.conftest import Serve
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.gateway.servers import GatewayThread

BODY = infer_body(np.zeros((1, 64)))


@pytest.fixture
def keyed(
    repository: Path, serve: Serve, start_gateway: StartGateway, tmp_path: Path
) -> GatewayThread:
    """A gateway with one key from the environment and two from a file."""
    keys_file = tmp_path / "keys"
    keys_file.write_text("# rotated 2026-11\nfile-key-1\n\n  file-key-2  \n", encoding="utf-8")
    return start_gateway([serve(repository).address], api_keys=["env-key"], api_keys_file=keys_file)


@pytest.mark.parametrize("key", ["env-key", "file-key-1", "file-key-2"])
def test_a_configured_key_opens_every_route(key: str, keyed: GatewayThread) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    with client(keyed) as http:
        answers = [
            http.post("/v2/models/digits/infer", json=BODY, headers=headers),
            http.get("/v2/models/digits", headers=headers),
            http.get("/v2/models/digits/ready", headers=headers),
            http.get("/v2", headers=headers),
        ]
    assert [answer.status_code for answer in answers] == [200] * 4


@pytest.mark.parametrize(
    ("headers", "error"),
    [
        ({}, "missing API key: send Authorization: Bearer <key>"),
        ({"Authorization": "Bearer wrong"}, "invalid API key"),
        (
            {"Authorization": "Basic ZW52LWtleQ=="},
            "missing API key: send Authorization: Bearer <key>",
        ),
        ({"Authorization": "Bearer file-key"}, "invalid API key"),
    ],
)
def test_no_valid_key_is_401(headers: dict[str, str], error: str, keyed: GatewayThread) -> None:
    with client(keyed) as http:
        answers = [
            http.post("/v2/models/digits/infer", json=BODY, headers=headers),
            http.get("/v2/models/digits", headers=headers),
        ]
    for answer in answers:
        assert (answer.status_code, answer.json()) == (401, {"error": error})
        assert answer.headers["www-authenticate"] == "Bearer"
        assert "x-trace-id" in answer.headers


def test_health_checks_need_no_key(keyed: GatewayThread) -> None:
    with client(keyed) as http:
        assert http.get("/v2/health/live").status_code == 200
        assert http.get("/v2/health/ready").status_code == 200


def test_the_schema_documents_the_bearer_key(keyed: GatewayThread) -> None:
    with client(keyed) as http:
        schema = http.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert schema["paths"]["/v2/models/{model_name}/infer"]["post"]["security"]
    assert "security" not in schema["paths"]["/v2/health/ready"]["get"]


def test_an_empty_key_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match=r"api_keys\.0"):
        GatewaySettings(api_keys=[""])  # type: ignore[arg-type]


def test_a_keys_file_without_keys_or_unreadable_is_refused_at_startup(tmp_path: Path) -> None:
    unfilled = tmp_path / "keys"
    unfilled.write_text("# provisioned by the secret manager\n\n   \n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"api_keys_file\n.*holds no API key"):
        GatewaySettings(api_keys_file=unfilled)
    with pytest.raises(ValueError, match=r"api_keys_file\n.*cannot read .*missing"):
        GatewaySettings(api_keys_file=tmp_path / "missing")


def test_cors_is_off_by_default(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    gateway = start_gateway([serve(repository).address])
    with client(gateway) as http:
        answer = http.get("/v2/health/live", headers={"Origin": "https://app.example"})
        preflight = http.options(
            "/v2/models/digits/infer",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
    assert "access-control-allow-origin" not in answer.headers
    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_allows_the_configured_origins(
    repository: Path, serve: Serve, start_gateway: StartGateway
) -> None:
    gateway = start_gateway([serve(repository).address], cors_origins=["https://app.example"])
    with client(gateway) as http:
        preflight = http.options(
            "/v2/models/digits/infer",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, traceparent",
            },
        )
        answer = http.post(
            "/v2/models/digits/infer", json=BODY, headers={"Origin": "https://app.example"}
        )
        stranger = http.get("/v2/health/live", headers={"Origin": "https://evil.example"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    exposed = answer.headers["access-control-expose-headers"]
    assert {"x-trace-id", "x-model-version"} <= set(exposed.replace(" ", "").split(","))
    assert "access-control-allow-origin" not in stranger.headers
