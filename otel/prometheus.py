"""Prometheus pull endpoint: a metric reader rendered on each `GET /metrics`, served by a thread.

`Accept: application/openmetrics-text` gets OpenMetrics 1.0 with exemplars; anything else gets
the Prometheus text format 0.0.4.
"""

import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.sdk.metrics.export import MetricReader, MetricsData

from otel.exposition import OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, Exposition

logger = logging.getLogger(__name__)

_STOP_POLL_S = 0.1
"""How often the serving thread checks for `stop()`; bounds how long stopping takes."""


class PrometheusReader(MetricReader):
    """Pull reader (cumulative): each `scrape()` collects the SDK's metrics and renders them.

    `collect_data()` hands the same collection to another consumer (the OTLP export of
    `otel.metric_export`), so the SDK aggregates each measurement once for both.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._collect_lock = threading.Lock()
        self._exposition = Exposition()
        self._collected: MetricsData | None = None
        self._listeners: list[Callable[[MetricsData], None]] = []

    def on_collect(self, listener: Callable[[MetricsData], None]) -> None:
        """Calls `listener` with every collection from now on (in the collecting thread)."""
        self._listeners.append(listener)

    def scrape(self, *, openmetrics: bool) -> str:
        """Collects now and returns the text body."""
        self.collect_data()
        with self._lock:
            return self._exposition.render(openmetrics=openmetrics)

    def collect_data(self, timeout_millis: float = 10_000) -> MetricsData | None:
        """Collects now: the metrics (None when there are none yet); the scrape body follows."""
        with self._collect_lock:
            self._collected = None
            self.collect(timeout_millis=timeout_millis)
            return self._collected

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._collected = metrics_data
        with self._lock:
            self._exposition.update(metrics_data)
        for listener in self._listeners:
            listener(metrics_data)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        """Nothing to release; the HTTP server is stopped separately."""


class MetricsServer:
    """`GET /metrics` on `host:port` (0 = a free port, see `port`), in a daemon thread."""

    def __init__(self, reader: PrometheusReader, host: str, port: int) -> None:
        self._server = _Server((host, port), reader)
        self.port: int = self._server.server_address[1]
        """The bound port."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _STOP_POLL_S},
            name="metrics-http",
            daemon=True,
        )
        self._thread.start()
        logger.info("Serving Prometheus metrics on http://%s:%s/metrics", host, self.port)

    def stop(self) -> None:
        """Stops serving and closes the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def prefers_openmetrics(accept: str) -> bool:
    """Whether an Accept header ranks OpenMetrics at least as high as any other type (by q)."""
    openmetrics, other = 0.0, 0.0
    for media_range in accept.split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media_type.lower() == "application/openmetrics-text":
            openmetrics = max(openmetrics, quality)
        elif media_type:
            other = max(other, quality)
    return openmetrics > 0 and openmetrics >= other


class _Server(ThreadingHTTPServer):
    def __init__(self, address: tuple[str, int], reader: PrometheusReader) -> None:
        self.reader = reader
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/metrics":
            self.send_error(HTTPStatus.NOT_FOUND)
            return
        assert isinstance(self.server, _Server)
        openmetrics = prefers_openmetrics(self.headers.get("Accept", ""))
        try:
            body = self.server.reader.scrape(openmetrics=openmetrics).encode()
        except Exception:
            logger.exception("Rendering /metrics failed")
            self.send_error(HTTPStatus.INTERNAL_SERVER_ERROR)
            return
        self.send_response(HTTPStatus.OK)
        content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else PROMETHEUS_CONTENT_TYPE
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged: one line per scrape would drown the service's own logs."""
