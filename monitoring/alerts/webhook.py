"""`python -m monitoring.alerts.webhook`: the stack's webhook receiver for Alertmanager and Grafana.

Both send the same JSON shape (a group of alerts, each with status, labels and annotations);
every alert received is logged as one JSON line: `docker compose logs alert-webhook` shows what
would have paged. Standard library only (it runs in the service image).
"""

import argparse
import json
import logging
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024


class Notifications:
    """Alerts received so far, as (path, alert) pairs; waitable, thread-safe."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._alerts: list[tuple[str, dict[str, Any]]] = []

    def add(self, path: str, alerts: list[dict[str, Any]]) -> None:
        """Records the alerts of one notification."""
        with self._changed:
            self._alerts.extend((path, alert) for alert in alerts)
            self._changed.notify_all()

    def snapshot(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything received so far."""
        with self._changed:
            return list(self._alerts)

    def wait_for(
        self, condition: Callable[[list[tuple[str, dict[str, Any]]]], bool], timeout_s: float
    ) -> bool:
        """Blocks until `condition(snapshot)` is truthy; False after `timeout_s`."""
        with self._changed:
            return self._changed.wait_for(lambda: condition(list(self._alerts)), timeout_s)


class WebhookServer(ThreadingHTTPServer):
    """Accepts POSTed notifications on any path and logs each alert."""

    daemon_threads = True

    def __init__(self, host: str, port: int) -> None:
        super().__init__((host, port), _Handler)
        self.notifications = Notifications()


class _Handler(BaseHTTPRequestHandler):
    server: WebhookServer

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY_BYTES:
            self.send_error(HTTPStatus.BAD_REQUEST, "expected a JSON body")
            return
        try:
            alerts = json.loads(self.rfile.read(length))["alerts"]
        except (ValueError, KeyError, TypeError):
            self.send_error(HTTPStatus.BAD_REQUEST, "expected a JSON object with alerts")
            return
        for alert in alerts:
            logger.info("%s", json.dumps(_line(self.path, alert), sort_keys=True))
        self.server.notifications.add(self.path, alerts)
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Access lines are noise here; the alerts are logged above."""


def _line(path: str, alert: dict[str, Any]) -> dict[str, Any]:
    annotations = alert.get("annotations") or {}
    return {
        "from": path.strip("/") or "unknown",
        "status": alert.get("status"),
        "labels": alert.get("labels"),
        "summary": annotations.get("summary"),
        "runbook_url": annotations.get("runbook_url"),
        "logs_url": annotations.get("logs_url"),
        "traces_url": annotations.get("traces_url"),
    }


def main() -> None:
    """Serves until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=9099)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = WebhookServer(args.host, args.port)
    logger.info("alert webhook listening on %s:%d", args.host, server.server_address[1])
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
