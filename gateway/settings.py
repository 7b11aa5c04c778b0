"""Settings of the gateway process (environment prefix `GATEWAY_`)."""

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Self

from pydantic import AfterValidator, Field, PositiveInt, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from gateway.tls import BackendTls
from model_server.grpc.tls import CertificateFile, PrivateKeyFile, check_key_pair
from otel import TelemetrySettings

MAX_PORT = 65535


def _host_port(address: str) -> str:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= MAX_PORT:
        raise ValueError(f"{address!r} is not HOST:PORT with a port from 1 to {MAX_PORT}")
    return address


def _distinct(addresses: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(addresses)) != len(addresses):
        raise ValueError("lists the same model server twice")
    return addresses


def read_keys_file(path: Path) -> list[str]:
    """Non-blank lines that do not start with #, stripped."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _keys_file(path: Path) -> Path:
    try:
        keys = read_keys_file(path)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    if not keys:
        # A secret mount not filled yet must not turn authentication off without a word.
        raise ValueError(f"{path} holds no API key (only blank lines or # comments)")
    return path


BackendAddress = Annotated[str, AfterValidator(_host_port)]
ModelVersion = Annotated[str, Field(pattern=r"^[1-9][0-9]*$")]
"""A model server version directory name: a positive integer."""
VersionWeights = Annotated[Mapping[ModelVersion, PositiveInt], Field(min_length=1)]


class GatewaySettings(TelemetrySettings):
    """Everything the gateway can be told; flags override the environment.

    The telemetry fields (metrics port, JSON logs, log level...) come from `TelemetrySettings`
    and take the same `GATEWAY_` prefix; exporters and sampling are `OTEL_*` variables.
    """

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        extra="forbid",
        use_attribute_docstrings=True,
        # An error of the whole model would otherwise print every setting, API keys included.
        hide_input_in_errors=True,
    )

    host: str = "127.0.0.1"
    """Address the HTTP server binds; use 0.0.0.0 inside a container."""
    port: Annotated[int, Field(ge=0, le=MAX_PORT)] = 8000
    """HTTP port; 0 picks a free one (logged at startup)."""
    backends: Annotated[
        tuple[BackendAddress, ...], Field(min_length=1), AfterValidator(_distinct)
    ] = ("127.0.0.1:8001",)
    """Model servers as a JSON list of HOST:PORT; each request goes to one that has the model
    ready, round robin."""
    backend_tls_ca_file: CertificateFile | None = None
    """PEM CA certificate(s) the model servers' certificates must be signed by; when set, the
    gateway reaches every model server over TLS (plaintext otherwise)."""
    backend_tls_cert_file: CertificateFile | None = None
    """PEM certificate chain the gateway presents to model servers that require client
    certificates (mutual TLS); set together with `backend_tls_key_file`."""
    backend_tls_key_file: PrivateKeyFile | None = None
    """PEM private key (unencrypted) of `backend_tls_cert_file`."""
    backend_tls_server_name: Annotated[str, Field(min_length=1)] | None = None
    """The name the model servers' certificates are checked against instead of the host in
    their address (e.g. when the backends are IP addresses)."""
    traffic_split: Mapping[Annotated[str, Field(min_length=1)], VersionWeights] = {}
    """Per model, the share of requests without a version that each version gets, as positive
    integer weights, e.g. {"digits": {"1": 90, "2": 10}}."""
    request_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """Longest a request waits for its model server (the gRPC deadline); a client's shorter
    timeout (`X-Request-Timeout` header or `timeout` parameter) wins."""
    probe_timeout_s: Annotated[float, Field(gt=0)] = 1.0
    """Deadline of the readiness checks the gateway sends to the model servers."""
    readiness_ttl_s: Annotated[float, Field(gt=0)] = 1.0
    """How long a model server's reported readiness of a model is trusted before it is checked
    again (in the background; only with more than one model server)."""
    max_message_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    """Largest request body (larger ones get 413) and largest gRPC message either way."""
    max_header_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024
    """Largest total size of a request's header names and values; larger requests get 431."""
    max_concurrent_inferences: Annotated[int, Field(ge=0)] = 128
    """Inference requests (POST .../infer) handled at once; beyond it new ones get 429 with
    `Retry-After` at once, before their body is read, instead of queueing without bound
    (docs/RELIABILITY.md). Other requests are not limited. 0: no limit."""
    api_keys: tuple[Annotated[SecretStr, Field(min_length=1)], ...] = ()
    """API keys as a JSON list; when any key is configured every call but the health checks
    needs `Authorization: Bearer <key>`."""
    api_keys_file: Annotated[Path, AfterValidator(_keys_file)] | None = None
    """File with more API keys, one per line (blank lines and lines starting with # ignored),
    read at startup; a file that cannot be read or holds no key stops the gateway from
    starting."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call from a browser (CORS); empty turns CORS off."""
    access_log: bool = False
    """Log one INFO line per request (method, route, status, duration, trace id)."""
    shutdown_grace_s: Annotated[int, Field(ge=0)] = 10
    """On SIGTERM/SIGINT, how long in-flight requests may take to finish."""
    metrics_port: Annotated[int, Field(ge=0, le=MAX_PORT)] = 9465
    """Port of the Prometheus `/metrics` endpoint (the model server's default is 9464); 0 picks
    a free one."""

    @model_validator(mode="after")
    def _check_backend_tls(self) -> Self:
        pair = check_key_pair(
            ("backend_tls_cert_file", self.backend_tls_cert_file),
            ("backend_tls_key_file", self.backend_tls_key_file),
        )
        if self.backend_tls_ca_file is None and pair is not None:
            raise ValueError("backend_tls_cert_file needs backend_tls_ca_file")
        if self.backend_tls_ca_file is None and self.backend_tls_server_name is not None:
            raise ValueError("backend_tls_server_name needs backend_tls_ca_file")
        return self

    def backend_tls(self) -> BackendTls | None:
        """TLS to the model servers; None: plaintext."""
        if self.backend_tls_ca_file is None:
            return None
        return BackendTls(
            self.backend_tls_ca_file,
            self.backend_tls_cert_file,
            self.backend_tls_key_file,
            self.backend_tls_server_name,
        )
