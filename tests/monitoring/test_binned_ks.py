"""The KS statistic from binned window state against scipy.stats.ks_2samp on the same data."""

import numpy as np
import pytest
from scipy.stats import ks_2samp

from monitoring.drift import DriftConfig, DriftMonitor, Reference, build_reference
from tests.monitoring.conftest import DigitsData

TOLERANCE = 0.02
_CONFIG = DriftConfig(window_rows=100_000, window_seconds=None)


def _binned_ks(reference: Reference, window: np.ndarray) -> np.ndarray:
    monitor = DriftMonitor(reference, _CONFIG)
    monitor.update(window)
    return np.array([f.ks for f in monitor.evaluate().features])


def _scipy_ks(reference_rows: np.ndarray, window: np.ndarray) -> np.ndarray:
    return np.array(
        [ks_2samp(reference_rows[:, j], window[:, j]).statistic for j in range(window.shape[1])]
    )


def test_digits_test_split_is_exact(digits_data: DigitsData, digits_reference: Reference) -> None:
    # Integer pixels on one-bin-per-integer edges: the binned CDFs are the exact ones.
    x_train, x_test = digits_data.split.x_train, digits_data.split.x_test
    np.testing.assert_allclose(
        _binned_ks(digits_reference, x_test), _scipy_ks(x_train, x_test), atol=1e-12
    )


@pytest.mark.parametrize(
    "shift",
    ["noise", "brightness", "inverted", "out_of_range"],
)
def test_digits_shifted_windows(
    digits_data: DigitsData, digits_reference: Reference, shift: str
) -> None:
    rng = np.random.default_rng(10)
    x_train, x_test = digits_data.split.x_train, digits_data.split.x_test
    window = {
        "noise": lambda x: x + rng.normal(0.0, 1.5, x.shape),  # not integers any more
        "brightness": lambda x: np.clip(x + 4.0, 0.0, 16.0),
        "inverted": lambda x: 16.0 - x,
        "out_of_range": lambda x: x * 1.5 - 2.0,
    }[shift](x_test)
    ours = _binned_ks(digits_reference, window)
    theirs = _scipy_ks(x_train, window)
    assert np.max(np.abs(ours - theirs)) <= TOLERANCE


@pytest.mark.parametrize(
    "distribution",
    ["normal", "lognormal", "point_mass_and_exponential", "uniform_wide"],
)
def test_continuous_features(distribution: str) -> None:
    rng = np.random.default_rng(11)

    def draw(n: int, shifted: bool) -> np.ndarray:
        loc = 0.3 if shifted else 0.0
        if distribution == "normal":
            return rng.normal(loc, 1.0, size=(n, 8))
        if distribution == "lognormal":
            return rng.lognormal(loc, 1.0, size=(n, 8))
        if distribution == "point_mass_and_exponential":
            mass = rng.random((n, 8)) < (0.3 + loc)
            return np.where(mass, 0.0, rng.exponential(1.0 + loc, size=(n, 8)))
        return rng.uniform(-1e6, 1e6 * (1 + loc), size=(n, 8))

    reference_rows = draw(2000, shifted=False)
    reference = build_reference(reference_rows)
    for shifted in (False, True):
        window = draw(1000, shifted=shifted)
        ours = _binned_ks(reference, window)
        theirs = _scipy_ks(reference_rows, window)
        assert np.max(np.abs(ours - theirs)) <= TOLERANCE, (shifted, ours - theirs)
