"""Model quality: accuracy from true labels, drift per feature, confidence and the predicted
label distribution, per model version."""

from monitoring.dashboards.ground_truth import GROUND_TRUTH
from monitoring.dashboards.model import Dashboard, Panel, Query, Row
from monitoring.dashboards.promql import MODELS, mean, rate, share

_VERSION = "model_name, model_version"
_LEGEND = "{{model_name}} v{{model_version}}"
_UNSURE = MODELS + ', le="0.5"'

CONFIDENCE = Row(
    "Confidence and predictions",
    (
        Panel(
            "Mean confidence",
            (Query(mean("inferwatch_model_confidence", _VERSION), _LEGEND),),
            unit="percentunit",
            description="Mean of the highest class probability per prediction.",
        ),
        Panel(
            "Unsure answers (confidence at most 0.5)",
            (
                Query(
                    f"{rate('inferwatch_model_confidence_bucket', _VERSION, _UNSURE)}"
                    f" / {rate('inferwatch_model_confidence_count', _VERSION)}",
                    _LEGEND,
                ),
            ),
            unit="percentunit",
        ),
        Panel(
            "Confidence distribution",
            (Query(rate("inferwatch_model_confidence_bucket", "le"), "{{le}}"),),
            kind="heatmap",
        ),
        Panel(
            "Predicted label distribution",
            (
                Query(
                    share("inferwatch_model_predictions_total", "model_name, label", "model_name"),
                    "{{model_name}} {{label}}",
                ),
            ),
            unit="percentunit",
            description="Share of predictions per label; compare with the training mix.",
        ),
    ),
)

DRIFT = Row(
    "Drift",
    (
        Panel(
            "Drift score (1 or more is drift)",
            (Query(f"inferwatch_drift_score{{{MODELS}}}", _LEGEND),),
        ),
        Panel(
            "Drift verdict and drifted features",
            (
                Query(f"inferwatch_drift_detected{{{MODELS}}}", f"drifted {_LEGEND}"),
                Query(f"inferwatch_drift_features_drifted{{{MODELS}}}", f"features {_LEGEND}"),
            ),
        ),
        Panel(
            "Drift per feature (top 10)",
            (
                Query(
                    f"topk(10, inferwatch_drift_feature_score{{{MODELS}}})",
                    "{{model_name}} {{feature}}",
                ),
            ),
            description="KS statistic / its critical value per input feature.",
        ),
        Panel(
            "Per-feature statistics",
            (Query(f"inferwatch_drift_feature_statistic{{{MODELS}}}"),),
            kind="table",
            description="KS, PSI and normalised Wasserstein per feature.",
            width=24,
        ),
        Panel(
            "Prediction drift",
            (
                Query(f"inferwatch_drift_prediction_score{{{MODELS}}}", f"score {_LEGEND}"),
                Query(
                    f"inferwatch_drift_prediction_statistic{{{MODELS}}}",
                    "{{statistic}} " + _LEGEND,
                ),
            ),
        ),
        Panel(
            "Confidence shift",
            (
                Query(
                    f"inferwatch_drift_confidence_statistic{{{MODELS}}}",
                    "{{statistic}} " + _LEGEND,
                ),
            ),
        ),
        Panel(
            "Rows in the drift window",
            (Query(f"inferwatch_drift_window_samples{{{MODELS}}}", _LEGEND),),
        ),
    ),
)

DASHBOARD = Dashboard(
    uid="inferwatch-model-quality",
    title="InferWatch / Model quality",
    description="Accuracy and F1 from true labels next to drift against the training data, "
    "confidence and predicted labels, per model version.",
    rows=(GROUND_TRUTH, DRIFT, CONFIDENCE),
)
