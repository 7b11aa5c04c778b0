"""Fixtures of the gateway tests: a clean GATEWAY_* environment and real gateways."""

import os
from collections.abc import Callable, Iterator, Sequence

import httpx
import numpy as np
import pytest

from tests.gateway.servers import GatewayThread, gateway_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GATEWAY_* variable leaks in from the outside."""
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)


StartGateway = Callable[..., GatewayThread]


@pytest.fixture
def start_gateway() -> Iterator[StartGateway]:
    """`start_gateway(backends, **setting_overrides)` serves a gateway; all stop at teardown."""
    started: list[GatewayThread] = []

    def start(backends: Sequence[str], **overrides: object) -> GatewayThread:
        gateway = GatewayThread(gateway_settings(backends, **overrides))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def client(gateway: GatewayThread) -> httpx.Client:
    """An HTTP client for this gateway."""
    return httpx.Client(base_url=gateway.url, timeout=30)


def infer_body(pixels: np.ndarray, **fields: object) -> dict[str, object]:
    """A digits inference request in REST JSON."""
    return {
        "inputs": [
            {
                "name": "pixels",
                "shape": list(pixels.shape),
                "datatype": "FP32",
                "data": pixels.astype(np.float32).ravel().tolist(),
            }
        ],
        **fields,
    }
