"""The result of one drift evaluation, and its JSON summary.

Every test reports its statistic, the critical value it is compared with (which depends on the
window's sample size) and a `score` = statistic / critical value: a score of 1 or more is a
drift verdict at the monitor's false-alarm budget. Values that cannot be computed (an empty
window) are NaN here and ``null`` in `to_dict`.
"""

import json
import math
from dataclasses import dataclass, fields
from typing import Any, Literal

Status = Literal["ok", "drift", "insufficient_data"]


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, tuple | list):
        return [_clean(v) for v in value]
    return value


def _as_dict(obj: Any) -> dict[str, Any]:
    return {f.name: _clean(getattr(obj, f.name)) for f in fields(obj)}


@dataclass(frozen=True)
class FeatureDrift:
    """One input feature: binned two-sample statistics against the reference."""

    name: str
    samples: int
    """Finite values of this feature in the window."""
    missing: int
    """Non-finite values of this feature in the window (not counted in `samples`)."""
    mean: float
    """The feature's mean in the window."""
    reference_mean: float
    ks: float
    """Kolmogorov-Smirnov statistic D (max CDF difference), in [0, 1]."""
    ks_critical: float
    ks_pvalue: float
    psi: float
    """Population stability index over reference-quantile bins."""
    psi_critical: float
    """PSI's critical value at this sample size (NaN when the feature has one PSI bin)."""
    wasserstein: float
    """Wasserstein-1 distance divided by the reference's spread (std)."""
    score: float
    """max(ks / ks_critical, psi / psi_critical); >= 1 is drift."""
    status: Status

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _as_dict(self)


@dataclass(frozen=True)
class PredictionDrift:
    """Predicted labels against the reference label distribution."""

    samples: int
    invalid: int
    """Labels outside 0..len(names)-1 (not counted in `samples`)."""
    js_distance: float
    """Jensen-Shannon distance (base 2), in [0, 1]."""
    chi2: float
    """Pearson χ² statistic of homogeneity (window vs reference counts)."""
    chi2_df: int
    chi2_pvalue: float
    chi2_critical: float
    score: float
    """chi2 / chi2_critical; >= 1 is drift."""
    status: Status
    names: tuple[str, ...]
    distribution: tuple[float, ...]
    """Share of each label in the window (NaN when empty)."""
    reference_distribution: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _as_dict(self)


@dataclass(frozen=True)
class ConfidenceDrift:
    """The top-class probability's distribution against the reference."""

    samples: int
    missing: int
    mean: float
    reference_mean: float
    mean_shift: float
    """mean - reference_mean (negative: the model became less sure)."""
    ks: float
    ks_critical: float
    ks_pvalue: float
    wasserstein: float
    """Wasserstein-1 distance in probability units (not normalised)."""
    score: float
    """ks / ks_critical; >= 1 is drift."""
    status: Status

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _as_dict(self)


@dataclass(frozen=True)
class WindowInfo:
    """What the evaluated window held."""

    rows: int
    buckets: int
    oldest_age_s: float
    """Seconds since the oldest counted update (NaN when empty)."""
    newest_age_s: float
    """Seconds since the newest counted update (NaN when empty)."""
    max_rows: int | None
    max_seconds: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return _as_dict(self)


@dataclass(frozen=True)
class DriftReport:
    """One evaluation of a model version's window against its reference."""

    model: str
    version: str
    evaluated_at: float
    """Unix time of the evaluation."""
    status: Status
    """drift if any test says so; insufficient_data if no test had `min_samples`; else ok."""
    score: float
    """Overall drift score: the largest test score (statistic / critical value) of all tests
    with enough data; >= 1 means drift. NaN when no test had enough data."""
    drifted_features: int
    features: tuple[FeatureDrift, ...]
    prediction: PredictionDrift | None
    confidence: ConfidenceDrift | None
    window: WindowInfo
    false_alarm_rate: float
    """The family-wise budget: chance that a window from the reference distribution is called
    drifted (at most; the tests are conservative)."""
    tests: int
    """Tests the budget is split over (Bonferroni): each runs at false_alarm_rate / tests."""
    min_samples: int

    @property
    def drifted(self) -> bool:
        """True when the verdict is drift."""
        return self.status == "drift"

    @property
    def drifted_share(self) -> float:
        """Share of monitored features called drifted (NaN with no features)."""
        return self.drifted_features / len(self.features) if self.features else math.nan

    def top_features(self, k: int) -> tuple[FeatureDrift, ...]:
        """The k features with the highest score (features with no score last)."""

        def key(f: FeatureDrift) -> float:
            return f.score if math.isfinite(f.score) else -math.inf

        return tuple(sorted(self.features, key=key, reverse=True)[:k])

    def to_dict(self) -> dict[str, Any]:
        """The JSON summary of this model version."""
        return {
            "model": self.model,
            "version": self.version,
            "evaluated_at": self.evaluated_at,
            "status": self.status,
            "score": _clean(self.score),
            "drifted_features": self.drifted_features,
            "monitored_features": len(self.features),
            "drifted_share": _clean(self.drifted_share),
            "false_alarm_rate": self.false_alarm_rate,
            "tests": self.tests,
            "min_samples": self.min_samples,
            "window": self.window.to_dict(),
            "prediction": None if self.prediction is None else self.prediction.to_dict(),
            "confidence": None if self.confidence is None else self.confidence.to_dict(),
            "features": [f.to_dict() for f in self.features],
        }

    def to_json(self) -> str:
        """`to_dict` as JSON (strict: no NaN)."""
        return json.dumps(self.to_dict(), allow_nan=False)
