"""The monitor's API: feature selection, constant features, odd input, W1/PSI values, JSON."""

import json
import math

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from monitoring.drift import DriftConfig, DriftMonitor, Reference, build_reference
from tests.monitoring.conftest import DigitsData

_BIG = DriftConfig(window_rows=100_000, window_seconds=None)


def test_top_k_monitors_the_highest_variance_features(digits_reference: Reference) -> None:
    monitor = DriftMonitor(digits_reference, DriftConfig(top_k=8))
    stds = np.array([f.std for f in digits_reference.features])
    expected = sorted(np.argsort(-stds)[:8])
    assert monitor.feature_names == tuple(f"pixel_{i}" for i in expected)
    assert monitor.tests == 8 + 2
    batch = np.full((40, 64), 16.0)
    monitor.update(batch)  # the full input; the monitor picks its columns
    report = monitor.evaluate()
    assert [f.name for f in report.features] == list(monitor.feature_names)
    assert report.to_dict()["monitored_features"] == 8


def test_explicit_feature_list(digits_reference: Reference) -> None:
    monitor = DriftMonitor(digits_reference, DriftConfig(features=("pixel_9", "pixel_3")))
    assert monitor.feature_names == ("pixel_9", "pixel_3")
    with pytest.raises(ValueError, match="not in the reference"):
        DriftMonitor(digits_reference, DriftConfig(features=("pixel_99",)))


def test_constant_features_do_not_false_alarm_and_catch_real_change() -> None:
    rng = np.random.default_rng(30)
    x = np.column_stack([np.zeros(1500), rng.integers(0, 17, 1500)]).astype(float)
    reference = build_reference(x)
    monitor = DriftMonitor(reference, _BIG)
    # A rare non-zero value (0.5% of rows) in an always-zero column: no drift, no warning.
    live = np.column_stack([np.zeros(1000), rng.integers(0, 17, 1000)]).astype(float)
    live[rng.choice(1000, 5, replace=False), 0] = 3.0
    monitor.update(live)
    quiet = monitor.evaluate().features[0]
    assert quiet.status == "ok"
    assert quiet.ks == pytest.approx(0.005)
    assert math.isfinite(quiet.wasserstein)
    assert quiet.psi == 0.0  # one PSI bin: PSI cannot see inside a constant feature
    # A third of the rows non-zero: drift.
    live[:333, 0] = 5.0
    monitor.reset()
    monitor.update(live)
    loud = monitor.evaluate().features[0]
    assert loud.status == "drift"
    assert loud.ks == pytest.approx(0.333 + 0.005 * 667 / 1000, abs=0.005)
    assert loud.wasserstein > 0


def test_wasserstein_matches_scipy_on_lattice_data(
    digits_data: DigitsData, digits_reference: Reference
) -> None:
    x_train = digits_data.split.x_train
    window = np.clip(digits_data.split.x_test + 3.0, 0.0, 20.0)  # values up to 20: beyond max
    monitor = DriftMonitor(digits_reference, _BIG)
    monitor.update(window)
    report = monitor.evaluate()
    for j, feature in enumerate(report.features):
        exact = wasserstein_distance(x_train[:, j], window[:, j])
        scale = digits_reference.features[j].scale
        assert feature.wasserstein * scale == pytest.approx(exact, rel=1e-6, abs=1e-9)


def test_wasserstein_close_to_scipy_on_continuous_data() -> None:
    rng = np.random.default_rng(31)
    reference_rows = rng.normal(size=(3000, 4))
    reference = build_reference(reference_rows)
    for shift in (0.0, 0.5, 3.0):
        window = rng.normal(shift, 1.2, size=(1000, 4))
        monitor = DriftMonitor(reference, _BIG)
        monitor.update(window)
        for j, feature in enumerate(monitor.evaluate().features):
            exact = wasserstein_distance(reference_rows[:, j], window[:, j])
            # Each bin's reference and live mass collapsed to their own means in the bin.
            assert feature.wasserstein * reference.features[j].scale == pytest.approx(
                exact, abs=0.005
            )


def test_psi_over_reference_quantile_bins() -> None:
    rng = np.random.default_rng(32)
    reference_rows = rng.normal(size=(5000, 1))
    reference = build_reference(reference_rows)
    window = rng.normal(0.5, 1.0, size=(2000, 1))
    monitor = DriftMonitor(reference, _BIG)
    monitor.update(window)
    feature = monitor.evaluate().features[0]
    # The textbook PSI over deciles of the reference, with the same 0.5 pseudo-counts.
    cuts = np.quantile(reference_rows[:, 0], np.linspace(0.1, 0.9, 9), method="inverted_cdf")
    p = np.bincount(np.searchsorted(cuts, reference_rows[:, 0], side="right"), minlength=10)
    q = np.bincount(np.searchsorted(cuts, window[:, 0], side="right"), minlength=10)
    p_s, q_s = (p + 0.5) / (p.sum() + 5.0), (q + 0.5) / (q.sum() + 5.0)
    assert feature.psi == pytest.approx(np.sum((q_s - p_s) * np.log(q_s / p_s)), rel=0.05)
    assert feature.psi > feature.psi_critical  # a half-std shift at n = 2000


def test_psi_critical_shrinks_with_the_window() -> None:
    reference = build_reference(np.random.default_rng(33).normal(size=(2000, 1)))
    criticals = []
    for n in (100, 1000):
        monitor = DriftMonitor(reference, _BIG)
        monitor.update(np.random.default_rng(34).normal(size=(n, 1)))
        criticals.append(monitor.evaluate().features[0].psi_critical)
    assert criticals[0] > 3 * criticals[1]


def test_psi_can_vote() -> None:
    reference = build_reference(np.random.default_rng(35).normal(size=(2000, 3)))
    assert DriftMonitor(reference, DriftConfig(psi_test=True)).tests == 6
    assert DriftMonitor(reference, DriftConfig()).tests == 3


def test_non_finite_values_are_missing_not_errors(digits_reference: Reference) -> None:
    monitor = DriftMonitor(digits_reference, _BIG)
    batch = np.zeros((200, 64), dtype=np.float32)
    batch[:10, 5] = np.nan
    batch[10:12, 5] = np.inf
    monitor.update(batch)
    feature = monitor.evaluate().features[5]
    assert (feature.samples, feature.missing) == (188, 12)
    assert math.isfinite(feature.wasserstein)


def test_invalid_labels_are_counted(digits_reference: Reference) -> None:
    monitor = DriftMonitor(digits_reference, _BIG)
    monitor.update(labels=np.array([0, 1, 2, 10, -1]))
    prediction = monitor.evaluate().prediction
    assert prediction is not None
    assert (prediction.samples, prediction.invalid) == (3, 2)


def test_shape_errors(digits_reference: Reference) -> None:
    monitor = DriftMonitor(digits_reference)
    with pytest.raises(ValueError, match=r"\[rows, 64\]"):
        monitor.update(np.zeros((3, 63)))
    with pytest.raises(ValueError, match="rows"):
        monitor.update(np.zeros((3, 64)), labels=np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        monitor.update(labels=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="not both"):
        monitor.update(probabilities=np.ones((2, 10)), labels=np.zeros(2, dtype=np.int64))


def test_probabilities_give_labels_and_confidence(digits_reference: Reference) -> None:
    monitor = DriftMonitor(digits_reference, _BIG)
    probabilities = np.full((150, 10), 0.05)
    probabilities[:, 3] = 0.55
    monitor.update(probabilities=probabilities)
    report = monitor.evaluate()
    assert report.prediction is not None
    assert report.confidence is not None
    assert report.prediction.distribution[3] == 1.0
    assert report.confidence.mean == pytest.approx(0.55)
    assert report.confidence.status == "drift"
    assert report.features[0].samples == 0


def test_rows_with_non_finite_probabilities_predict_no_class(
    digits_reference: Reference,
) -> None:
    monitor = DriftMonitor(digits_reference, _BIG)
    probabilities = np.full((150, 10), 0.05)
    probabilities[:, 3] = 0.55
    probabilities[:10] = np.nan  # argmax would call these class 0
    probabilities[10:15, 7] = np.inf
    probabilities[15:20, 1] = -np.inf  # the row's largest value is finite, the row is not
    monitor.update(probabilities=probabilities)
    report = monitor.evaluate()
    assert report.prediction is not None
    assert report.confidence is not None
    assert (report.prediction.samples, report.prediction.invalid) == (130, 20)
    assert report.prediction.distribution[3] == 1.0
    assert (report.confidence.samples, report.confidence.missing) == (130, 20)
    assert report.confidence.mean == pytest.approx(0.55)


def test_empty_window_report_is_strict_json(digits_reference: Reference) -> None:
    report = DriftMonitor(digits_reference, model="digits", version="1").evaluate()
    assert report.status == "insufficient_data"
    summary = json.loads(report.to_json())
    assert summary["score"] is None
    assert summary["features"][0]["ks"] is None
    assert summary["window"]["rows"] == 0
    assert summary["prediction"]["distribution"] == [None] * 10
    assert (summary["model"], summary["version"]) == ("digits", "1")


def test_report_summary(digits_data: DigitsData, digits_reference: Reference) -> None:
    monitor = DriftMonitor(digits_reference, DriftConfig(window_rows=360), model="digits")
    x = digits_data.split.x_test
    monitor.update(x, probabilities=digits_data.predict(x)[0])
    report = monitor.evaluate()
    summary = json.loads(report.to_json())
    assert summary["status"] == report.status == "ok"
    assert summary["monitored_features"] == 64
    assert summary["tests"] == 66
    assert summary["window"]["rows"] == 360
    assert 0 < summary["score"] < 1
    assert summary["prediction"]["chi2_df"] == 9
    assert set(summary["features"][10]) >= {"name", "ks", "psi", "wasserstein", "score", "status"}
    means = [f.mean for f in report.features]
    np.testing.assert_allclose(means, x.mean(axis=0), rtol=1e-6, atol=1e-9)
    assert report.features[10].reference_mean == digits_reference.features[10].mean
    top = report.top_features(3)
    assert top[0].score == max(f.score for f in report.features)
    assert report.drifted_share == 0.0
