"""Verdicts: no more than 1% false alarms on reference-distribution windows; known shifts caught
within one window; too little data is never drift."""

from collections.abc import Callable

import numpy as np
import pytest

from monitoring.drift import DriftConfig, DriftMonitor, Reference, build_reference
from tests.monitoring.conftest import LABEL_NAMES, DigitsData

WINDOWS = 200
WINDOW_ROWS = 1000


def _count_drifted(
    monitor: DriftMonitor, windows: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> list[str]:
    verdicts: list[str] = []
    for _ in range(WINDOWS):
        monitor.reset()
        x, probabilities = windows()
        monitor.update(x, probabilities=probabilities)
        verdicts.append(monitor.evaluate().status)
    return verdicts


def test_reference_windows_from_the_training_split(
    digits_data: DigitsData, digits_reference: Reference
) -> None:
    # 200 windows of 1000 rows drawn (bootstrap) from the training data the reference holds,
    # with the model's predictions: inputs, labels and confidence all from the reference
    # distribution.
    rng = np.random.default_rng(20)
    x = digits_data.split.x_train
    probabilities, _ = digits_data.predict(x)
    monitor = DriftMonitor(digits_reference, DriftConfig(window_rows=WINDOW_ROWS))
    assert monitor.tests == 64 + 2

    def window() -> tuple[np.ndarray, np.ndarray]:
        rows = rng.integers(0, len(x), WINDOW_ROWS)
        return x[rows], probabilities[rows]

    verdicts = _count_drifted(monitor, window)
    assert set(verdicts) <= {"ok", "drift"}
    assert verdicts.count("drift") <= WINDOWS // 100


def test_reference_windows_from_the_test_split(
    digits_data: DigitsData, digits_reference: Reference
) -> None:
    # The held-out test split is the same distribution: 200 windows of 200 of its 360 rows.
    rng = np.random.default_rng(21)
    x = digits_data.split.x_test
    probabilities, _ = digits_data.predict(x)
    monitor = DriftMonitor(digits_reference, DriftConfig(window_rows=200))

    def window() -> tuple[np.ndarray, np.ndarray]:
        rows = rng.choice(len(x), 200, replace=False)
        return x[rows], probabilities[rows]

    verdicts = _count_drifted(monitor, window)
    assert verdicts.count("drift") <= WINDOWS // 100


SHIFTS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": lambda x, rng: np.clip(x + rng.normal(0.0, 2.0, x.shape), 0.0, 16.0),
    "brightness_plus_4": lambda x, rng: np.clip(x + 4.0, 0.0, 16.0),
    "inverted": lambda x, rng: 16.0 - x,
}


@pytest.mark.parametrize("shift", sorted(SHIFTS))
@pytest.mark.parametrize("window_rows", [200, WINDOW_ROWS])
def test_known_shifts_are_caught_within_one_window(
    digits_data: DigitsData, digits_reference: Reference, shift: str, window_rows: int
) -> None:
    rng = np.random.default_rng(22)
    monitor = DriftMonitor(digits_reference, DriftConfig(window_rows=window_rows))
    # Rows of the held-out split where it is large enough, else of the training split; each
    # row once per window (resampling 1000 rows from the 360 held-out ones would add no
    # information, only a false sense of sample size).
    split = digits_data.split
    source = split.x_test if window_rows <= len(split.x_test) else split.x_train

    def rows() -> np.ndarray:
        return source[rng.choice(len(source), window_rows, replace=False)]

    # Warm up on clean traffic: no drift.
    clean = rows()
    monitor.update(clean, probabilities=digits_data.predict(clean)[0])
    assert monitor.evaluate().status == "ok"
    # One window of shifted traffic, in batches of 32.
    shifted = SHIFTS[shift](rows(), rng)
    probabilities, _ = digits_data.predict(shifted)
    for start in range(0, window_rows, 32):
        monitor.update(shifted[start : start + 32], probabilities=probabilities[start : start + 32])
    report = monitor.evaluate()
    assert report.window.rows == window_rows
    assert report.status == "drift"
    assert report.score >= 1.0
    assert report.drifted_features >= 10
    assert report.to_dict()["status"] == "drift"


def test_inverted_pixels_move_predictions_and_confidence(
    digits_data: DigitsData, digits_reference: Reference
) -> None:
    monitor = DriftMonitor(digits_reference, DriftConfig(window_rows=WINDOW_ROWS))
    x = 16.0 - digits_data.split.x_test
    monitor.update(x, probabilities=digits_data.predict(x)[0])
    report = monitor.evaluate()
    assert report.prediction is not None
    assert report.confidence is not None
    assert report.prediction.status == "drift"
    assert report.prediction.js_distance > 0.2
    assert report.confidence.status == "drift"
    assert report.confidence.mean_shift < 0.0


def test_too_few_rows_are_insufficient_data_not_drift(
    digits_data: DigitsData, digits_reference: Reference
) -> None:
    monitor = DriftMonitor(digits_reference, DriftConfig(min_samples=100))
    x = 16.0 - digits_data.split.x_test[:99]
    monitor.update(x, probabilities=digits_data.predict(x)[0])
    report = monitor.evaluate()
    assert report.status == "insufficient_data"
    assert all(f.status == "insufficient_data" for f in report.features)
    # The statistics are still there to look at.
    assert max(f.ks for f in report.features) > 0.5
    monitor.update(x[:1], probabilities=digits_data.predict(x[:1])[0])
    assert monitor.evaluate().status == "drift"


def _label_monitor(rows: int) -> tuple[DriftMonitor, np.ndarray]:
    reference_labels = np.repeat(np.arange(10), [140, 150, 145, 140, 150, 145, 140, 150, 145, 132])
    reference = build_reference(None, labels=reference_labels, label_names=LABEL_NAMES)
    monitor = DriftMonitor(reference, DriftConfig(window_rows=rows))
    shares = np.bincount(reference_labels) / len(reference_labels)
    return monitor, shares


def test_prediction_drift_false_alarms() -> None:
    rng = np.random.default_rng(23)
    monitor, shares = _label_monitor(WINDOW_ROWS)
    assert monitor.tests == 1
    drifted = 0
    for _ in range(WINDOWS):
        monitor.reset()
        monitor.update(labels=rng.choice(10, WINDOW_ROWS, p=shares))
        drifted += monitor.evaluate().status == "drift"
    assert drifted <= WINDOWS // 100


def test_prediction_drift_detects_a_label_shift() -> None:
    rng = np.random.default_rng(24)
    monitor, shares = _label_monitor(WINDOW_ROWS)
    skewed = shares.copy()
    skewed[1] += 0.08  # one class 8 points more frequent
    skewed /= skewed.sum()
    monitor.update(labels=rng.choice(10, WINDOW_ROWS, p=skewed))
    report = monitor.evaluate()
    assert report.prediction is not None
    assert report.prediction.status == "drift"
    assert report.prediction.chi2_pvalue < monitor.test_alpha
    assert report.prediction.distribution[1] > 0.15
    same, _ = _label_monitor(WINDOW_ROWS)
    same.update(labels=rng.choice(10, WINDOW_ROWS, p=shares))
    unshifted = same.evaluate().prediction
    assert unshifted is not None
    assert unshifted.status == "ok"
    assert unshifted.js_distance < report.prediction.js_distance
