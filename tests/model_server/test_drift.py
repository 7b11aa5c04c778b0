"""Live drift monitoring in the model server: the window, the report RPC and the gauges."""

import json
import logging
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest

from model_server import digits
from model_server.model_config import ModelConfig, TensorSpec
from model_server.proto import monitoring_pb2 as mon_pb
from model_server.proto import monitoring_pb2_grpc as mon_grpc
from monitoring.drift import REFERENCE_FILE
from tests.conftest import Serve, ServerThread
from tests.model_server.protocol import pixels_request, raw_request
from tests.model_server.test_models import probe_config, write_probe
from tests.telemetry_capture import TelemetryCapture

DIGITS = {"model.name": "digits", "model.version": "1"}


def _drift(server: ServerThread, name: str = "digits") -> dict[str, object]:
    assert server.channel is not None
    stub = mon_grpc.ModelMonitoringStub(server.channel)
    report: dict[str, object] = json.loads(
        stub.ModelDrift(mon_pb.ModelDriftRequest(name=name)).report_json
    )
    return report


def _send(server: ServerThread, pixels: np.ndarray) -> None:
    for start in range(0, len(pixels), 32):
        server.stub.ModelInfer(pixels_request(pixels[start : start + 32]))


def test_same_distribution_is_ok_and_inverted_pixels_are_drift(
    repository: Path, serve: Serve, telemetry: TelemetryCapture
) -> None:
    server = serve(repository)
    test_pixels = digits.load_split().x_test
    assert _drift(server)["status"] == "insufficient_data"

    _send(server, test_pixels[:300])
    calm = _drift(server)
    assert calm["status"] == "ok"
    assert calm["window"]["rows"] == 300  # type: ignore[index]
    assert telemetry.total("inferwatch.drift.detected", **DIGITS) == 0

    _send(server, 16.0 - test_pixels[:300])
    drifted = _drift(server)
    assert drifted["status"] == "drift"
    assert drifted["drifted_features"] > 0  # type: ignore[operator]
    assert telemetry.total("inferwatch.drift.detected", **DIGITS) == 1
    assert telemetry.total("inferwatch.drift.score", **DIGITS) >= 1
    # The digits window keeps at least its last HELD_OUT_ROWS rows (less than one bucket more):
    # the 300 inverted ones and some of the calm ones before them.
    rows = drifted["window"]["rows"]  # type: ignore[index]
    assert digits.HELD_OUT_ROWS <= rows < 600
    assert telemetry.total("inferwatch.drift.window.samples", **DIGITS) == rows
    features = {
        (p.attributes or {}).get("feature")
        for p in telemetry.points("inferwatch.drift.feature.score")
    }
    assert features <= {f"pixel_{i}" for i in range(64)}


def test_replaying_the_held_out_split_is_never_called_drift(repository: Path, serve: Serve) -> None:
    """What `make run` and `inferwatch-load` send: the same 360 test rows over and over."""
    server = serve(repository)
    test_pixels = digits.load_split().x_test
    assert len(test_pixels) == digits.HELD_OUT_ROWS
    sent = 0
    for _ in range(3):
        for start in range(0, len(test_pixels), 40):
            _send(server, test_pixels[start : start + 40])
            sent += 40
            if sent >= digits.HELD_OUT_ROWS:
                report = _drift(server)
                assert report["status"] == "ok", (sent, report["score"])


def test_a_broken_reference_costs_drift_monitoring_not_the_model(
    repository: Path, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    (repository / "digits" / "1" / REFERENCE_FILE).write_text("{not json", encoding="utf-8")
    server = serve(repository)
    server.stub.ModelInfer(pixels_request(np.zeros((1, 64))))
    with pytest.raises(grpc.RpcError) as missing:
        _drift(server)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no drift reference" in (missing.value.details() or "")
    assert any("drift reference" in r.getMessage() for r in caplog.records)


def test_drift_of_an_unknown_model_is_not_found(repository: Path, serve: Serve) -> None:
    server = serve(repository)
    with pytest.raises(grpc.RpcError) as unknown:
        _drift(server, "nope")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("shape", [(-1, 4), (-1, 8, 8)], ids=["4 features", "rank 3"])
def test_a_reference_that_does_not_fit_the_input_costs_drift_monitoring_not_the_model(
    repository: Path,
    serve: Serve,
    digits_version_dir: Path,
    shape: tuple[int, ...],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The digits reference (input `pixels`, 64 features) beside a model whose input `pixels`
    is not [-1, 64]: the monitor would refuse every batch."""
    probe = probe_config()
    config = ModelConfig(
        inputs=[TensorSpec(name="pixels", datatype="FP32", shape=shape)],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=shape), *probe.outputs[1:]],
        dynamic_batching=probe.dynamic_batching,
    )
    version_dir = repository / "probe" / "1"
    write_probe(version_dir, config)
    shutil.copy(digits_version_dir / REFERENCE_FILE, version_dir)

    server = serve(repository)
    for _ in range(3):
        server.stub.ModelInfer(
            raw_request("probe", {"pixels": np.ones((2, *shape[1:]), dtype=np.float32)})
        )

    warned = [r.getMessage() for r in caplog.records if "drift not monitored" in r.getMessage()]
    assert warned == [
        f"model probe:1: drift reference describes 64 features, input 'pixels' has shape "
        f"{list(shape)} (not [-1, 64]); drift not monitored"
    ]
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.WARNING] == []
    with pytest.raises(grpc.RpcError) as missing:
        _drift(server, "probe")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
