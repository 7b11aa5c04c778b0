"""`python -m model_server` / `inferwatch-model-server`."""

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import uvloop
from pydantic import ValidationError

from model_server import __version__
from model_server.grpc.server import BindError
from model_server.server import ModelServer
from model_server.settings import ModelServerSettings
from otel import setup_telemetry

SERVICE_NAME = "inferwatch-model-server"

logger = logging.getLogger(__name__)

_LOOP_FACTORIES: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def _parse_args(argv: list[str] | None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        prog="python -m model_server",
        description="Serve PyTorch models over the Open Inference Protocol (gRPC). "
        "Every setting is also read from MODEL_SERVER_<NAME> environment variables.",
    )
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--grpc-port", type=int, help="gRPC port, 0 for any free port (default 8001)"
    )
    parser.add_argument("--model-repository", type=Path, help="model directory (default ./models)")
    parser.add_argument(
        "--tls-cert-file", type=Path, help="PEM certificate chain: serve TLS only (with the key)"
    )
    parser.add_argument("--tls-key-file", type=Path, help="PEM private key of --tls-cert-file")
    parser.add_argument(
        "--tls-client-ca-file",
        type=Path,
        help="PEM CA: clients must present a certificate it signed (mutual TLS)",
    )
    parser.add_argument(
        "--fault-injection",
        action="store_true",
        default=None,
        help="honour the inferwatch_fault_* request parameters (load tests only; default off)",
    )
    args = parser.parse_args(argv)
    return {key: value for key, value in vars(args).items() if value is not None}


async def _serve(settings: ModelServerSettings) -> None:
    server = ModelServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    await stop.wait()
    logger.info("signal received; draining for up to %.1f s", settings.shutdown_grace_s)
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    """Run until SIGTERM or SIGINT, then shut down gracefully (telemetry flushed); exit 0.
    Invalid settings (a TLS file that cannot be used included) or a gRPC address that cannot be
    bound: exit 2, naming the setting."""
    try:
        settings = ModelServerSettings(**_parse_args(argv))  # type: ignore[arg-type]
    except ValidationError as error:
        print(f"invalid model server settings: {error}", file=sys.stderr)
        return 2
    telemetry = setup_telemetry(settings, service_name=SERVICE_NAME, service_version=__version__)
    try:
        with asyncio.Runner(loop_factory=_LOOP_FACTORIES[settings.event_loop]) as runner:
            runner.run(_serve(settings))
    except BindError as error:
        print(f"cannot start the model server: {error}", file=sys.stderr)
        return 2
    finally:
        telemetry.shutdown()
    return 0
