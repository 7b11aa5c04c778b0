"""Data and prediction drift of a served model against its training-time reference.

Transport-agnostic: numpy in, dataclasses and JSON out; no scipy at runtime.

    reference = build_reference(x_train, feature_names=..., labels=..., confidence=...)
    reference.save(version_dir / "drift_reference.json")

    monitor = DriftMonitor(Reference.load(path), DriftConfig(), model="digits", version="1")
    monitor.update(batch, probabilities=probabilities)   # per batch, inference thread
    report = monitor.evaluate()                          # periodically, another thread
    report.to_dict()

The method is described in ``monitoring/drift/METHOD.md``.
"""

from monitoring.drift.monitor import DriftConfig, DriftMonitor, select_features
from monitoring.drift.reference import (
    FeatureReference,
    LabelReference,
    Reference,
    build_reference,
)
from monitoring.drift.report import (
    ConfidenceDrift,
    DriftReport,
    FeatureDrift,
    PredictionDrift,
    Status,
    WindowInfo,
)

REFERENCE_FILE = "drift_reference.json"
"""Conventional file name of a saved `Reference` inside a model version directory."""

__all__ = [
    "REFERENCE_FILE",
    "ConfidenceDrift",
    "DriftConfig",
    "DriftMonitor",
    "DriftReport",
    "FeatureDrift",
    "FeatureReference",
    "LabelReference",
    "PredictionDrift",
    "Reference",
    "Status",
    "WindowInfo",
    "build_reference",
    "select_features",
]
