"""Global providers for API-only library code, the disable switch, bounded flush and shutdown."""

import json
import logging
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest
from opentelemetry import metrics, trace

from otel import TelemetrySettings
from tests.otel.support import Blackhole, MakeTelemetry, scrape

REPOSITORY = Path(__file__).resolve().parents[2]

# Library-style code: only the OpenTelemetry API, after one setup_telemetry() call, and no
# shutdown() call (the exit hook must flush within the bound while the endpoint blackholes).
CHILD = """
import json, logging, sys
from opentelemetry import metrics, trace
from otel import TelemetrySettings, setup_telemetry
from tests.otel.support import scrape

telemetry = setup_telemetry(TelemetrySettings(), service_name="child", service_version="7")
tracer = trace.get_tracer("library")
histogram = metrics.get_meter("library").create_histogram("library.latency", unit="s")
with tracer.start_as_current_span("work") as span:
    histogram.record(0.2)
    logging.getLogger("library").info("worked")
_, body = scrape(telemetry.metrics_port, openmetrics=True)
trace_id = f"{span.get_span_context().trace_id:032x}"
print("REPORT", json.dumps({"trace_id": trace_id, "metrics": body}), file=sys.stderr)
"""


def test_library_code_uses_the_global_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    blackhole = Blackhole()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", blackhole.endpoint)
    monkeypatch.setenv("INFERWATCH_TELEMETRY_METRICS_PORT", "0")
    monkeypatch.setenv("INFERWATCH_TELEMETRY_SHUTDOWN_TIMEOUT_S", "1")
    started = time.monotonic()
    try:
        child = subprocess.run(
            [sys.executable, "-c", CHILD],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        blackhole.stop()
    elapsed = time.monotonic() - started

    [report_line] = [line for line in child.stderr.splitlines() if line.startswith("REPORT ")]
    report = json.loads(report_line.removeprefix("REPORT "))
    assert f'trace_id="{report["trace_id"]}"' in report["metrics"]
    assert "library_latency_seconds_bucket" in report["metrics"]
    [line] = [json.loads(line) for line in child.stdout.splitlines() if '"library"' in line]
    assert line["trace_id"] == report["trace_id"]
    assert line["service.name"] == "child"
    assert elapsed < 15  # start-up plus the 1 s exit bound, not the SDK's 30 s


def test_disabled_telemetry_keeps_logging_only(
    make_telemetry: MakeTelemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    telemetry = make_telemetry(telemetry_enabled=False)

    assert telemetry.metrics_port is None
    assert isinstance(telemetry.tracer_provider, trace.NoOpTracerProvider)
    assert isinstance(telemetry.meter_provider, metrics.NoOpMeterProvider)
    assert telemetry.force_flush()
    logging.getLogger("tests.otel").warning("still logging")
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (line["message"], line["service.name"]) == ("still logging", "otel-test")
    telemetry.shutdown()


def test_shutdown_stops_metrics_and_is_idempotent(make_telemetry: MakeTelemetry) -> None:
    telemetry = make_telemetry()
    port = telemetry.metrics_port
    assert port
    scrape(port)

    started = time.monotonic()
    telemetry.shutdown()
    telemetry.shutdown()
    assert time.monotonic() - started < 1
    with pytest.raises(urllib.error.URLError):
        scrape(port)


def test_force_flush_is_bounded_when_the_endpoint_hangs(
    make_telemetry: MakeTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    blackhole = Blackhole()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", blackhole.endpoint)
    try:
        telemetry = make_telemetry(shutdown_timeout_s=1)
        with telemetry.tracer_provider.get_tracer("tests.otel").start_as_current_span("op"):
            pass
        started = time.monotonic()
        assert not telemetry.force_flush(timeout_s=0.5)
        assert time.monotonic() - started < 1.5
        started = time.monotonic()
        telemetry.shutdown()
        assert time.monotonic() - started < 3
    finally:
        blackhole.stop()


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INFERWATCH_TELEMETRY_LOG_LEVEL", "debug")
    monkeypatch.setenv("INFERWATCH_TELEMETRY_JSON_LOGS", "false")
    settings = TelemetrySettings()
    assert (settings.log_level, settings.json_logs, settings.metrics_port) == ("DEBUG", False, 9464)
    monkeypatch.setenv("INFERWATCH_TELEMETRY_LOG_LEVEL", "chatty")
    with pytest.raises(ValueError, match="unknown log level"):
        TelemetrySettings()
