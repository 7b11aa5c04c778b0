"""Stdout log lines carry the current trace context; OTLP log records too, without duplicates."""

import json
import logging
from typing import Any

import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from otel import Telemetry
from tests.otel.support import MakeTelemetry

LOGGER = logging.getLogger("tests.otel.logs")


def _json_lines(capsys: pytest.CaptureFixture[str], logger_name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [line for line in lines if line["logger"] == logger_name]


def _in_memory_logs() -> tuple[InMemoryLogRecordExporter, SimpleLogRecordProcessor]:
    exporter = InMemoryLogRecordExporter()  # type: ignore[no-untyped-call]
    return exporter, SimpleLogRecordProcessor(exporter)


def _ids(telemetry: Telemetry) -> tuple[str, str]:
    """Logs one line inside a span; the span's (trace_id, span_id) in hex."""
    with telemetry.tracer_provider.get_tracer("tests.otel").start_as_current_span("op") as span:
        LOGGER.info("inside %s", "span", extra={"model": "digits", "batch": {"size": 4}})
    context = span.get_span_context()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def test_json_line_inside_a_span_carries_its_ids(
    make_telemetry: MakeTelemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    telemetry = make_telemetry()
    capsys.readouterr()
    trace_id, span_id = _ids(telemetry)
    LOGGER.warning("outside")

    inside, outside = _json_lines(capsys, LOGGER.name)
    assert inside == {
        "time": inside["time"],
        "level": "INFO",
        "logger": "tests.otel.logs",
        "message": "inside span",
        "trace_id": trace_id,
        "span_id": span_id,
        "service.name": "otel-test",
        "model": "digits",
        "batch": {"size": 4},
    }
    assert inside["time"].endswith("+00:00")
    assert outside["message"] == "outside"
    assert "trace_id" not in outside
    assert "span_id" not in outside


def test_exceptions_and_unserialisable_extras(
    make_telemetry: MakeTelemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    make_telemetry()
    capsys.readouterr()
    try:
        raise ValueError("bad input")
    except ValueError:
        LOGGER.exception("failed", extra={"level": "clash", "payload": object()})

    [line] = _json_lines(capsys, LOGGER.name)
    assert line["level"] == "ERROR"  # our field wins over a clashing extra
    assert "ValueError: bad input" in line["exception"]
    assert line["payload"].startswith("<object object")


def test_text_lines_carry_ids_too(
    make_telemetry: MakeTelemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    telemetry = make_telemetry(json_logs=False)
    capsys.readouterr()
    trace_id, span_id = _ids(telemetry)

    [line] = [line for line in capsys.readouterr().out.splitlines() if LOGGER.name in line]
    assert line.endswith(f"INFO tests.otel.logs trace_id={trace_id} span_id={span_id}: inside span")


def test_one_line_per_record_on_stdout_and_over_otlp(
    make_telemetry: MakeTelemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    exported, processor = _in_memory_logs()
    telemetry = make_telemetry(log_processors=[processor])
    capsys.readouterr()
    trace_id, span_id = _ids(telemetry)
    logging.getLogger("opentelemetry.sdk.test").warning("SDK diagnostics stay local")

    assert len(_json_lines(capsys, LOGGER.name)) == 1
    # Exactly one: the opentelemetry.* record stayed on stdout.
    [record] = [r.log_record for r in exported.get_finished_logs()]
    assert record.body == "inside span"
    assert (f"{record.trace_id:032x}", f"{record.span_id:016x}") == (trace_id, span_id)
    assert record.attributes is not None
    assert record.attributes["model"] == "digits"


def test_shutdown_detaches_the_handlers(make_telemetry: MakeTelemetry) -> None:
    before = list(logging.getLogger().handlers)
    telemetry = make_telemetry(log_processors=[_in_memory_logs()[1]])
    assert len(logging.getLogger().handlers) == len(before) + 2
    telemetry.shutdown()
    assert logging.getLogger().handlers == before
