"""Log lines on stdout that carry the current trace context, and the OTLP log handler.

Stdout: one JSON object per line (time, level, logger, message, trace_id, span_id, service.name
and the record's `extra` fields) or a readable text line. OTLP: the `LoggingHandler` of
opentelemetry-instrumentation-logging on our logger provider, attached directly (not through
`LoggingInstrumentor`, which patches global logging state and only knows the global provider).
Records of the `opentelemetry.*` loggers (export errors, queue-full warnings) go to stdout only:
shipping them through the pipeline they describe would loop.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider
from opentelemetry.instrumentation.logging.handler import LoggingHandler

_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def trace_context() -> dict[str, str]:
    """`trace_id` and `span_id` (hex) of the current span; empty outside a span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record; `extra` fields are added unless they clash with ours."""

    def __init__(self, service_name: str) -> None:
        super().__init__()
        self._service_name = service_name

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **trace_context(),
            "service.name": self._service_name,
        }
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            payload["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRIBUTES:
                payload.setdefault(key, value)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [trace_id=… span_id=…]: message`."""

    def format(self, record: logging.LogRecord) -> str:
        context = "".join(f" {key}={value}" for key, value in trace_context().items())
        line = f"{self.formatTime(record)} {record.levelname} {record.name}{context}: "
        line += record.getMessage()
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def install_stdout_handler(*, level: str, json_lines: bool, service_name: str) -> logging.Handler:
    """Sets the root logger's level and adds a stdout handler (JSON or text lines) to it."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter(service_name) if json_lines else TextFormatter())
    root = logging.getLogger()
    root.setLevel(level)
    root.addHandler(handler)
    return handler


def install_otlp_handler(logger_provider: LoggerProvider) -> logging.Handler:
    """Adds a handler to the root logger that emits records to `logger_provider`."""
    handler = LoggingHandler(logger_provider=logger_provider)
    handler.addFilter(lambda record: not record.name.startswith("opentelemetry"))
    logging.getLogger().addHandler(handler)
    return handler


def remove_log_handlers(handlers: list[logging.Handler]) -> None:
    """Detaches and closes handlers added by the functions above."""
    root = logging.getLogger()
    for handler in handlers:
        root.removeHandler(handler)
        handler.close()
