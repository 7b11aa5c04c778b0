"""The drift monitor of one model version: a cheap `update` per batch, `evaluate` off the path.

    monitor = DriftMonitor(reference, DriftConfig(window_rows=1000, window_seconds=300))
    monitor.update(pixels, probabilities=probs)    # inference thread, once per batch
    report = monitor.evaluate()                    # periodic task, another thread
    report.to_dict()                               # the JSON summary

`update` puts everything monitored in a batch (the selected feature columns, the confidence,
the label) into one matrix and bins it with one `searchsorted` (each column's values are
mapped into their own disjoint slice of one sorted edge array) and two `bincount` calls
(counts and value sums per bin), then adds that one vector into the window's open bucket under
a lock. `evaluate` sums the window's buckets and computes every statistic for all features at
once on ``[features, bins]`` arrays. The math is in ``monitoring/drift/METHOD.md``.
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from monitoring.drift import stats
from monitoring.drift.reference import FeatureReference, Reference, label_feature
from monitoring.drift.report import (
    ConfidenceDrift,
    DriftReport,
    FeatureDrift,
    PredictionDrift,
    Status,
    WindowInfo,
)
from monitoring.drift.window import SlidingWindow

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class DriftConfig:
    """Per-model drift settings."""

    window_rows: int | None = 1000
    """The window's row bound (None: by time only)."""
    window_seconds: float | None = 300.0
    """The window's age bound (None: by count only)."""
    buckets: int = 10
    """Sub-windows: expiry granularity is 1/buckets of each bound."""
    false_alarm_rate: float = 0.01
    """Family-wise chance that a window drawn from the reference distribution is called
    drifted; split evenly over all tests (Bonferroni)."""
    min_samples: int = 100
    """A test with fewer samples in the window says insufficient_data, never drift."""
    features: tuple[str, ...] | None = None
    """Monitor exactly these features (reference names), in this order."""
    top_k: int | None = None
    """Without `features`: monitor the k features with the largest reference std."""
    psi_bins: int = 10
    """PSI bins per feature (groups of reference bins of about 1/psi_bins mass each)."""
    psi_test: bool = False
    """Also call drift on PSI above its critical value. Off by default: PSI's χ² null is
    anti-conservative in the far tail for small windows (see METHOD.md), so it is reported
    with its critical value but does not vote unless asked."""

    def __post_init__(self) -> None:
        if self.window_rows is None and self.window_seconds is None:
            raise ValueError("set window_rows, window_seconds or both")
        if not 0.0 < self.false_alarm_rate < 1.0:
            raise ValueError("false_alarm_rate must be in (0, 1)")
        if self.min_samples < 1:
            raise ValueError("min_samples must be >= 1")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError("top_k must be >= 1")
        if self.psi_bins < 2:
            raise ValueError("psi_bins must be >= 2")


def select_features(reference: Reference, config: DriftConfig) -> list[int]:
    """Column indices of the monitored features: `features`, else `top_k` by std, else all."""
    names = reference.feature_names
    if config.features is not None:
        unknown = [n for n in config.features if n not in names]
        if unknown:
            raise ValueError(f"features not in the reference: {unknown}")
        if len(set(config.features)) != len(config.features):
            raise ValueError("features lists a name twice")
        return [names.index(n) for n in config.features]
    if config.top_k is not None and config.top_k < len(names):
        stds = np.array([f.std for f in reference.features])
        order = np.argsort(-stds, kind="stable")  # ties keep column order
        return sorted(int(i) for i in order[: config.top_k])
    return list(range(len(names)))


def _psi_groups(counts: Sequence[int], n_groups: int) -> list[int]:
    """Group index of each reference bin: consecutive bins merged until a group holds 1/n_groups
    of the reference mass; a short trailing group (< half of that) joins the previous one."""
    target = float(sum(counts)) / n_groups
    groups: list[int] = []
    group, mass = 0, 0.0
    for c in counts:
        groups.append(group)
        mass += c
        if mass >= target:
            group, mass = group + 1, 0.0
    if groups[-1] == group and group > 0 and mass < 0.5 * target:
        groups = [g if g < group else group - 1 for g in groups]
    return groups


class _Layout:
    """Every monitored column's bins in one flat vector, counted by one vectorised pass.

    Columns: the monitored features, then the confidence, then the label (as a discrete
    feature over the class indices). The vector is [bin counts | bin value sums | missing],
    the bins of all columns concatenated (column c's bins start at `bin_start[c]`).
    """

    def __init__(self, refs: Sequence[FeatureReference]) -> None:
        c = len(refs)
        self.columns = c
        n_bins = np.array([len(r.counts) for r in refs], dtype=np.int64)
        self.bin_start = np.concatenate(([0], np.cumsum(n_bins)))
        self.bins = int(self.bin_start[-1])
        self.size = 2 * self.bins + c
        edge_lo = np.array([r.edges[0] for r in refs])
        edge_hi = np.array([r.edges[-1] for r in refs])
        # Column c's values map to z = (clip(x) - clip_lo) * inv + c, which puts its edges in
        # [c + 1/6, c + 1/3]: one sorted array holds every column's edges, and a value's
        # position in it, plus c, is its flat bin index (column c has one more bin than edges).
        span = edge_hi - edge_lo
        self.clip_lo = edge_lo - span
        self.clip_hi = edge_hi + span
        self.inv = 0.5 / (self.clip_hi - self.clip_lo)
        self.shift = np.arange(c, dtype=np.float64)
        self.column_index = np.arange(c, dtype=np.intp)
        self.edges = np.concatenate(
            [
                (np.asarray(r.edges) - self.clip_lo[j]) * self.inv[j] + self.shift[j]
                for j, r in enumerate(refs)
            ]
        )

    def count(self, x: FloatArray) -> FloatArray:
        """[rows, columns] values -> the window vector's part. NaN (or inf) is missing."""
        finite = np.isfinite(x)
        all_finite = bool(finite.all())
        if not all_finite:
            x = np.where(finite, x, 0.0)
        z = np.maximum(x, self.clip_lo)
        np.minimum(z, self.clip_hi, out=z)
        z -= self.clip_lo
        z *= self.inv
        z += self.shift
        index = np.searchsorted(self.edges, z, side="right")
        index += self.column_index
        trash = self.bins
        if not all_finite:
            index[~finite] = trash
        flat = index.ravel()
        out = np.empty(self.size, dtype=np.float64)
        out[:trash] = np.bincount(flat, minlength=trash + 1)[:trash]
        out[trash : 2 * trash] = np.bincount(flat, weights=x.ravel(), minlength=trash + 1)[:trash]
        if all_finite:
            out[2 * trash :] = 0.0
        else:
            out[2 * trash :] = x.shape[0] - finite.sum(axis=0)
        return out


class _Group:
    """Statistics of consecutive layout columns [first, last), padded to [columns, bins]."""

    def __init__(
        self, layout: _Layout, refs: Sequence[FeatureReference], first: int, psi_bins: int
    ) -> None:
        f = len(refs)
        self.n = f
        n_bins = [len(r.counts) for r in refs]
        self.width = width = max(n_bins)
        start, stop = int(layout.bin_start[first]), int(layout.bin_start[first + f])
        self.counts_slice = slice(start, stop)
        self.sums_slice = slice(layout.bins + start, layout.bins + stop)
        self.missing_slice = slice(2 * layout.bins + first, 2 * layout.bins + first + f)
        # Where each flat bin goes in the padded [f, width] array.
        self.pad_index = np.concatenate([j * width + np.arange(b) for j, b in enumerate(n_bins)])
        self.reference = np.zeros((f, width))
        self.positions = np.zeros((f, width))
        self.scale = np.array([r.scale for r in refs])
        psi_group_lists = []
        for j, r in enumerate(refs):
            b = n_bins[j]
            self.reference[j, :b] = r.counts
            self.positions[j, :b] = r.positions
            self.positions[j, b:] = r.positions[-1]
            psi_group_lists.append(_psi_groups(r.counts, psi_bins))
        self.ref_rows = self.reference.sum(axis=1)
        # PSI groups: bin (j, b) -> flat group j * n_groups + g; padding joins the last group.
        self.n_groups = n_groups = max(max(g) + 1 for g in psi_group_lists)
        group_index = np.zeros((f, width), dtype=np.int64)
        self.groups = np.array([max(g) + 1 for g in psi_group_lists], dtype=np.int64)
        for j, g in enumerate(psi_group_lists):
            group_index[j, : len(g)] = g
            group_index[j, len(g) :] = g[-1]
            group_index[j] += j * n_groups
        self.group_index = group_index.ravel()
        self.group_valid = np.arange(n_groups)[None, :] < self.groups[:, None]
        self.reference_groups = self._group(self.reference)
        self._psi_df = self.groups - 1

    def _group(self, counts: FloatArray) -> FloatArray:
        grouped = np.bincount(
            self.group_index, weights=counts.ravel(), minlength=self.n * self.n_groups
        )
        result: FloatArray = np.asarray(grouped, dtype=np.float64).reshape(self.n, self.n_groups)
        return result

    def _padded(self, flat: FloatArray) -> FloatArray:
        padded = np.zeros(self.n * self.width)
        padded[self.pad_index] = flat
        return padded.reshape(self.n, self.width)

    def _chi2_critical(self, alpha: float) -> FloatArray:
        return np.array(
            [stats.chi2_isf(alpha, int(d)) if d >= 1 else math.nan for d in self._psi_df]
        )

    def statistics(self, totals: FloatArray, alpha: float) -> dict[str, FloatArray]:
        """Every per-column statistic from the summed window vector."""
        f, width = self.n, self.width
        counts = self._padded(totals[self.counts_slice])
        sums = self._padded(totals[self.sums_slice])
        missing = totals[self.missing_slice]
        reference = self.reference
        n = counts.sum(axis=1)
        m = self.ref_rows
        empty = n <= 0
        ks = stats.binned_ks(counts, reference)
        scale = stats.ks_scale(n, m)
        with np.errstate(divide="ignore", invalid="ignore"):
            ks_critical = stats.kolmogorov_isf(alpha) / scale
        ks_pvalue = stats.kolmogorov_sf(scale * ks)
        current_groups = self._group(counts)
        psi = stats.psi(current_groups, self.reference_groups, self.group_valid)
        with np.errstate(divide="ignore", invalid="ignore"):
            psi_critical = self._chi2_critical(alpha) * (1.0 / n + 1.0 / m)
        # Wasserstein: in each bin the reference's mass sits at its training mean, the live
        # mass at the live mean; the two atoms of a bin are ordered, bins are ordered, so the
        # interleaved atoms are sorted and W1 is one cumulative sum.
        ref_at = self.positions
        with np.errstate(divide="ignore", invalid="ignore"):
            live_at = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), ref_at)
        ref_first = np.where(ref_at <= live_at, reference, 0.0)
        live_first = np.where(live_at <= ref_at, counts, 0.0)
        atoms = np.stack((np.minimum(ref_at, live_at), np.maximum(ref_at, live_at)), axis=2)
        ref_mass = np.stack((ref_first, reference - ref_first), axis=2)
        live_mass = np.stack((live_first, counts - live_first), axis=2)
        w1 = stats.wasserstein(
            live_mass.reshape(f, 2 * width),
            ref_mass.reshape(f, 2 * width),
            atoms.reshape(f, 2 * width),
        )
        nan = np.full(f, math.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = sums.sum(axis=1) / n
        return {
            "samples": n,
            "missing": missing,
            "mean": np.where(empty, nan, mean),
            "ks": np.where(empty, nan, ks),
            "ks_critical": np.where(empty, nan, ks_critical),
            "ks_pvalue": np.where(empty, nan, ks_pvalue),
            "psi": np.where(empty, nan, psi),
            "psi_critical": np.where(empty, nan, psi_critical),
            "wasserstein": np.where(empty, nan, w1 / self.scale),
            "wasserstein_raw": np.where(empty, nan, w1),
        }


def _status(samples: int, score: float, min_samples: int) -> Status:
    if samples < min_samples or not math.isfinite(score):
        return "insufficient_data"
    return "drift" if score >= 1.0 else "ok"


class DriftMonitor:
    """Drift of one model version's inputs and predictions against its reference.

    Thread-safe: `update` (inference thread) and `evaluate` (a periodic task) may run
    concurrently; they share only the sliding window, whose lock each holds for
    microseconds. Binning happens before the lock, statistics after it.
    """

    def __init__(
        self,
        reference: Reference,
        config: DriftConfig | None = None,
        *,
        model: str = "",
        version: str = "",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.reference = reference
        self.config = config = config if config is not None else DriftConfig()
        self.model = model
        self.version = version
        self._clock = clock
        self._wall_clock = wall_clock
        self._n_inputs = len(reference.features)
        self._columns = select_features(reference, config)
        self._feature_names = tuple(reference.features[i].name for i in self._columns)
        self._feature_means = [reference.features[i].mean for i in self._columns]
        # All columns in order need no fancy indexing on the hot path.
        self._take: npt.NDArray[np.intp] | None = (
            None
            if self._columns == list(range(self._n_inputs))
            else np.array(self._columns, dtype=np.intp)
        )
        refs = [reference.features[i] for i in self._columns]
        n_features = len(refs)
        self._confidence_column = self._label_column = -1
        if reference.confidence is not None:
            self._confidence_column = len(refs)
            refs.append(reference.confidence)
        labels = reference.labels
        self._n_labels = len(labels.names) if labels is not None else 0
        if labels is not None:
            self._label_column = len(refs)
            refs.append(label_feature(labels))
        self._layout = _Layout(refs) if refs else None
        self._features = (
            _Group(self._layout, refs[:n_features], 0, config.psi_bins)
            if self._layout is not None and n_features
            else None
        )
        self._confidence = (
            _Group(
                self._layout,
                [refs[self._confidence_column]],
                self._confidence_column,
                config.psi_bins,
            )
            if self._layout is not None and self._confidence_column >= 0
            else None
        )
        self._label_reference = (
            np.asarray(labels.counts, dtype=np.float64) if labels is not None else None
        )
        self._window = SlidingWindow(
            self._layout.size if self._layout is not None else 0,
            max_rows=config.window_rows,
            max_seconds=config.window_seconds,
            buckets=config.buckets,
            clock=clock,
        )
        n_psi = int((self._features.groups >= 2).sum()) if self._features and config.psi_test else 0
        self.tests = (
            n_features
            + n_psi
            + (1 if self._label_reference is not None else 0)
            + (1 if self._confidence is not None else 0)
        )
        self.test_alpha = config.false_alarm_rate / max(self.tests, 1)
        if reference.confidence is not None:
            self._confidence_reference_mean = reference.confidence.mean
        else:
            self._confidence_reference_mean = math.nan

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The monitored features (bounded by `top_k` / `features`), in report order."""
        return self._feature_names

    def update(
        self,
        features: npt.ArrayLike | None = None,
        *,
        labels: npt.ArrayLike | None = None,
        confidence: npt.ArrayLike | None = None,
        probabilities: npt.ArrayLike | None = None,
    ) -> None:
        """Count one batch into the window.

        features: [rows, n_reference_features], the model input whose columns the reference
        describes. labels: predicted class indices [rows]; confidence: top-class probability
        [rows]; or probabilities [rows, classes] instead of both (argmax and max). Parts the
        reference has no distribution for are ignored. Non-finite values are counted as
        missing, labels outside the reference's classes as invalid (so is the label of a
        probabilities row holding a non-finite value, whose confidence is missing); neither
        raises. Raises ValueError only on mismatched shapes or non-integer labels.
        """
        if probabilities is not None:
            if labels is not None or confidence is not None:
                raise ValueError("pass probabilities, or labels and confidence, not both")
            p = np.asarray(probabilities)
            if p.ndim != 2:
                raise ValueError(f"probabilities must be [rows, classes], got {p.shape}")
            predicted = p.argmax(axis=1)
            top = p.max(axis=1)
            if not np.isfinite(p).all():
                unusable = ~np.isfinite(p).all(axis=1)
                predicted[unusable] = -1
                top = np.where(unusable, np.nan, top)
            labels, confidence = predicted, top
        rows = -1
        x = y = c = None
        if features is not None and self._n_inputs:
            x = np.asarray(features)
            if x.ndim != 2 or x.shape[1] != self._n_inputs:
                raise ValueError(f"features must be [rows, {self._n_inputs}], got {list(x.shape)}")
            rows = x.shape[0]
        if labels is not None:
            y = np.asarray(labels).ravel()
            if y.size and not np.issubdtype(y.dtype, np.integer):
                raise ValueError(f"labels must be integers, got {y.dtype}")
            if rows >= 0 and y.size != rows:
                raise ValueError(f"labels has {y.size} rows, the features {rows}")
            rows = y.size
        if confidence is not None:
            c = np.asarray(confidence).ravel()
            if rows >= 0 and c.size != rows:
                raise ValueError(f"confidence has {c.size} rows, the batch {rows}")
            rows = c.size
        layout = self._layout
        if rows <= 0 or layout is None:
            return
        # One [rows, columns] matrix of everything monitored, so one pass bins it all.
        block = np.empty((rows, layout.columns))
        absent: list[int] = []
        n_features = self._features.n if self._features is not None else 0
        if n_features:
            if x is None:
                block[:, :n_features] = layout.clip_lo[:n_features]
                absent.extend(range(n_features))
            elif self._take is None:
                block[:, :n_features] = x
            else:
                block[:, :n_features] = x[:, self._take]
        for column, values in ((self._confidence_column, c), (self._label_column, y)):
            if column >= 0:
                if values is None:
                    block[:, column] = layout.clip_lo[column]
                    absent.append(column)
                else:
                    block[:, column] = values
        delta = layout.count(block)
        if absent:
            # Parts not sent were filled with a value below the column's first edge, which
            # lands alone in the column's bin 0: take those counts back out.
            first_bins = layout.bin_start[absent]
            delta[first_bins] = 0.0
            delta[layout.bins + first_bins] = 0.0
        self._window.add(rows, delta)

    def reset(self) -> None:
        """Empty the window (e.g. after the reference or the model changed)."""
        self._window.clear()

    def evaluate(self) -> DriftReport:
        """Compare the window with the reference; cheap enough for a periodic task."""
        snap = self._window.snapshot()
        now = self._clock()
        totals = snap.totals
        alpha = self.test_alpha
        min_samples = self.config.min_samples
        features: tuple[FeatureDrift, ...] = ()
        if self._features is not None:
            features = self._feature_results(totals, alpha)
        confidence = None
        if self._confidence is not None:
            confidence = self._confidence_result(totals, alpha)
        prediction = None
        if self._label_reference is not None:
            prediction = self._prediction_result(totals, alpha)
        scores = [f.score for f in features if f.status != "insufficient_data"]
        for part in (prediction, confidence):
            if part is not None and part.status != "insufficient_data":
                scores.append(part.score)
        statuses = [f.status for f in features]
        statuses += [p.status for p in (prediction, confidence) if p is not None]
        status: Status
        if "drift" in statuses:
            status = "drift"
        elif "ok" in statuses:
            status = "ok"
        else:
            status = "insufficient_data"
        return DriftReport(
            model=self.model,
            version=self.version,
            evaluated_at=self._wall_clock(),
            status=status,
            score=max(scores) if scores else math.nan,
            drifted_features=sum(1 for f in features if f.status == "drift"),
            features=features,
            prediction=prediction,
            confidence=confidence,
            window=WindowInfo(
                rows=snap.rows,
                buckets=snap.buckets,
                oldest_age_s=now - snap.oldest if snap.oldest is not None else math.nan,
                newest_age_s=now - snap.newest if snap.newest is not None else math.nan,
                max_rows=self.config.window_rows,
                max_seconds=self.config.window_seconds,
            ),
            false_alarm_rate=self.config.false_alarm_rate,
            tests=self.tests,
            min_samples=min_samples,
        )

    def _feature_results(self, totals: FloatArray, alpha: float) -> tuple[FeatureDrift, ...]:
        assert self._features is not None
        s = self._features.statistics(totals, alpha)
        with np.errstate(divide="ignore", invalid="ignore"):
            ks_score = s["ks"] / s["ks_critical"]
            psi_score = s["psi"] / s["psi_critical"]
        if self.config.psi_test:
            score = np.where(np.isnan(psi_score), ks_score, np.fmax(ks_score, psi_score))
        else:
            score = ks_score
        min_samples = self.config.min_samples
        columns = {k: v.tolist() for k, v in s.items()}
        score_list = score.tolist()
        result = []
        for j, name in enumerate(self._feature_names):
            samples = int(columns["samples"][j])
            result.append(
                FeatureDrift(
                    name=name,
                    samples=samples,
                    missing=int(columns["missing"][j]),
                    mean=columns["mean"][j],
                    reference_mean=self._feature_means[j],
                    ks=columns["ks"][j],
                    ks_critical=columns["ks_critical"][j],
                    ks_pvalue=columns["ks_pvalue"][j],
                    psi=columns["psi"][j],
                    psi_critical=columns["psi_critical"][j],
                    wasserstein=columns["wasserstein"][j],
                    score=score_list[j],
                    status=_status(samples, score_list[j], min_samples),
                )
            )
        return tuple(result)

    def _confidence_result(self, totals: FloatArray, alpha: float) -> ConfidenceDrift:
        assert self._confidence is not None
        s = self._confidence.statistics(totals, alpha)
        samples = int(s["samples"][0])
        mean = float(s["mean"][0])
        ks, critical = float(s["ks"][0]), float(s["ks_critical"][0])
        score = ks / critical if samples else math.nan
        return ConfidenceDrift(
            samples=samples,
            missing=int(s["missing"][0]),
            mean=float(mean),
            reference_mean=self._confidence_reference_mean,
            mean_shift=float(mean - self._confidence_reference_mean),
            ks=ks,
            ks_critical=critical,
            ks_pvalue=float(s["ks_pvalue"][0]),
            wasserstein=float(s["wasserstein_raw"][0]),
            score=score,
            status=_status(samples, score, self.config.min_samples),
        )

    def _prediction_result(self, totals: FloatArray, alpha: float) -> PredictionDrift:
        assert self._label_reference is not None
        assert self.reference.labels is not None
        assert self._layout is not None
        start = int(self._layout.bin_start[self._label_column])
        column = totals[start : int(self._layout.bin_start[self._label_column + 1])]
        counts = column[1::2]  # class k is bin 2k + 1
        reference = self._label_reference
        samples = int(counts.sum())
        statistic, df = stats.chi2_homogeneity(counts, reference)
        if df >= 1 and samples:
            pvalue = stats.chi2_sf(statistic, df)
            critical = stats.chi2_isf(alpha, df)
            score = statistic / critical
        else:
            pvalue = critical = score = math.nan
        nan_dist = (math.nan,) * self._n_labels
        return PredictionDrift(
            samples=samples,
            invalid=int(column.sum() - samples),
            js_distance=stats.js_distance(reference, counts) if samples else math.nan,
            chi2=statistic,
            chi2_df=df,
            chi2_pvalue=pvalue,
            chi2_critical=critical,
            score=score,
            status=_status(samples, score, self.config.min_samples),
            names=self.reference.labels.names,
            distribution=tuple((counts / samples).tolist()) if samples else nan_dist,
            reference_distribution=tuple((reference / reference.sum()).tolist()),
        )
