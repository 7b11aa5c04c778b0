"""Data and prediction drift of a served model against its training-time reference.

Transport-agnostic: numpy in, dataclasses and JSON out; no scipy at runtime.

    reference = build_reference(x_train, feature_names=..., labels=..., confidence=...)
    reference.save(version_dir / "drift_reference.json")
"""

from monitoring.drift.reference import (
    FeatureReference,
    LabelReference,
    Reference,
    build_reference,
)

REFERENCE_FILE = "drift_reference.json"
"""Conventional file name of a saved `Reference` inside a model version directory."""

__all__ = [
    "REFERENCE_FILE",
    "FeatureReference",
    "LabelReference",
    "Reference",
    "build_reference",
]
