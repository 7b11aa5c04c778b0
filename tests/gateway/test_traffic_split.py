"""Traffic split between versions: exact shares, visible in the header, spans and metrics."""

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from gateway.split import TrafficSplit
from tests.conftest import Serve, wait_until
from tests.gateway.conftest import StartGateway, client, infer_body
from tests.telemetry_capture import TelemetryCapture


def test_smooth_weighted_round_robin_interleaves_exact_shares() -> None:
    split = TrafficSplit({"digits": {"1": 2, "2": 1}, "canary": {"1": 90, "2": 10}})
    assert [split.choose("digits") for _ in range(6)] == ["1", "2", "1", "1", "2", "1"]
    assert Counter(split.choose("canary") for _ in range(100)) == {"1": 90, "2": 10}
    assert split.choose("unsplit") == ""


def test_a_90_10_canary(
    repository: Path,
    digits_version_dir: Path,
    serve: Serve,
    start_gateway: StartGateway,
    telemetry: TelemetryCapture,
) -> None:
    shutil.copytree(digits_version_dir, repository / "digits" / "2")
    gateway = start_gateway(
        [serve(repository).address], traffic_split={"digits": {"1": 90, "2": 10}}
    )
    before = {v: telemetry.total("inferwatch.gateway.routed", **{"model.version": v}) for v in "12"}
    body = infer_body(np.zeros((1, 64)))
    with client(gateway) as http:
        versions = [
            http.post("/v2/models/digits/infer", json=body).headers["x-model-version"]
            for _ in range(100)
        ]
        pinned = {
            http.post("/v2/models/digits/versions/2/infer", json=body).headers["x-model-version"]
            for _ in range(5)
        }
    assert Counter(versions) == {"1": 90, "2": 10}
    assert pinned == {"2"}
    routed = {
        v: telemetry.total("inferwatch.gateway.routed", **{"model.version": v}) - before[v]
        for v in "12"
    }
    assert routed == {"1": 90, "2": 15}

    def client_spans() -> Counter[object]:
        return Counter(
            (span.attributes or {}).get("model.version")
            for span in telemetry.finished_spans()
            if span.name == "inference.GRPCInferenceService/ModelInfer"
            and span.kind is SpanKind.CLIENT
        )

    wait_until(lambda: client_spans().total() == 105)
    assert client_spans() == {"1": 90, "2": 15}


@pytest.mark.parametrize(
    ("split", "error"),
    [
        (
            '{"digits": {"1": 90, "2": 0}}',
            "traffic_split.digits.2\n  Input should be greater than 0",
        ),
        ('{"digits": {"1": -5}}', "traffic_split.digits.1\n  Input should be greater than 0"),
        ('{"digits": {"1": "most"}}', "traffic_split.digits.1\n  Input should be a valid integer"),
        ('{"digits": {"v1": 1}}', "traffic_split.digits.v1.[key]\n  String should match pattern"),
        ('{"digits": {}}', "traffic_split.digits\n  Dictionary should have at least 1 item"),
    ],
)
def test_bad_weights_are_refused_at_startup(
    split: str, error: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_TRAFFIC_SPLIT", split)
    with pytest.raises(ValidationError) as raised:
        GatewaySettings()
    assert error in str(raised.value)


def test_the_split_is_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TRAFFIC_SPLIT", '{"digits": {"1": 90, "2": 10}}')
    assert GatewaySettings().traffic_split == {"digits": {"1": 90, "2": 10}}
