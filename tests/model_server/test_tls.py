"""TLS and mutual TLS on the gRPC port, with certificates the tests generate (tests/pki.py)."""

import logging
from pathlib import Path

import grpc
import pytest
from pydantic import ValidationError

from model_server import cli
from model_server.proto import grpc_service_pb2 as pb
from model_server.proto import grpc_service_pb2_grpc as pb_grpc
from model_server.settings import ModelServerSettings
from tests.conftest import Serve
from tests.model_server.protocol import infer_labels
from tests.model_server.server_process import ServerProcess
from tests.pki import Authority, KeyPair

REFUSAL_TIMEOUT_S = 10.0
"""A refused handshake fails the call at once (UNAVAILABLE); this only bounds a hang."""


@pytest.fixture
def ca(tmp_path: Path) -> Authority:
    """The CA that signs the server's and the trusted clients' certificates."""
    return Authority(tmp_path, "ca")


@pytest.fixture
def other_ca(tmp_path: Path) -> Authority:
    """A CA nobody in the test trusts."""
    return Authority(tmp_path, "other-ca")


def tls_channel(address: str, trusted: Path, client: KeyPair | None = None) -> grpc.Channel:
    """A TLS channel trusting the CA certificate in `trusted`, presenting `client` if given."""
    credentials = grpc.ssl_channel_credentials(
        trusted.read_bytes(), **(client.client_credentials() if client else {})
    )
    return grpc.secure_channel(address, credentials)


def refusal(channel: grpc.Channel) -> grpc.StatusCode:
    """The status of a ServerLive call that must fail."""
    with pytest.raises(grpc.RpcError) as raised:
        pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(
            pb.ServerLiveRequest(), timeout=REFUSAL_TIMEOUT_S
        )
    code: grpc.StatusCode = raised.value.code()
    return code


def test_tls_serves_clients_that_trust_the_ca_and_only_them(
    repository: Path,
    serve: Serve,
    ca: Authority,
    other_ca: Authority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pair = ca.issue("server")
    with caplog.at_level(logging.INFO, logger="model_server.server"):
        server = serve(repository, tls_cert_file=pair.cert_file, tls_key_file=pair.key_file)

    with tls_channel(server.address, ca.cert_file) as trusting:
        assert infer_labels(trusting).shape == (3,)
    with grpc.insecure_channel(server.address) as plaintext:
        assert refusal(plaintext) is grpc.StatusCode.UNAVAILABLE
    with tls_channel(server.address, other_ca.cert_file) as distrusting:
        assert refusal(distrusting) is grpc.StatusCode.UNAVAILABLE
    [listening] = [r.getMessage() for r in caplog.records if "listening" in r.getMessage()]
    assert listening.endswith(f"(TLS, certificate {pair.cert_file})")


def test_mutual_tls_needs_a_client_certificate_signed_by_the_client_ca(
    repository: Path,
    serve: Serve,
    ca: Authority,
    other_ca: Authority,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pair = ca.issue("server")
    with caplog.at_level(logging.INFO, logger="model_server.server"):
        server = serve(
            repository,
            tls_cert_file=pair.cert_file,
            tls_key_file=pair.key_file,
            tls_client_ca_file=ca.cert_file,
        )

    with tls_channel(server.address, ca.cert_file, ca.issue("client")) as signed:
        assert infer_labels(signed).shape == (3,)
    with tls_channel(server.address, ca.cert_file) as anonymous:
        assert refusal(anonymous) is grpc.StatusCode.UNAVAILABLE
    with tls_channel(server.address, ca.cert_file, other_ca.issue("stranger")) as stranger:
        assert refusal(stranger) is grpc.StatusCode.UNAVAILABLE
    [listening] = [r.getMessage() for r in caplog.records if "listening" in r.getMessage()]
    assert "mutual TLS" in listening
    assert f"client certificates signed by {ca.cert_file}" in listening


def test_the_cli_flags_serve_mutual_tls(repository: Path, tmp_path: Path, ca: Authority) -> None:
    pair = ca.issue("server")
    process = ServerProcess(
        tmp_path,
        *("--grpc-port", "0", "--model-repository", str(repository)),
        *("--tls-cert-file", str(pair.cert_file), "--tls-key-file", str(pair.key_file)),
        *("--tls-client-ca-file", str(ca.cert_file)),
        env={"MODEL_SERVER_TELEMETRY_ENABLED": "false", "MODEL_SERVER_JSON_LOGS": "false"},
    )
    try:
        address = process.wait_ready()
        with tls_channel(address, ca.cert_file, ca.issue("client")) as channel:
            assert infer_labels(channel).shape == (3,)
        assert process.terminate() == 0
    finally:
        process.kill()
    assert any("(mutual TLS, certificate" in line for line in process.log)


def _garbage(path: Path, text: str = "not a PEM file\n") -> Path:
    path.write_text(text)
    return path


def _settings_error(**values: object) -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        ModelServerSettings.model_validate(values)
    return raised.value


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (("cert",), "tls_key_file is not set: tls_cert_file and tls_key_file go together"),
        (("key",), "tls_cert_file is not set: tls_cert_file and tls_key_file go together"),
        (("client_ca",), "tls_client_ca_file needs tls_cert_file and tls_key_file"),
        (("cert", "client_ca"), "tls_key_file is not set"),
    ],
)
def test_incomplete_tls_settings_name_the_missing_setting(
    ca: Authority, given: tuple[str, ...], message: str
) -> None:
    pair = ca.issue("server")
    files = {"cert": pair.cert_file, "key": pair.key_file, "client_ca": ca.cert_file}
    error = _settings_error(**{f"tls_{name}_file": files[name] for name in given})
    assert message in str(error)


def test_a_key_of_another_certificate_is_refused(ca: Authority) -> None:
    pair, other = ca.issue("server"), ca.issue("other")
    error = _settings_error(tls_cert_file=pair.cert_file, tls_key_file=other.key_file)
    assert f"tls_key_file {other.key_file} is not the private key of tls_cert_file" in str(error)


@pytest.mark.parametrize(
    ("field", "content", "message"),
    [
        ("tls_cert_file", "not a PEM file\n", "holds no PEM certificate"),
        (
            "tls_cert_file",
            "-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n",
            "holds no valid PEM certificate",
        ),
        ("tls_key_file", "not a PEM file\n", "holds no PEM private key"),
        (
            "tls_key_file",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nZ2FyYmFnZQ==\n"
            "-----END ENCRYPTED PRIVATE KEY-----\n",
            "holds an encrypted private key",
        ),
        ("tls_client_ca_file", "not a PEM file\n", "holds no PEM certificate"),
    ],
)
def test_garbage_files_are_refused_naming_setting_and_file(
    ca: Authority, tmp_path: Path, field: str, content: str, message: str
) -> None:
    pair = ca.issue("server")
    values = {
        "tls_cert_file": pair.cert_file,
        "tls_key_file": pair.key_file,
        "tls_client_ca_file": ca.cert_file,
    }
    values[field] = _garbage(tmp_path / "garbage.pem", content)
    [detail] = _settings_error(**values).errors()
    assert detail["loc"] == (field,)
    assert detail["msg"].startswith(f"Value error, {values[field]} {message}")


def test_a_garbage_key_inside_pem_markers_is_refused(ca: Authority, tmp_path: Path) -> None:
    pair = ca.issue("server")
    key = _garbage(
        tmp_path / "garbage.key",
        "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n",
    )
    error = _settings_error(tls_cert_file=pair.cert_file, tls_key_file=key)
    assert f"tls_key_file {key} holds no valid private key for tls_cert_file" in str(error)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_files_are_refused_naming_setting_and_file(
    ca: Authority, tmp_path: Path, kind: str
) -> None:
    pair = ca.issue("server")
    unreadable = tmp_path / "unreadable.pem"
    if kind == "directory":
        unreadable.mkdir()
    [detail] = _settings_error(tls_cert_file=unreadable, tls_key_file=pair.key_file).errors()
    assert detail["loc"] == ("tls_cert_file",)
    reason = "No such file or directory" if kind == "missing" else "Is a directory"
    assert detail["msg"] == f"Value error, cannot read {unreadable}: {reason}"


def test_the_cli_exits_2_naming_the_garbage_file_without_a_stack_trace(
    ca: Authority,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pair = ca.issue("server")
    garbage = _garbage(tmp_path / "garbage.pem")
    monkeypatch.setenv("MODEL_SERVER_TLS_CERT_FILE", str(garbage))

    code = cli.main(["--tls-key-file", str(pair.key_file)])

    stderr = capsys.readouterr().err
    assert code == 2
    assert stderr.startswith("invalid model server settings:")
    assert f"tls_cert_file\n  Value error, {garbage} holds no PEM certificate" in stderr


def test_the_tls_settings_are_documented() -> None:
    fields = ModelServerSettings.model_fields
    assert all(fields[f"tls_{name}_file"].description for name in ("cert", "key", "client_ca"))
