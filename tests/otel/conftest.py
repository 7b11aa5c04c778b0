"""Fixtures of the telemetry tests: a clean OTEL_* environment and local telemetry."""

import os
from collections.abc import Iterator
from typing import Any

import pytest

from otel import Telemetry, TelemetrySettings, setup_telemetry
from tests.otel.support import MakeTelemetry


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* or INFERWATCH_TELEMETRY_* variable leaks in from the outside."""
    for name in list(os.environ):
        if name.startswith(("OTEL_", "INFERWATCH_TELEMETRY_")):
            monkeypatch.delenv(name)


@pytest.fixture
def make_telemetry() -> Iterator[MakeTelemetry]:
    """`make_telemetry(settings_overrides..., span_processors=..., ...)`: local providers
    (no globals), `/metrics` on a free loopback port; every one is shut down at teardown."""
    made: list[Telemetry] = []

    def make(
        *,
        span_processors: Any = (),
        metric_readers: Any = (),
        log_processors: Any = (),
        **values: Any,
    ) -> Telemetry:
        settings = TelemetrySettings(**{"metrics_port": 0, **values})
        telemetry = setup_telemetry(
            settings,
            service_name="otel-test",
            service_version="1.2.3",
            span_processors=span_processors,
            metric_readers=metric_readers,
            log_processors=log_processors,
            install_globals=False,
        )
        made.append(telemetry)
        return telemetry

    yield make
    for telemetry in made:
        telemetry.shutdown()
