"""inferwatch-load's delayed true labels reach a real model server (the Feedback RPC) and a real
gateway (its feedback route), and the server's live accuracy follows them."""

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import HistogramDataPoint

from loadgen.cli import main
from loadgen.feedback import Labeller, LabelPlan
from loadgen.transports import GrpcTransport
from tests.conftest import Serve
from tests.gateway.servers import GatewayThread, gateway_settings
from tests.telemetry_capture import TelemetryCapture

DIGITS = {"model.name": "digits", "model.version": "1"}


def _load(tmp_path: Path, target: str, *argv: str) -> dict[str, Any]:
    out = tmp_path / "summary.json"
    assert main(["--target", target, *argv, "--json", str(out)]) == 0
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def _delays_up_to_1s(telemetry: TelemetryCapture) -> int:
    """Label delays observed at most 1 s (the first bucket), cumulative over the session."""
    return sum(
        int(point.bucket_counts[0])
        for point in telemetry.points("inferwatch.feedback.label.delay")
        if isinstance(point, HistogramDataPoint)
        and (point.attributes or {}).get("model.name") == "digits"
    )


def test_grpc_labels_arrive_late_and_set_the_live_accuracy(
    repository: Path,
    serve: Serve,
    tmp_path: Path,
    telemetry: TelemetryCapture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server = serve(repository)
    delays_before = telemetry.total("inferwatch.feedback.label.delay", **DIGITS)
    early_before = _delays_up_to_1s(telemetry)

    result = _load(
        tmp_path,
        f"grpc://{server.address}",
        *("--concurrency", "4", "--requests", "200"),
        *("--label-ratio", "0.5", "--label-delay", "1"),
    )

    labels = result["labels"]
    assert 70 <= labels["sent"] <= 130  # half of 200, drawn
    assert labels["ok"] == labels["sent"]
    assert (labels["errors"], labels["unsent"]) == (0, 0)
    assert labels["results"] == {"ok": labels["sent"]}
    assert labels["accuracy"] > 0.9
    assert telemetry.total("inferwatch.feedback.window.labels", **DIGITS) == labels["ok"]
    assert telemetry.total("inferwatch.feedback.accuracy", **DIGITS) == pytest.approx(
        labels["accuracy"], abs=1e-12
    )
    delays = telemetry.total("inferwatch.feedback.label.delay", **DIGITS) - delays_before
    assert delays == labels["ok"]
    assert _delays_up_to_1s(telemetry) == early_before  # none came before its delay
    assert "true labels sent (50% of answers, 1 s later)" in capsys.readouterr().out


def test_wrong_labels_through_the_gateway_sink_the_accuracy(
    repository: Path, serve: Serve, tmp_path: Path, telemetry: TelemetryCapture
) -> None:
    server = serve(repository)
    gateway = GatewayThread(gateway_settings([server.address]))
    try:
        result = _load(
            tmp_path,
            gateway.url,
            *("--rate", "100", "--requests", "150"),
            *("--label-ratio", "1", "--label-delay", "0.2", "--wrong-labels"),
        )
    finally:
        gateway.stop()

    labels = result["labels"]
    assert result["accuracy"] > 0.9  # the model is right; the labels say otherwise
    assert labels["wrong"] is True
    assert labels["results"] == {"ok": 150}
    assert labels["accuracy"] < 0.1
    assert telemetry.total("inferwatch.feedback.window.labels", **DIGITS) == 150
    accuracy = telemetry.total("inferwatch.feedback.accuracy", **DIGITS)
    assert accuracy == pytest.approx(labels["accuracy"], abs=1e-12)


def test_refused_labels_are_counted_by_result(repository: Path, serve: Serve) -> None:
    server = serve(repository)

    async def label() -> Labeller:
        transport = GrpcTransport(server.address, timeout_s=5)
        labeller = Labeller(LabelPlan(ratio=1, delay_s=0), transport, "digits")
        task = asyncio.create_task(labeller.run())
        labeller.offer("never-made", 3)
        labeller.finish()
        await task
        await transport.close()
        return labeller

    labeller = asyncio.run(label())

    summary = labeller.summary()
    assert summary["results"] == {"unknown_id": 1}
    assert (summary["sent"], summary["ok"], summary["errors"], summary["accuracy"]) == (
        1, 0, 1, None,
    )  # fmt: skip


def test_stop_drops_labels_not_yet_due(repository: Path, serve: Serve) -> None:
    server = serve(repository)

    async def label() -> Labeller:
        transport = GrpcTransport(server.address, timeout_s=5)
        labeller = Labeller(LabelPlan(ratio=1, delay_s=60), transport, "digits")
        task = asyncio.create_task(labeller.run())
        for index in range(5):
            labeller.offer(f"id-{index}", index)
        labeller.stop()
        await task
        await transport.close()
        return labeller

    labeller = asyncio.run(label())

    assert (labeller.sent, labeller.unsent) == (0, 5)
