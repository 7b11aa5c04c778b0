"""The drift reference: binned training-set distributions saved beside the model.

`build_reference` turns the training inputs (and, optionally, the model's predicted labels and
confidences) into a `Reference`: per feature, bin edges fixed once from the training data and
the training counts in each bin. Live windows are counted into the same bins, so every
statistic compares two histograms on one grid. `Reference.to_json` / `from_json` store it
(`drift_reference.json` by convention); floats are written with full precision, so a round
trip is exact.

Bins of one feature, edges e_0 < ... < e_{E-1}: bin 0 is (-inf, e_0), bin b is [e_{b-1}, e_b),
bin E is [e_{E-1}, +inf). The training data lie inside [e_0, e_{E-1}), so the two outer bins
hold only live values outside the training range.

* discrete features (at most `bins` distinct training values): exact-value bins. Each
  support value v gets the bin [v, v + w) (w tiny: 1e-9 of the range, at most a quarter of
  the smallest gap) and each gap between neighbours a bin of its own. Integer features whose
  range fits in `bins` get every integer of the range as a support value, so an unseen
  integer inside the range still has its own bin. The reference has no mass inside a bin
  except at its left edge, so the binned KS statistic is the exact one for any live data
  (values within w above a support value count as that value).
* continuous features: edges at the training quantiles of levels 0, 1/bins, ..., (bins-1)/bins
  (deduplicated) and just above the maximum. The binned KS statistic is then within the
  largest training mass strictly inside one bin (about 1/bins) of the exact one.

See ``monitoring/drift/METHOD.md`` for the statistics computed on these bins.
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

FORMAT = "inferwatch.drift.reference"
FORMAT_VERSION = 1
DEFAULT_BINS = 100

FeatureKind = Literal["discrete", "continuous"]


@dataclass(frozen=True)
class FeatureReference:
    """One numeric feature's training distribution on its fixed bins."""

    name: str
    kind: FeatureKind
    edges: tuple[float, ...]
    """E strictly increasing bin edges; E + 1 bins (see the module docstring)."""
    counts: tuple[int, ...]
    """Training rows per bin (E + 1 values; the two outer bins are 0)."""
    positions: tuple[float, ...]
    """Where each bin's mass sits for the Wasserstein distance: the training mean inside the
    bin, or its midpoint when empty; the outer bins hold e_0 and e_{E-1} (replaced at
    evaluation by the live mean beyond the edge)."""
    mean: float
    std: float
    min: float
    max: float
    scale: float
    """Divides the Wasserstein distance: the training std, or for a constant feature the
    median std of the reference's non-constant features (1.0 if none)."""

    def __post_init__(self) -> None:
        edges = np.asarray(self.edges, dtype=np.float64)
        if edges.size < 2 or not np.all(np.isfinite(edges)) or np.any(np.diff(edges) <= 0):
            raise ValueError(f"feature {self.name!r}: edges must be >= 2 finite, increasing")
        if len(self.counts) != edges.size + 1 or len(self.positions) != edges.size + 1:
            raise ValueError(f"feature {self.name!r}: counts and positions need len(edges) + 1")
        if any(c < 0 for c in self.counts) or sum(self.counts) <= 0:
            raise ValueError(f"feature {self.name!r}: counts must be >= 0 with a positive sum")
        if not (self.scale > 0 and math.isfinite(self.scale)):
            raise ValueError(f"feature {self.name!r}: scale must be positive and finite")

    @property
    def rows(self) -> int:
        """Training rows counted."""
        return int(sum(self.counts))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "kind": self.kind,
            "edges": list(self.edges),
            "counts": list(self.counts),
            "positions": list(self.positions),
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "scale": self.scale,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "FeatureReference":
        """Inverse of `to_dict`; raises ValueError on a malformed entry."""
        try:
            kind = raw["kind"]
            if kind not in ("discrete", "continuous"):
                raise ValueError(f"unknown kind {kind!r}")
            return cls(
                name=str(raw["name"]),
                kind=kind,
                edges=tuple(float(v) for v in raw["edges"]),
                counts=tuple(int(v) for v in raw["counts"]),
                positions=tuple(float(v) for v in raw["positions"]),
                mean=float(raw["mean"]),
                std=float(raw["std"]),
                min=float(raw["min"]),
                max=float(raw["max"]),
                scale=float(raw["scale"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed feature reference: {exc!r}") from None


@dataclass(frozen=True)
class LabelReference:
    """Predicted-label counts on the reference data, class index i named names[i]."""

    names: tuple[str, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.names) < 2 or len(self.names) != len(self.counts):
            raise ValueError("labels: need >= 2 names and one count per name")
        if any(c < 0 for c in self.counts) or sum(self.counts) <= 0:
            raise ValueError("labels: counts must be >= 0 with a positive sum")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"names": list(self.names), "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "LabelReference":
        """Inverse of `to_dict`."""
        try:
            return cls(
                names=tuple(str(v) for v in raw["names"]),
                counts=tuple(int(v) for v in raw["counts"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed label reference: {exc!r}") from None


@dataclass(frozen=True)
class Reference:
    """Everything the drift monitor compares live traffic against."""

    features: tuple[FeatureReference, ...]
    labels: LabelReference | None = None
    confidence: FeatureReference | None = None
    input: str | None = None
    """Name of the model input the features are the columns of (informational)."""

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be unique")
        if not self.features and self.labels is None and self.confidence is None:
            raise ValueError("an empty reference: no features, labels or confidence")

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Feature names in column order."""
        return tuple(f.name for f in self.features)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the format of `to_json`)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "input": self.input,
            "features": [f.to_dict() for f in self.features],
            "labels": None if self.labels is None else self.labels.to_dict(),
            "confidence": None if self.confidence is None else self.confidence.to_dict(),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> "Reference":
        """Inverse of `to_dict`; raises ValueError on another format or a malformed file."""
        if raw.get("format") != FORMAT or raw.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"not a drift reference (format {raw.get('format')!r} version "
                f"{raw.get('format_version')!r}; expected {FORMAT!r} {FORMAT_VERSION})"
            )
        labels = raw.get("labels")
        confidence = raw.get("confidence")
        input_name = raw.get("input")
        return cls(
            features=tuple(FeatureReference.from_dict(f) for f in raw.get("features", [])),
            labels=None if labels is None else LabelReference.from_dict(labels),
            confidence=None if confidence is None else FeatureReference.from_dict(confidence),
            input=None if input_name is None else str(input_name),
        )

    def to_json(self) -> str:
        """Compact JSON; floats keep full precision."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "Reference":
        """Parse `to_json` output."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"drift reference is not JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError("drift reference must be a JSON object")
        return cls.from_dict(raw)

    def save(self, path: Path) -> None:
        """Write `to_json` to a file."""
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> "Reference":
        """Read a file written by `save`."""
        return cls.from_json(path.read_text(encoding="utf-8"))


def exact_value_edges(support: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Edges giving each sorted support value v the bin [v, v + w), the gaps bins of their own.

    w is 1e-9 of the support's magnitude, at most a quarter of the smallest gap.
    """
    lo, hi = float(support[0]), float(support[-1])
    width = 1e-9 * max(hi - lo, abs(lo), abs(hi), 1.0)
    if support.size > 1:
        width = min(width, 0.25 * float(np.min(np.diff(support))))
    # Neighbours a few ulps apart could collide: keep the edges strictly increasing.
    edges: npt.NDArray[np.float64] = np.unique(np.concatenate((support, support + width)))
    return edges


def label_feature(labels: LabelReference) -> FeatureReference:
    """The predicted label as a discrete feature over the class indices 0..K-1: class k is
    bin 2k + 1; every other bin (negative, between or beyond the classes) means invalid."""
    k = len(labels.names)
    edges = exact_value_edges(np.arange(k, dtype=np.float64))
    counts = [0] * (2 * k + 1)
    counts[1::2] = labels.counts
    mids = np.concatenate(([edges[0]], 0.5 * (edges[:-1] + edges[1:]), [edges[-1]]))
    mids[1::2] = np.arange(k)
    shares = np.asarray(labels.counts, dtype=np.float64)
    values = np.arange(k, dtype=np.float64)
    mean = float(np.sum(shares * values) / shares.sum())
    std = float(np.sqrt(np.sum(shares * (values - mean) ** 2) / shares.sum()))
    return FeatureReference(
        name="label",
        kind="discrete",
        edges=tuple(float(e) for e in edges),
        counts=tuple(counts),
        positions=tuple(float(p) for p in mids),
        mean=mean,
        std=std,
        min=0.0,
        max=float(k - 1),
        scale=1.0,
    )


def _feature(
    name: str, values: npt.NDArray[np.float64], bins: int, scale: float
) -> FeatureReference:
    """Fix one feature's bins from its reference values and count the values into them."""
    if values.size == 0:
        raise ValueError(f"feature {name!r}: no reference values")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"feature {name!r}: reference values must be finite")
    distinct = np.unique(values)
    lo, hi = float(distinct[0]), float(distinct[-1])
    kind: FeatureKind
    if distinct.size <= bins:
        kind = "discrete"
        integer = bool(np.all(distinct == np.round(distinct)))
        support = np.arange(lo, hi + 1.0) if integer and hi - lo + 1 <= bins else distinct
        edges = exact_value_edges(support)
    else:
        kind = "continuous"
        levels = np.arange(bins, dtype=np.float64) / bins
        cuts = np.unique(np.quantile(values, levels, method="inverted_cdf"))
        top = hi + max(1e-6 * (hi - lo), 4.0 * float(np.spacing(hi)))
        edges = np.concatenate((cuts, [top]))
    index = np.searchsorted(edges, values, side="right")
    counts = np.bincount(index, minlength=edges.size + 1)
    sums = np.bincount(index, weights=values, minlength=edges.size + 1)
    mids_all = np.concatenate(([edges[0]], 0.5 * (edges[:-1] + edges[1:]), [edges[-1]]))
    with np.errstate(divide="ignore", invalid="ignore"):
        positions = np.where(counts > 0, sums / np.maximum(counts, 1), mids_all)
    positions[0], positions[-1] = edges[0], edges[-1]
    std = float(values.std())
    return FeatureReference(
        name=name,
        kind=kind,
        edges=tuple(float(e) for e in edges),
        counts=tuple(int(c) for c in counts),
        positions=tuple(float(p) for p in positions),
        mean=float(values.mean()),
        std=std,
        min=lo,
        max=hi,
        scale=std if std > 0 else scale,
    )


def build_reference(
    features: npt.ArrayLike | None,
    *,
    feature_names: Sequence[str] | None = None,
    labels: npt.ArrayLike | None = None,
    label_names: Sequence[str] | None = None,
    confidence: npt.ArrayLike | None = None,
    input_name: str | None = None,
    bins: int = DEFAULT_BINS,
) -> Reference:
    """Build the drift reference from reference data (normally the training split).

    features: [rows, n_features] numeric inputs, finite (or None for prediction-only
    monitoring). feature_names: one per column (default ``feature_<i>``). labels: predicted
    class indices [rows'] of the model on reference data; label_names: class names, one per
    class index (default ``"0"``..``str(max)``). confidence: the model's top-class probability
    [rows'']. The three may come from different rows (e.g. predictions on held-out data).
    bins: the most bins per feature (quantile bins for continuous features, the largest
    support of a discrete one).
    """
    if bins < 2:
        raise ValueError(f"bins must be >= 2, got {bins}")
    feature_refs: list[FeatureReference] = []
    if features is not None:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"features must be a non-empty [rows, features] array, got {x.shape}")
        names = (
            list(feature_names)
            if feature_names is not None
            else [f"feature_{i}" for i in range(x.shape[1])]
        )
        if len(names) != x.shape[1]:
            raise ValueError(f"{len(names)} feature names for {x.shape[1]} columns")
        stds = x.std(axis=0)
        positive = stds[stds > 0]
        fallback = float(np.median(positive)) if positive.size else 1.0
        feature_refs = [_feature(names[i], x[:, i], bins, fallback) for i in range(x.shape[1])]
    label_ref = None
    if labels is not None:
        y = np.asarray(labels).ravel()
        if y.size == 0 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
            raise ValueError("labels must be non-negative integer class indices")
        n_classes = len(label_names) if label_names is not None else int(y.max()) + 1
        if y.max() >= n_classes:
            raise ValueError(f"label {int(y.max())} beyond the {n_classes} label names")
        names_l = (
            list(label_names) if label_names is not None else [str(i) for i in range(n_classes)]
        )
        counts = np.bincount(y, minlength=n_classes)
        label_ref = LabelReference(tuple(names_l), tuple(int(c) for c in counts))
    confidence_ref = None
    if confidence is not None:
        c = np.asarray(confidence, dtype=np.float64).ravel()
        spread = float(c.std())
        confidence_ref = _feature("confidence", c, bins, spread if spread > 0 else 1.0)
    return Reference(
        features=tuple(feature_refs),
        labels=label_ref,
        confidence=confidence_ref,
        input=input_name,
    )
