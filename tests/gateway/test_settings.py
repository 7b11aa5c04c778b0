"""GatewaySettings: defaults, the environment, validation, documentation."""

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings


def test_defaults() -> None:
    settings = GatewaySettings()
    assert (settings.host, settings.port, settings.metrics_port) == ("127.0.0.1", 8000, 9465)
    assert settings.backends == ("127.0.0.1:8001",)
    assert (settings.api_keys, settings.cors_origins, settings.traffic_split) == ((), (), {})


def test_the_environment_uses_the_gateway_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_BACKENDS", '["10.0.0.1:8001", "10.0.0.2:8001"]')
    monkeypatch.setenv("GATEWAY_METRICS_PORT", "9999")
    monkeypatch.setenv("GATEWAY_API_KEYS", '["k1"]')
    settings = GatewaySettings()
    assert settings.backends == ("10.0.0.1:8001", "10.0.0.2:8001")
    assert settings.metrics_port == 9999
    assert [key.get_secret_value() for key in settings.api_keys] == ["k1"]
    assert "k1" not in repr(settings)


@pytest.mark.parametrize(
    ("backends", "error"),
    [
        ([], "Tuple should have at least 1 item"),
        (["localhost"], "'localhost' is not HOST:PORT"),
        (["localhost:0"], "'localhost:0' is not HOST:PORT"),
        (["localhost:http"], "'localhost:http' is not HOST:PORT"),
        (["a:1", "a:1"], "lists the same model server twice"),
    ],
)
def test_bad_backends_are_refused(backends: list[str], error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        GatewaySettings(backends=backends)  # type: ignore[arg-type]


def test_every_setting_is_documented() -> None:
    undocumented = [
        name for name, field in GatewaySettings.model_fields.items() if not field.description
    ]
    assert undocumented == []
