"""`python -m gateway` / `inferwatch-gateway`."""

import argparse
import logging
import signal
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from gateway import __version__
from gateway.app import create_app
from gateway.settings import GatewaySettings
from model_server.heap import freeze_long_lived
from otel import setup_telemetry

SERVICE_NAME = "inferwatch-gateway"

logger = logging.getLogger(__name__)


def _parse_args(argv: list[str] | None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="Serve the Open Inference Protocol over REST in front of model servers. "
        "Every setting is also read from GATEWAY_<NAME> environment variables.",
    )
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="HTTP port, 0 for any free port (default 8000)")
    parser.add_argument(
        "--backend",
        action="append",
        dest="backends",
        metavar="HOST:PORT",
        help="a model server; repeat for several (default 127.0.0.1:8001)",
    )
    parser.add_argument(
        "--backend-tls-ca-file",
        type=Path,
        help="PEM CA of the model servers' certificates: reach them over TLS",
    )
    parser.add_argument(
        "--backend-tls-cert-file",
        type=Path,
        help="PEM certificate chain presented to the model servers (mutual TLS)",
    )
    parser.add_argument(
        "--backend-tls-key-file", type=Path, help="PEM private key of --backend-tls-cert-file"
    )
    parser.add_argument(
        "--backend-tls-server-name",
        help="name the model servers' certificates are checked against (default: their host)",
    )
    args = parser.parse_args(argv)
    return {key: value for key, value in vars(args).items() if value is not None}


def server_config(settings: GatewaySettings) -> uvicorn.Config:
    """uvicorn serving the gateway app of these settings."""
    return uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,  # the telemetry bootstrap's JSON handler formats every record
        log_level="warning",  # uvicorn's own start/stop chatter; ours is logged by the app
        access_log=False,  # see GatewaySettings.access_log: logged inside the request's span
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_grace_s,
    )


def _serve(settings: GatewaySettings) -> None:
    config = server_config(settings)
    server = uvicorn.Server(config)
    sock = config.bind_socket()
    logger.info("gateway listening on http://%s:%d", settings.host, sock.getsockname()[1])
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with the
    # default handlers that would kill the process before the telemetry is flushed.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: None)
    freeze_long_lived()
    server.run(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM or SIGINT, then finish in-flight requests, flush telemetry, exit 0."""
    try:
        settings = GatewaySettings(**_parse_args(argv))  # type: ignore[arg-type]
    except ValidationError as error:
        print(f"invalid gateway settings: {error}", file=sys.stderr)
        return 2
    telemetry = setup_telemetry(settings, service_name=SERVICE_NAME, service_version=__version__)
    try:
        _serve(settings)
    finally:
        telemetry.shutdown()
    return 0
