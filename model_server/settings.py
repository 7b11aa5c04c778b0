"""Settings of the model server process (environment prefix `MODEL_SERVER_`)."""

from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from model_server.grpc.tls import CertificateFile, PrivateKeyFile, ServerTls, check_key_pair
from otel import TelemetrySettings


class ModelServerSettings(TelemetrySettings):
    """Everything the model server can be told; flags override the environment.

    The telemetry fields (metrics port, JSON logs, log level...) come from `TelemetrySettings`
    and take the same `MODEL_SERVER_` prefix; exporters and sampling are `OTEL_*` variables.
    """

    model_config = SettingsConfigDict(
        env_prefix="MODEL_SERVER_", extra="forbid", use_attribute_docstrings=True
    )

    host: str = "127.0.0.1"
    """Address the gRPC server binds; use 0.0.0.0 inside a container."""
    grpc_port: Annotated[int, Field(ge=0, le=65535)] = 8001
    """gRPC port; 0 picks a free one (logged at startup)."""
    tls_cert_file: CertificateFile | None = None
    """PEM certificate chain of the gRPC port, the server's certificate first; with
    `tls_key_file` the port serves TLS only (plaintext when neither is set)."""
    tls_key_file: PrivateKeyFile | None = None
    """PEM private key (unencrypted) of `tls_cert_file`; the two are set together."""
    tls_client_ca_file: CertificateFile | None = None
    """PEM CA certificate(s): when set, clients must present a certificate signed by one of
    them (mutual TLS). Needs `tls_cert_file` and `tls_key_file`."""
    model_repository: Path = Path("models")
    """Directory holding `<model>/<version>/` folders."""
    repository_poll_s: Annotated[float, Field(ge=0)] = 0.0
    """Every this many seconds, load the model and version directories that appeared in the
    repository (and retry a FAILED version once its files change); 0 turns polling off, leaving
    loads and unloads to the model repository RPCs."""
    create_default_model: bool = True
    """When the repository holds no model, train and save the `digits` model there first."""
    server_name: str = "inferwatch"
    """Name reported by ServerMetadata."""
    max_message_bytes: Annotated[int, Field(ge=1024)] = 16 * 1024 * 1024
    """Largest request or response message; bigger requests get RESOURCE_EXHAUSTED."""
    max_concurrent_rpcs: Annotated[int, Field(ge=0)] = 128
    """ModelInfer calls handled at once; beyond it new ModelInfer calls are answered
    RESOURCE_EXHAUSTED instead of queueing inside the server without bound (docs/RELIABILITY.md).
    Other calls (health, readiness, metadata, feedback, repository) are not limited. 0: no
    limit."""
    shutdown_grace_s: Annotated[float, Field(ge=0)] = 10.0
    """On SIGTERM/SIGINT, how long in-flight requests may take to finish."""
    drift_interval_s: Annotated[float, Field(gt=0)] = 10.0
    """How often each model version's drift window is evaluated for the drift metrics."""
    feedback_max_predictions: Annotated[int, Field(ge=0)] = 100_000
    """Most predictions (rows) kept for their delayed true labels (the Feedback RPC, see
    docs/feedback.md); beyond it the oldest are evicted, and counted. 0 keeps none: feedback
    off."""
    feedback_max_age_s: Annotated[float, Field(gt=0)] = 3600.0
    """How long a prediction waits for its true label; older ones are expired, and counted."""
    feedback_window_s: Annotated[float, Field(gt=0)] = 3600.0
    """Sliding window of the live quality metrics (accuracy, macro F1, per-class recall, share
    of predictions labelled), per model version."""
    feedback_interval_s: Annotated[float, Field(gt=0)] = 10.0
    """How often the quality windows are evaluated for the metrics and expired predictions are
    removed (a Feedback call also refreshes them)."""
    torch_threads: Annotated[int, Field(ge=1)] = 1
    """torch intra-op threads per forward pass (see docs/architecture.md for why 1)."""
    fault_injection: bool = False
    """Honour the fault-injection request parameters (`inferwatch_fault_delay_ms`,
    `inferwatch_fault_error`) for load tests; when off, a request carrying them is refused with
    INVALID_ARGUMENT. Never on in production."""
    inline_forward_max_ms: Annotated[float, Field(ge=0)] = 0.5
    """Forward passes that recently took at most this long run on the event loop instead of
    the version's inference thread (for small models the hop costs more than the pass); 0
    always uses the thread."""
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    """The event loop that decodes, batches and answers every call: `uvloop` (libuv; less CPU
    a call, see benchmarks/RESULTS.md) or `asyncio`, the standard library's (to debug with
    asyncio's debug mode, or to compare)."""

    @model_validator(mode="after")
    def _check_tls(self) -> Self:
        pair = check_key_pair(
            ("tls_cert_file", self.tls_cert_file), ("tls_key_file", self.tls_key_file)
        )
        if pair is None and self.tls_client_ca_file is not None:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        return self

    def tls(self) -> ServerTls | None:
        """TLS of the gRPC port; None: plaintext."""
        if self.tls_cert_file is None or self.tls_key_file is None:
            return None
        return ServerTls(self.tls_cert_file, self.tls_key_file, self.tls_client_ca_file)
