"""Model quality from true labels (docs/feedback.md): accuracy, macro F1 and recall per version,
with the sample size, labelled share and label delay that say how far to trust them."""

from monitoring.alerts.rules import ACCURACY_FLOOR, MIN_WINDOW_LABELS
from monitoring.dashboards.model import Panel, Query, Row
from monitoring.dashboards.promql import MODELS, quantile, rate

_VERSION = "model_name, model_version"
_LEGEND = "{{model_name}} v{{model_version}}"
_LABELS = f"sum by ({_VERSION}) (inferwatch_feedback_window_labels{{{MODELS}}})"
_WINDOW = "over the true labels that arrived in the quality window (default 1 h)"

GROUND_TRUTH = Row(
    "Ground truth: accuracy per version",
    (
        Panel(
            "Accuracy per version",
            (
                Query(
                    f"sum by ({_VERSION}) (inferwatch_feedback_accuracy_ratio{{{MODELS}}}"
                    f" * inferwatch_feedback_window_labels{{{MODELS}}}) / {_LABELS}",
                    _LEGEND,
                ),
            ),
            unit="percentunit",
            description=f"Share of correct predictions {_WINDOW}, pooled over model servers; "
            "a canary and its stable version are two lines. The accuracy alert fires below "
            f"{ACCURACY_FLOOR:g} with at least {MIN_WINDOW_LABELS} labels.",
        ),
        Panel(
            "Macro F1 per version",
            (
                Query(
                    f"avg by ({_VERSION}) (inferwatch_feedback_macro_f1_ratio{{{MODELS}}})",
                    _LEGEND,
                ),
            ),
            unit="percentunit",
            description=f"Mean F1 over the classes seen {_WINDOW} (mean over model servers); "
            "falls before accuracy when a rare class goes wrong.",
        ),
        Panel(
            "Labels in the window (sample size)",
            (Query(_LABELS, _LEGEND),),
            description=f"True labels behind accuracy and F1; the alert needs {MIN_WINDOW_LABELS}.",
        ),
        Panel(
            "Labelled share",
            (
                Query(
                    f"avg by ({_VERSION}) (inferwatch_feedback_labelled_ratio{{{MODELS}}})", _LEGEND
                ),
            ),
            unit="percentunit",
            description="Share of the window's predictions that have received a true label so far.",
        ),
        Panel(
            "Label delay p50 / p95",
            (
                Query(
                    quantile(0.5, "inferwatch_feedback_label_delay_seconds", _VERSION),
                    f"p50 {_LEGEND}",
                ),
                Query(
                    quantile(0.95, "inferwatch_feedback_label_delay_seconds", _VERSION),
                    f"p95 {_LEGEND}",
                ),
            ),
            unit="s",
            description="Seconds from a prediction to its true label.",
        ),
        Panel(
            "Feedback items per second by result",
            (
                Query(
                    rate("inferwatch_feedback_items_total", "model_name, result"),
                    "{{model_name}} {{result}}",
                ),
            ),
            description="Anything but ok means labels that do not count: unknown or expired ids, "
            "labels outside the label set, duplicates.",
        ),
        Panel(
            "Recall per class",
            (
                Query(
                    f"min by ({_VERSION}, class) (inferwatch_feedback_recall_ratio{{{MODELS}}})",
                    "{{model_name}} v{{model_version}} class {{class}}",
                ),
            ),
            unit="percentunit",
            description=f"Per true class, the share predicted right {_WINDOW}; "
            "which classes a falling accuracy comes from.",
            width=24,
        ),
    ),
)
