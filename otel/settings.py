"""Telemetry settings (environment prefix `INFERWATCH_TELEMETRY_`).

Only what the `OTEL_*` variables do not cover lives here: exporter endpoints, headers, protocol,
timeouts, sampling, batch sizes and resource attributes stay with the OpenTelemetry SDK.
"""

import logging
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TelemetrySettings(BaseSettings):
    """Per-process telemetry switches; a service may subclass it to change defaults."""

    model_config = SettingsConfigDict(
        env_prefix="INFERWATCH_TELEMETRY_", extra="forbid", use_attribute_docstrings=True
    )

    telemetry_enabled: bool = True
    """Master switch: False installs no providers, exporters or `/metrics` (logging still works)."""
    deployment_environment: str = "development"
    """Value of the `deployment.environment.name` resource attribute."""
    metrics_host: str = "127.0.0.1"
    """Address the Prometheus `/metrics` endpoint binds; use 0.0.0.0 inside a container."""
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 9464
    """Port of the `/metrics` endpoint; 0 picks a free one (see `Telemetry.metrics_port`)."""
    log_level: str = "INFO"
    """Level of the root logger (a Python logging level name)."""
    json_logs: bool = True
    """One JSON object per line on stdout; False writes human-readable lines."""
    shutdown_timeout_s: Annotated[float, Field(gt=0)] = 5.0
    """Upper bound on `Telemetry.shutdown()`; telemetry not exported by then is dropped."""
    encode_spans_at_end: bool = True
    """Spans sent over OTLP/gRPC are encoded on the thread that ends them, 32 at a time (about
    60 µs), and enter the export queue together: the cost is spread over requests. False
    leaves encoding to the export thread, up to 512 at a time, which uses idle time but stalls
    requests that arrive meanwhile for milliseconds, and queues spans one by one
    (benchmarks/RESULTS.md)."""

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        name = value.strip().upper()
        if name not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {value!r}")
        return name
