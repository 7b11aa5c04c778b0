"""Helpers for the telemetry tests: scraping `/metrics`, free ports, a blackholed endpoint."""

import socket
import threading
import urllib.request
from collections.abc import Callable

from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
from prometheus_client.samples import Sample

from otel import Telemetry

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0"

MakeTelemetry = Callable[..., Telemetry]
"""The `make_telemetry` fixture: settings overrides and extra processors/readers as keywords."""


def scrape(port: int, *, openmetrics: bool = False, path: str = "/metrics") -> tuple[str, str]:
    """(Content-Type, body) of a GET on our metrics endpoint."""
    headers = {"Accept": OPENMETRICS_ACCEPT} if openmetrics else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.headers["Content-Type"], response.read().decode()


def parse_openmetrics(body: str) -> list[Metric]:
    """Metric families of an OpenMetrics body; raises ValueError where the format is broken."""
    parse = openmetrics_parser.text_string_to_metric_families  # untyped in prometheus_client
    return list(parse(body))  # type: ignore[no-untyped-call]


def samples(port: int, *, openmetrics: bool = False) -> list[Sample]:
    """Every sample of a scrape, parsed by prometheus_client (which validates the format)."""
    _, body = scrape(port, openmetrics=openmetrics)
    families = parse_openmetrics(body) if openmetrics else parse_prometheus(body)
    return [sample for family in families for sample in family.samples]


def sample_value(port: int, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels` (0 when none)."""
    return sum(
        sample.value
        for sample in samples(port)
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def free_port() -> int:
    """A loopback port nothing listens on (for a refused endpoint or a child process)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Blackhole:
    """A TCP endpoint that accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """Value for OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(connection)

    def stop(self) -> None:
        """Closes the listener (waking the accept loop) and every connection."""
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._thread.join()
        for connection in self._connections:
            connection.close()
