"""Synthetic series for `promtool test rules`: per alert, one subject with the fault and one
without (near the threshold where that means something), sampled every minute.

`fault_at` is a time the faulty subject must be firing; `early_at` a time its condition already
holds but for less than the rule's `for`, so nothing may fire yet.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    """Input series and what must fire."""

    series: dict[str, str]
    """promtool `series` selector -> `values` expansion."""
    firing: dict[str, str]
    """Labels of the one alert expected at `fault_at` (severity added by the rule)."""
    fault_at: str
    early_at: str


def _model(name: str, **extra: str) -> str:
    labels = {"model_name": name, "model_version": "1", **extra}
    return "{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}"


def _accuracy(model: str, accuracy: str, labels: str, instance: str = "ms:9464") -> dict[str, str]:
    """A model server's quality window: its accuracy and label count (promtool expansions)."""
    selector = _model(model, instance=instance)
    return {
        "inferwatch_feedback_accuracy_ratio" + selector: accuracy,
        "inferwatch_feedback_window_labels" + selector: labels,
    }


def _bucket(model: str, le: str) -> str:
    return "inferwatch_server_request_duration_seconds_bucket" + _model(model, le=le)


SCENARIOS: dict[str, Scenario] = {
    "InferWatchHighLatency": Scenario(
        series={
            # slow: every call lands between 250 ms and 500 ms
            _bucket("slow", "0.1"): "0+0x20",
            _bucket("slow", "0.25"): "0+0x20",
            _bucket("slow", "0.5"): "0+10x20",
            _bucket("slow", "+Inf"): "0+10x20",
            # fast: 90% under 100 ms, the rest under 250 ms: p95 below the threshold
            _bucket("fast", "0.1"): "0+90x20",
            _bucket("fast", "0.25"): "0+100x20",
            _bucket("fast", "0.5"): "0+100x20",
            _bucket("fast", "+Inf"): "0+100x20",
        },
        firing={"model_name": "slow", "model_version": "1"},
        fault_at="10m",
        early_at="4m",
    ),
    "InferWatchHighErrorRatio": Scenario(
        series={
            "inferwatch_server_requests_total" + _model("failing", status="INTERNAL"): "0+10x20",
            "inferwatch_server_requests_total" + _model("failing", status="OK"): "0+10x20",
            # client mistakes are not server errors: 1 INTERNAL in 151 calls stays quiet
            "inferwatch_server_requests_total" + _model("digits", status="OK"): "0+100x20",
            "inferwatch_server_requests_total"
            + _model("digits", status="INVALID_ARGUMENT"): "0+50x20",
            "inferwatch_server_requests_total" + _model("digits", status="INTERNAL"): "0+1x20",
        },
        firing={"model_name": "failing", "model_version": "1"},
        fault_at="10m",
        early_at="4m",
    ),
    "InferWatchQueueRejections": Scenario(
        series={
            "inferwatch_server_requests_rejected_total"
            + _model("crowded", reason="queue_full"): "0+60x20",
            # one deadline miss a minute is below one every 10 s
            "inferwatch_server_requests_rejected_total"
            + _model("digits", reason="deadline"): "0+1x20",
        },
        firing={"model_name": "crowded", "model_version": "1", "reason": "queue_full"},
        fault_at="10m",
        early_at="4m",
    ),
    "InferWatchModelNotReady": Scenario(
        series={
            "inferwatch_model_ready"
            + _model("broken", job="inferwatch-model-server", instance="ms:9464"): "0x20",
            "inferwatch_model_ready"
            + _model("digits", job="inferwatch-model-server", instance="ms:9464"): "1x20",
            # not ready for one minute while loading: shorter than the hold
            "inferwatch_model_ready"
            + _model("loading", job="inferwatch-model-server", instance="ms:9464"): "0 0 1x18",
        },
        firing={
            "model_name": "broken",
            "model_version": "1",
            "job": "inferwatch-model-server",
            "instance": "ms:9464",
        },
        fault_at="5m",
        early_at="1m",
    ),
    "InferWatchDataDrift": Scenario(
        series={
            "inferwatch_drift_features_drifted" + _model("shifted"): "12x30",
            "inferwatch_drift_features_drifted" + _model("digits"): "0x30",
        },
        firing={"model_name": "shifted", "model_version": "1"},
        fault_at="20m",
        early_at="5m",
    ),
    "InferWatchPredictionDrift": Scenario(
        series={
            "inferwatch_drift_prediction_score" + _model("shifted"): "5x30",
            "inferwatch_drift_prediction_score" + _model("digits"): "0.9x30",
        },
        firing={"model_name": "shifted", "model_version": "1"},
        fault_at="20m",
        early_at="5m",
    ),
    "InferWatchLowConfidence": Scenario(
        series={
            "inferwatch_model_confidence_bucket" + _model("faded", le="0.5"): "0+50x40",
            "inferwatch_model_confidence_count" + _model("faded"): "0+100x40",
            # 15% unsure answers: below the 20% threshold
            "inferwatch_model_confidence_bucket" + _model("digits", le="0.5"): "0+15x40",
            "inferwatch_model_confidence_count" + _model("digits"): "0+100x40",
        },
        firing={"model_name": "faded", "model_version": "1"},
        fault_at="30m",
        early_at="5m",
    ),
    "InferWatchAccuracyBelowFloor": Scenario(
        series={
            # wrong: pooled over two model servers, (0.6 * 20 + 0.8 * 10) / 30 = 0.67, and 30
            # more labels a minute: 100 labels from minute 4, so firing from minute 14
            **_accuracy("wrong", "0.6x30", "0+20x30", instance="ms-1:9464"),
            **_accuracy("wrong", "0.8x30", "0+10x30", instance="ms-2:9464"),
            **_accuracy("digits", "0.97x30", "0+50x30"),
            # sparse: worse still, but 90 labels are too few to page on
            **_accuracy("sparse", "0.4x30", "90x30"),
            # pooled: 0.5 on 20 labels of one server, 0.97 on 400 of another: 0.95 overall
            **_accuracy("pooled", "0.5x30", "20x30", instance="ms-1:9464"),
            **_accuracy("pooled", "0.97x30", "400x30", instance="ms-2:9464"),
        },
        firing={"model_name": "wrong", "model_version": "1"},
        fault_at="16m",
        early_at="12m",
    ),
    "InferWatchTelemetryDrops": Scenario(
        series={
            'inferwatch_telemetry_dropped_total{job="inferwatch-gateway",instance="gw:9465",'
            'signal="traces",reason="queue_full"}': "0+30x20",
            'inferwatch_telemetry_dropped_total{job="inferwatch-model-server",instance="ms:9464",'
            'signal="traces",reason="queue_full"}': "0x20",
        },
        firing={"job": "inferwatch-gateway", "instance": "gw:9465", "signal": "traces"},
        fault_at="10m",
        early_at="4m",
    ),
    "InferWatchTargetDown": Scenario(
        series={
            'up{job="otel-collector",instance="otel-collector:8888"}': "0x20",
            'up{job="prometheus",instance="localhost:9090"}': "1x20",
        },
        firing={"job": "otel-collector", "instance": "otel-collector:8888"},
        fault_at="5m",
        early_at="1m",
    ),
}
