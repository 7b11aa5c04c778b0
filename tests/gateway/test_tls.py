"""The gateway in front of TLS and mutual-TLS model servers (certificates from tests/pki.py)."""

import logging
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from gateway import cli
from gateway.settings import GatewaySettings
from model_server import digits
from tests.conftest import Serve
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.gateway.servers import GatewayProcess
from tests.pki import Authority

DIGITS = infer_body(digits.load_split().x_test[:2], outputs=[{"name": "label"}])


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    """The CA that signs the model server's and the gateway's certificates."""
    return Authority(tmp_path, "ca")


def _infer_status(start_gateway: StartGateway, backend: str, **settings: object) -> int:
    """The status of a REST inference through a new gateway with these settings."""
    with client(start_gateway([backend], **settings)) as http:
        response = http.post("/v2/models/digits/infer", json=DIGITS)
    if response.status_code == 200:
        [label] = response.json()["outputs"]
        assert (label["name"], label["shape"]) == ("label", [2])
    return response.status_code


def test_the_gateway_reaches_a_tls_model_server_trusting_its_ca(
    repository: Path,
    tmp_path: Path,
    serve: Serve,
    start_gateway: StartGateway,
    ca: Authority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pair = ca.issue("server")
    backend = serve(repository, tls_cert_file=pair.cert_file, tls_key_file=pair.key_file).address

    with caplog.at_level(logging.INFO, logger="gateway.pool"):
        assert _infer_status(start_gateway, backend, backend_tls_ca_file=ca.cert_file) == 200
    assert _infer_status(start_gateway, backend) == 503
    other_ca = Authority(tmp_path, "other-ca")
    assert _infer_status(start_gateway, backend, backend_tls_ca_file=other_ca.cert_file) == 503
    assert f"channels to the model servers: TLS, trusting {ca.cert_file}" in caplog.messages


def test_the_gateway_presents_its_certificate_to_a_mutual_tls_model_server(
    repository: Path, serve: Serve, start_gateway: StartGateway, ca: Authority
) -> None:
    pair = ca.issue("server")
    backend = serve(
        repository,
        tls_cert_file=pair.cert_file,
        tls_key_file=pair.key_file,
        tls_client_ca_file=ca.cert_file,
    ).address
    gateway_pair = ca.issue("gateway")

    with_certificate = _infer_status(
        start_gateway,
        backend,
        backend_tls_ca_file=ca.cert_file,
        backend_tls_cert_file=gateway_pair.cert_file,
        backend_tls_key_file=gateway_pair.key_file,
    )
    without = _infer_status(start_gateway, backend, backend_tls_ca_file=ca.cert_file)

    assert (with_certificate, without) == (200, 503)


def test_the_server_name_override_checks_a_certificate_for_another_name(
    repository: Path, serve: Serve, start_gateway: StartGateway, ca: Authority
) -> None:
    pair = ca.issue("server", hosts=["model-server.internal"])
    backend = serve(repository, tls_cert_file=pair.cert_file, tls_key_file=pair.key_file).address

    overridden = _infer_status(
        start_gateway,
        backend,
        backend_tls_ca_file=ca.cert_file,
        backend_tls_server_name="model-server.internal",
    )
    by_address = _infer_status(start_gateway, backend, backend_tls_ca_file=ca.cert_file)

    assert (overridden, by_address) == (200, 503)


def _settings_error(**values: object) -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        GatewaySettings.model_validate(values)
    return raised.value


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            ("ca_file", "cert_file"),
            "backend_tls_key_file is not set: "
            "backend_tls_cert_file and backend_tls_key_file go together",
        ),
        (("ca_file", "key_file"), "backend_tls_cert_file is not set"),
        (("cert_file", "key_file"), "backend_tls_cert_file needs backend_tls_ca_file"),
        (("server_name",), "backend_tls_server_name needs backend_tls_ca_file"),
    ],
)
def test_incomplete_backend_tls_settings_name_the_setting(
    ca: Authority, given: tuple[str, ...], message: str
) -> None:
    pair = ca.issue("gateway")
    values = {
        "ca_file": ca.cert_file,
        "cert_file": pair.cert_file,
        "key_file": pair.key_file,
        "server_name": "model-server.internal",
    }
    chosen = {f"backend_tls_{name}": values[name] for name in given}
    error = _settings_error(api_keys=["secret-key-1"], **chosen)
    assert message in str(error)
    assert "secret-key-1" not in str(error)


def test_a_garbage_ca_file_is_refused_naming_setting_and_file(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a PEM file\n")
    [detail] = _settings_error(backend_tls_ca_file=garbage).errors()
    assert detail["loc"] == ("backend_tls_ca_file",)
    assert detail["msg"] == f"Value error, {garbage} holds no PEM certificate"


def test_the_cli_exits_2_naming_an_unreadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.pem"

    code = cli.main(["--backend-tls-ca-file", str(missing)])

    stderr = capsys.readouterr().err
    assert code == 2
    assert stderr.startswith("invalid gateway settings:")
    expected = f"backend_tls_ca_file\n  Value error, cannot read {missing}: No such file"
    assert expected in stderr


def test_the_cli_flags_reach_a_mutual_tls_model_server_by_its_certificate_name(
    repository: Path, tmp_path: Path, serve: Serve, ca: Authority
) -> None:
    pair = ca.issue("server", hosts=["model-server.internal"])
    backend = serve(
        repository,
        tls_cert_file=pair.cert_file,
        tls_key_file=pair.key_file,
        tls_client_ca_file=ca.cert_file,
    ).address
    gateway_pair = ca.issue("gateway")
    process = GatewayProcess(
        tmp_path,
        *("--backend", backend, "--backend-tls-ca-file", str(ca.cert_file)),
        *("--backend-tls-cert-file", str(gateway_pair.cert_file)),
        *("--backend-tls-key-file", str(gateway_pair.key_file)),
        *("--backend-tls-server-name", "model-server.internal"),
        env={"GATEWAY_TELEMETRY_ENABLED": "false"},
    )
    try:
        with httpx.Client(base_url=process.wait_ready(), timeout=30) as http:
            response = http.post("/v2/models/digits/infer", json=DIGITS)
        assert process.terminate() == 0
    finally:
        process.kill()
    assert response.status_code == 200, "".join(process.log) + response.text
    assert any(
        f"client certificate {gateway_pair.cert_file}, server name model-server.internal" in line
        for line in process.log
    )
