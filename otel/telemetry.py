"""The handle `setup_telemetry` returns: providers, the `/metrics` port, flush and shutdown."""

import atexit
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import _logs, metrics, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel.logs import remove_log_handlers
from otel.metric_export import PeriodicExport
from otel.prometheus import MetricsServer

logger = logging.getLogger(__name__)


class Closable(Protocol):
    """An exporter, as far as aborting a stuck shutdown is concerned."""

    def shutdown(self) -> None: ...


@dataclass(frozen=True)
class SdkPipeline:
    """What an enabled setup built; `Telemetry` owns it."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    metrics_server: MetricsServer
    metric_export: PeriodicExport | None
    """OTLP metric export from the Prometheus reader's aggregation (None: no OTLP metrics, or
    the SDK's own periodic reader, for an exporter that wants other temporality)."""
    exporters: Sequence[Closable]
    """The OTLP exporters, shut down directly when a graceful shutdown overruns."""
    ships_logs: bool
    """Whether the logger provider has a processor, i.e. Python logs need the OTLP handler."""

    def force_flush(self) -> bool:
        providers = (self.tracer_provider, self.logger_provider, self.meter_provider)
        flushed = all([provider.force_flush() for provider in providers])
        return (self.metric_export is None or self.metric_export.force_flush()) and flushed

    def shutdown(self) -> bool:
        """Spans and logs first, metrics last: the final metric export counts their losses."""
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()
        if self.metric_export is not None:
            self.metric_export.shutdown()
        self.meter_provider.shutdown()
        return True


class Telemetry:
    """One process's telemetry. Call `shutdown()` once when the process stops (also at exit)."""

    def __init__(
        self,
        *,
        resource: Resource,
        pipeline: SdkPipeline | None,
        stdout_handler: logging.Handler,
        otlp_handler: logging.Handler | None,
        shutdown_timeout_s: float,
    ) -> None:
        self.resource = resource
        """The resource every signal carries."""
        self._pipeline = pipeline
        self._stdout_handler = stdout_handler
        self._otlp_handler = otlp_handler
        self._timeout_s = shutdown_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.shutdown)

    @property
    def tracer_provider(self) -> trace.TracerProvider:
        """The SDK tracer provider (a no-op one when telemetry is disabled)."""
        return self._pipeline.tracer_provider if self._pipeline else trace.NoOpTracerProvider()

    @property
    def meter_provider(self) -> metrics.MeterProvider:
        """The SDK meter provider (a no-op one when telemetry is disabled)."""
        return self._pipeline.meter_provider if self._pipeline else metrics.NoOpMeterProvider()

    @property
    def logger_provider(self) -> _logs.LoggerProvider:
        """The SDK logger provider (a no-op one when telemetry is disabled)."""
        return self._pipeline.logger_provider if self._pipeline else _logs.NoOpLoggerProvider()

    @property
    def metrics_port(self) -> int | None:
        """The port `/metrics` is bound to; None when telemetry is disabled."""
        return self._pipeline.metrics_server.port if self._pipeline else None

    def force_flush(self, timeout_s: float | None = None) -> bool:
        """Exports what is buffered now; False when a provider reports failure or `timeout_s`
        (default: the shutdown timeout) passes first. Failed exports are not reported here:
        they show in `inferwatch.telemetry.export.failures`."""
        if self._pipeline is None:
            return True
        return _run_bounded(self._pipeline.force_flush, timeout_s or self._timeout_s, "flush")

    def shutdown(self) -> None:
        """Flushes and shuts down every provider, stops `/metrics` and detaches the log
        handlers, within about `shutdown_timeout_s`. Later calls do nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        atexit.unregister(self.shutdown)
        if self._otlp_handler is not None:  # first: nothing may log into a closing provider
            remove_log_handlers([self._otlp_handler])
        if self._pipeline is not None:
            if not _run_bounded(self._pipeline.shutdown, self._timeout_s, "shutdown"):
                logger.warning(
                    "Telemetry shutdown overran %.1f s; dropping what is not exported yet",
                    self._timeout_s,
                )
                for exporter in self._pipeline.exporters:
                    exporter.shutdown()
            self._pipeline.metrics_server.stop()
        remove_log_handlers([self._stdout_handler])


def _run_bounded(work: Callable[[], bool], timeout_s: float, what: str) -> bool:
    """Runs `work` in a daemon thread: its result, or False if it raised or outlived the timeout.

    The SDK's own timeouts do not bound a batch processor's flush (each queued batch may take
    the full OTLP timeout), so the caller stops waiting instead.
    """
    outcome: list[bool] = []

    def run() -> None:
        try:
            outcome.append(work())
        except Exception:
            logger.exception("Telemetry %s failed", what)

    thread = threading.Thread(target=run, name=f"telemetry-{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(outcome) and outcome[0]
