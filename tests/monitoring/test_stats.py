"""The runtime's numpy-only distribution functions against scipy."""

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import jensenshannon

from monitoring.drift import stats


def test_kolmogorov_sf_matches_scipy() -> None:
    lam = np.concatenate(([0.0, 1e-3, 0.1], np.linspace(0.2, 4.0, 300), [5.0, 6.0]))
    ours = stats.kolmogorov_sf(lam)
    theirs = sps.kstwobign.sf(lam)
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("alpha", [0.2, 0.05, 0.01, 1e-3, 1e-4, 1e-6])
def test_kolmogorov_isf_inverts_sf(alpha: float) -> None:
    lam = stats.kolmogorov_isf(alpha)
    assert lam == pytest.approx(sps.kstwobign.isf(alpha), rel=1e-8)


@pytest.mark.parametrize("df", [1, 2, 3, 5, 9, 10, 30, 99, 500])
def test_chi2_sf_matches_scipy(df: int) -> None:
    xs = [0.0, 1e-6, 0.01, 0.5, df / 2, df - 1, df, df + 1, 2 * df, 5 * df + 20, 10 * df + 100]
    for x in xs:
        ours = stats.chi2_sf(x, df)
        theirs = float(sps.chi2.sf(x, df))
        assert ours == pytest.approx(theirs, rel=1e-9, abs=1e-300), (x, df)


def test_chi2_sf_deep_tail_is_relative_accurate() -> None:
    # Tiny p-values come from the continued fraction directly, not as 1 - P.
    assert stats.chi2_sf(200.0, 9) == pytest.approx(sps.chi2.sf(200.0, 9), rel=1e-9)
    assert stats.chi2_sf(math.inf, 4) == 0.0
    assert math.isnan(stats.chi2_sf(math.nan, 4))


@pytest.mark.parametrize(("alpha", "df"), [(0.05, 1), (0.01, 9), (1.5e-4, 9), (1e-6, 3), (0.5, 40)])
def test_chi2_isf_matches_scipy(alpha: float, df: int) -> None:
    assert stats.chi2_isf(alpha, df) == pytest.approx(sps.chi2.isf(alpha, df), rel=1e-8)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="df"):
        stats.chi2_sf(1.0, 0)
    with pytest.raises(ValueError, match="alpha"):
        stats.chi2_isf(0.0, 3)
    with pytest.raises(ValueError, match="alpha"):
        stats.kolmogorov_isf(1.0)


def test_js_distance_matches_scipy_base2() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = rng.integers(0, 50, 10).astype(float)
        q = rng.integers(0, 50, 10).astype(float)
        p[rng.integers(0, 10)] = 0.0  # zeros are allowed
        assert stats.js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)
    assert stats.js_distance([1, 0], [0, 1]) == pytest.approx(1.0)
    assert stats.js_distance([3, 1], [6, 2]) == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(stats.js_distance([0, 0], [1, 1]))


def test_chi2_homogeneity_matches_scipy() -> None:
    current = np.array([30, 12, 0, 50, 8, 0])
    reference = np.array([300, 150, 0, 420, 90, 40])
    statistic, df = stats.chi2_homogeneity(current, reference)
    keep = (current + reference) > 0
    expected = sps.chi2_contingency(np.vstack([current, reference])[:, keep], correction=False)
    assert statistic == pytest.approx(expected.statistic, rel=1e-12)
    assert df == expected.dof == 4


def test_two_sample_ks_pvalue_close_to_scipy_asymptotic() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=1437), rng.normal(0.1, 1.0, size=1000)
    result = sps.ks_2samp(a, b, method="asymp")
    ours = stats.kolmogorov_sf(stats.ks_scale(1000, 1437) * result.statistic)[0]
    # Stephens' correction differs slightly from scipy's; the two agree to a few percent.
    assert ours == pytest.approx(result.pvalue, rel=0.1)


def test_binned_psi_and_wasserstein_on_known_histograms() -> None:
    current = np.array([[10.0, 30.0, 60.0]])
    reference = np.array([[20.0, 30.0, 50.0]])
    valid = np.ones_like(current, dtype=bool)
    q = (current + 0.5) / 101.5
    p = (reference + 0.5) / 101.5
    assert stats.psi(current, reference, valid)[0] == pytest.approx(np.sum((q - p) * np.log(q / p)))
    positions = np.array([[0.0, 1.0, 3.0]])
    assert stats.wasserstein(current, reference, positions)[0] == pytest.approx(
        sps.wasserstein_distance([0, 1, 3], [0, 1, 3], current[0], reference[0])
    )
    assert stats.binned_ks(current, reference)[0] == pytest.approx(0.1)


def test_the_runtime_does_not_import_scipy() -> None:
    code = (
        "import sys, numpy as np\n"
        "from monitoring.drift import DriftMonitor, build_reference\n"
        "x, y = np.arange(200.0).reshape(100, 2), np.arange(100) % 3\n"
        "m = DriftMonitor(build_reference(x, labels=y, confidence=np.linspace(0, 1, 100)))\n"
        "m.update(x, labels=y, confidence=np.ones(100))\n"
        "m.evaluate().to_json()\n"
        "assert 'scipy' not in sys.modules, 'scipy imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
