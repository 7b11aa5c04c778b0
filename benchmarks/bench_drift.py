"""Drift monitor cost: the per-batch update and the periodic evaluation, beside scipy and a naive
windowed implementation.

Run from the repository root:

    .venv/bin/python benchmarks/bench_drift.py [--repeats N] [--json PATH]

What is measured, all in this one process, single-threaded:

* update: `DriftMonitor.update` on digits batches (FP32 [rows, 64], rows 1/8/32/64), inputs
  only and inputs plus the model's probabilities [rows, 10]; reported per batch and per
  feature per row (target: at most 1 µs per feature per row, amortised).
* evaluate: `DriftMonitor.evaluate` on a full window of 1,000 rows, 64 features: the digits
  reference (discrete pixels, exact-value bins, up to 35 bins) and a continuous reference
  (64 standard-normal features, 101 quantile bins each). Target: at most 5 ms.
* scipy: `scipy.stats.ks_2samp(reference_column, window_column)` on the digits training
  split (1,437 rows) against a window of 1,000 rows, per feature and for all 64 (KS only).
  Target: evaluation at least 25x faster per feature.
* naive: the window kept as raw rows in a `deque(maxlen=1000)`; evaluation stacks the rows and
  recomputes, per feature, ks_2samp, PSI over the reference deciles (np.histogram) and
  scipy's wasserstein_distance, plus a chi-squared test on the labels.

Timings are the median of `--repeats` runs of a timed loop (each loop long enough to
dwarf the clock); the machine is shared, so the minimum is printed too.

`--calibration N` adds the false-alarm study behind the verdicts (see `calibration`).
"""

import argparse
import collections
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy
from scipy import stats as sps

from model_server import digits
from monitoring.drift import DriftConfig, DriftMonitor, Reference, build_reference

WINDOW = 1000
N_FEATURES = 64


def _time(fn: Callable[[], object], repeats: int, min_seconds: float = 0.2) -> tuple[float, float]:
    """(median, min) seconds per call of fn over `repeats` timed loops."""
    fn()
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - start >= min_seconds / 4 or loops >= 1 << 20:
            break
        loops *= 2
    per_call = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        per_call.append((time.perf_counter() - start) / loops)
    return statistics.median(per_call), min(per_call)


class NaiveWindow:
    """Raw rows in a bounded deque; every evaluation recomputes from scratch with scipy."""

    def __init__(self, reference_rows: np.ndarray, reference_labels: np.ndarray) -> None:
        self.reference_rows = reference_rows
        self.reference_labels = np.bincount(reference_labels, minlength=10)
        self.deciles = np.quantile(reference_rows, np.linspace(0.1, 0.9, 9), axis=0)
        self.rows: collections.deque[np.ndarray] = collections.deque(maxlen=WINDOW)
        self.labels: collections.deque[int] = collections.deque(maxlen=WINDOW)

    def update(self, batch: np.ndarray, labels: np.ndarray) -> None:
        self.rows.extend(batch)
        self.labels.extend(labels.tolist())

    def evaluate(self) -> dict[str, Any]:
        window = np.stack(self.rows)
        out: dict[str, Any] = {"ks": [], "psi": [], "w1": []}
        for j in range(window.shape[1]):
            ref, cur = self.reference_rows[:, j], window[:, j]
            out["ks"].append(sps.ks_2samp(ref, cur).statistic)
            edges = np.concatenate(([-np.inf], np.unique(self.deciles[:, j]), [np.inf]))
            p = np.histogram(ref, edges)[0] + 0.5
            q = np.histogram(cur, edges)[0] + 0.5
            p, q = p / p.sum(), q / q.sum()
            out["psi"].append(float(np.sum((q - p) * np.log(q / p))))
            out["w1"].append(sps.wasserstein_distance(ref, cur))
        counts = np.bincount(np.asarray(self.labels), minlength=10)
        table = np.vstack([counts, self.reference_labels])
        out["chi2"] = sps.chi2_contingency(table[:, table.sum(axis=0) > 0]).pvalue
        return out


def calibration(windows: int) -> dict[str, Any]:
    """How often windows from the reference distribution are called drifted (false alarms).

    Fresh samples, not bootstrap: for digits every window re-splits the 1,797 images at random
    into a reference of 1,437 and a window from the other 360; for the continuous case both
    are new standard-normal draws. Features only (64 tests), the default budget of 1%, with
    PSI voting off (the default) and on. Then PSI's critical value alone, on simulated
    multinomial counts (10 equal bins): the observed rate over the nominal one, per window
    size, at the per-test level the monitor uses (0.01 / 128) and at 0.001.
    """
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(1)
    x_all = load_digits().data.astype(np.float64)
    out: dict[str, Any] = {}
    print(f"\ncalibration: share of {windows} reference-distribution windows called drifted")
    print("| data | window rows | PSI votes | drifted windows | share |")
    print("|---|---|---|---|---|")
    for source in ("digits", "normal"):
        for n in (100, 360):
            for psi_test in (False, True):
                drifted = 0
                for _ in range(windows):
                    if source == "digits":
                        order = rng.permutation(len(x_all))
                        reference_rows, window = x_all[order[:1437]], x_all[order[1437:]][:n]
                    else:
                        reference_rows = rng.normal(size=(1437, N_FEATURES))
                        window = rng.normal(size=(n, N_FEATURES))
                    monitor = DriftMonitor(
                        build_reference(reference_rows),
                        DriftConfig(window_rows=n, window_seconds=None, psi_test=psi_test),
                    )
                    monitor.update(window)
                    drifted += monitor.evaluate().drifted
                key = f"{source} n={n} psi_test={psi_test}"
                out[key] = drifted / windows
                print(f"| {source} | {n} | {psi_test} | {drifted} | {drifted / windows:.2%} |")
    from monitoring.drift import stats

    print("\nPSI critical value: observed / nominal false-alarm rate (10 equal bins, m = 1437)")
    print("| window rows | alpha 1e-3 | alpha 7.8e-5 |")
    print("|---|---|---|")
    draws, m, bins = 400_000, 1437, 10
    shares = np.full(bins, 1.0 / bins)
    valid = np.ones((draws, bins), dtype=bool)
    for n in (100, 200, 500, 1000):
        reference_counts = rng.multinomial(m, shares, size=draws).astype(np.float64)
        window_counts = rng.multinomial(n, shares, size=draws).astype(np.float64)
        psi = stats.psi(window_counts, reference_counts, valid)
        ratios = []
        for alpha in (1e-3, 0.01 / 128):
            critical = stats.chi2_isf(alpha, bins - 1) * (1.0 / n + 1.0 / m)
            ratios.append(float(np.mean(psi >= critical)) / alpha)
        out[f"psi n={n}"] = ratios
        print(f"| {n} | {ratios[0]:.2f} | {ratios[1]:.2f} |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=str, default=None, help="also write the numbers here")
    parser.add_argument(
        "--calibration",
        type=int,
        default=0,
        metavar="WINDOWS",
        help="also measure false-alarm rates over this many fresh windows per case (slow)",
    )
    args = parser.parse_args()
    repeats: int = args.repeats

    split = digits.load_split()
    model, _ = digits.train(split)
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            probabilities, _ = model(torch.from_numpy(x.astype(np.float32)))
        result: np.ndarray = probabilities.numpy()
        return result

    train_probabilities = predict(split.x_train)
    reference = build_reference(
        split.x_train,
        feature_names=[f"pixel_{i}" for i in range(N_FEATURES)],
        labels=train_probabilities.argmax(axis=1),
        label_names=[str(i) for i in range(10)],
        confidence=train_probabilities.max(axis=1),
    )
    rng = np.random.default_rng(0)
    rows = split.x_test[rng.integers(0, len(split.x_test), WINDOW)]
    probabilities = predict(rows)
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "load_average": os.getloadavg(),
    }

    def fresh(ref: Reference) -> DriftMonitor:
        return DriftMonitor(ref, DriftConfig(window_rows=WINDOW, window_seconds=None))

    # -- update ------------------------------------------------------------------------------
    print("update (DriftMonitor.update), digits 64 features")
    print("| rows/batch | inputs | µs/batch, median (min) | ns per feature per row, median |")
    print("|---|---|---|---|")
    update: list[dict[str, Any]] = []
    for batch_rows in (1, 8, 32, 64):
        batch = rows[:batch_rows].astype(np.float32)
        batch_probabilities = probabilities[:batch_rows]
        monitor = fresh(reference)
        calls: list[tuple[str, Callable[[], object]]] = [
            ("pixels", functools.partial(monitor.update, batch)),
            (
                "pixels + probabilities",
                functools.partial(monitor.update, batch, probabilities=batch_probabilities),
            ),
        ]
        for label, call in calls:
            median, best = _time(call, repeats)
            per_value = median / (batch_rows * N_FEATURES)
            update.append({"rows": batch_rows, "inputs": label, "median_s": median, "min_s": best})
            print(
                f"| {batch_rows} | {label} | {median * 1e6:.1f} ({best * 1e6:.1f}) "
                f"| {per_value * 1e9:.0f} |"
            )
    results["update"] = update

    # -- evaluate ----------------------------------------------------------------------------
    continuous_reference = build_reference(rng.normal(size=(1437, N_FEATURES)))
    continuous_rows = rng.normal(size=(WINDOW, N_FEATURES))
    print("\nevaluate (DriftMonitor.evaluate), window of 1000 rows, 64 features")
    evaluate: dict[str, Any] = {}
    digits_monitor = fresh(reference)
    digits_monitor.update(rows, probabilities=probabilities)
    evaluate["digits"] = _time(digits_monitor.evaluate, repeats)
    continuous_monitor = fresh(continuous_reference)
    continuous_monitor.update(continuous_rows)
    evaluate["continuous"] = _time(continuous_monitor.evaluate, repeats)
    for name, (median, best) in evaluate.items():
        print(f"  {name}: median {median * 1e3:.3f} ms, min {best * 1e3:.3f} ms")
    results["evaluate"] = evaluate

    # -- scipy ks_2samp ----------------------------------------------------------------------
    x_train = split.x_train

    def ks_all() -> None:
        for j in range(N_FEATURES):
            sps.ks_2samp(x_train[:, j], rows[:, j])

    ks_median, ks_best = _time(ks_all, repeats)
    continuous_train = rng.normal(size=(1437, N_FEATURES))

    def ks_all_continuous() -> None:
        for j in range(N_FEATURES):
            sps.ks_2samp(continuous_train[:, j], continuous_rows[:, j])

    ksc_median, ksc_best = _time(ks_all_continuous, repeats)
    results["ks_2samp_64"] = {"digits": (ks_median, ks_best), "continuous": (ksc_median, ksc_best)}
    print("\nscipy.stats.ks_2samp, 1437 reference rows vs 1000 window rows (medians)")
    for name, all64, ours in (
        ("digits", ks_median, evaluate["digits"][0]),
        ("continuous", ksc_median, evaluate["continuous"][0]),
    ):
        print(
            f"  {name}: {all64 / N_FEATURES * 1e6:.0f} µs per feature, {all64 * 1e3:.1f} ms for 64;"
            f" evaluate is {all64 / ours:.0f}x faster per feature"
        )

    # -- naive windowed ----------------------------------------------------------------------
    naive = NaiveWindow(x_train, train_probabilities.argmax(axis=1))
    labels = probabilities.argmax(axis=1)
    naive.update(rows, labels)
    batch32, labels32 = rows[:32], labels[:32]
    naive_update = _time(lambda: naive.update(batch32, labels32), repeats)
    naive_evaluate = _time(naive.evaluate, repeats)
    results["naive"] = {"update_32": naive_update, "evaluate": naive_evaluate}
    print("\nnaive window (deque of rows, recompute with scipy)")
    print(
        f"  update 32 rows: {naive_update[0] * 1e6:.1f} µs; "
        f"evaluate: {naive_evaluate[0] * 1e3:.1f} ms "
        f"({naive_evaluate[0] / evaluate['digits'][0]:.0f}x our evaluate)"
    )
    if args.calibration:
        results["calibration"] = calibration(args.calibration)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
