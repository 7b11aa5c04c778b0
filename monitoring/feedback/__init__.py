"""Ground truth: delayed true labels joined to kept predictions, and live quality from them.

Transport-agnostic: plain Python and numpy, no gRPC, HTTP or OpenTelemetry.

    store = PredictionStore(max_predictions=100_000, max_age_s=3600)
    window = QualityWindow(labels, window_s=3600)
    # per request, when its outputs are back:
    store.record(response_id, ("digits", "1"), classes, confidences, rows, now, context)
    window.predicted(rows, now)
    # when labels arrive, per call (one outcome per item, never a failed batch):
    outcomes = join_labels(store, {("digits", "1"): window}, ("digits", ""), items, now)
    # periodically:
    store.sweep(now)
    report = window.evaluate(now)  # accuracy, macro_f1, recall, labelled_share

How it works and the API around it: docs/feedback.md.
"""

from monitoring.feedback.ids import ResponseIds
from monitoring.feedback.join import (
    MAX_ITEMS,
    FeedbackItem,
    FeedbackResult,
    ItemOutcome,
    Joined,
    join_labels,
)
from monitoring.feedback.quality import QualityReport
from monitoring.feedback.store import (
    NO_PREDICTION,
    ModelKey,
    Prediction,
    PredictionStore,
    Removal,
)
from monitoring.feedback.window import QualityWindow

__all__ = [
    "MAX_ITEMS",
    "NO_PREDICTION",
    "FeedbackItem",
    "FeedbackResult",
    "ItemOutcome",
    "Joined",
    "ModelKey",
    "Prediction",
    "PredictionStore",
    "QualityReport",
    "QualityWindow",
    "Removal",
    "ResponseIds",
    "join_labels",
]
