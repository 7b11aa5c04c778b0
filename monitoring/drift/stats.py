"""Distribution functions and two-sample statistics on binned counts; numpy and `math` only.

Nothing here imports scipy: the runtime needs only numpy. The tests check every function
against its scipy counterpart.

Binned statistics take counts arrays of shape ``[features, bins]`` (padded with zero counts on
the right, so rows of different length stack) and return one value per feature. The method
and its assumptions are written up in ``monitoring/drift/METHOD.md``.
"""

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_EPS = 1e-15
_FPMIN = 1e-300
_MAX_ITER = 10_000


def kolmogorov_sf(lam: npt.ArrayLike) -> FloatArray:
    """Survival function of the Kolmogorov distribution, Q(λ) = 2 Σ (-1)^(k-1) exp(-2k²λ²).

    Vectorised. Below λ = 1.18 the alternating series converges slowly, so there the Jacobi
    theta form 1 - sqrt(2π)/λ Σ exp(-(2k-1)²π²/(8λ²)) is used; four terms of either reach
    double precision. Equals ``scipy.stats.kstwobign.sf``.
    """
    x = np.atleast_1d(np.asarray(lam, dtype=np.float64))
    out = np.ones_like(x)
    small = (x > 0.0) & (x < 1.18)
    large = x >= 1.18
    if small.any():
        xs = x[small]
        k = np.arange(1, 6, dtype=np.float64)[:, None]
        terms = np.exp(-((2.0 * k - 1.0) ** 2) * math.pi**2 / (8.0 * xs**2))
        out[small] = 1.0 - math.sqrt(2.0 * math.pi) / xs * terms.sum(axis=0)
    if large.any():
        xl = x[large]
        k = np.arange(1, 6, dtype=np.float64)[:, None]
        signs = np.where(k % 2 == 1, 1.0, -1.0)
        out[large] = 2.0 * (signs * np.exp(-2.0 * k**2 * xl**2)).sum(axis=0)
    result: FloatArray = np.clip(out, 0.0, 1.0)
    return result


@lru_cache(maxsize=256)
def kolmogorov_isf(alpha: float) -> float:
    """The λ with Q(λ) = alpha (bisection; cached, so each level is solved once)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    lo, hi = 0.05, 20.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float(kolmogorov_sf(mid)[0]) > alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def ks_scale(n: npt.ArrayLike, m: npt.ArrayLike) -> FloatArray:
    """sqrt(nₑ) + 0.12 + 0.11/sqrt(nₑ), nₑ = nm/(n+m): maps a two-sample D to Kolmogorov's λ.

    Stephens' small-sample correction of the asymptotic distribution (as in Numerical Recipes'
    ``kstwo``); the p-value of D is ``kolmogorov_sf(ks_scale(n, m) * D)``. Zero where n or m is 0.
    """
    n_arr = np.asarray(n, dtype=np.float64)
    m_arr = np.asarray(m, dtype=np.float64)
    total = n_arr + m_arr
    with np.errstate(divide="ignore", invalid="ignore"):
        ne = np.where(total > 0, n_arr * m_arr / np.where(total > 0, total, 1.0), 0.0)
        root = np.sqrt(ne)
        scale = np.where(ne > 0, root + 0.12 + 0.11 / np.where(ne > 0, root, 1.0), 0.0)
    result: FloatArray = np.asarray(scale, dtype=np.float64)
    return result


def _log_gamma_prefactor(a: float, x: float) -> float:
    return math.exp(-x + a * math.log(x) - math.lgamma(a))


def _gamma_p_series(a: float, x: float) -> float:
    """Regularised lower incomplete gamma P(a, x) by its power series (good for x < a + 1)."""
    term = 1.0 / a
    total = term
    ap = a
    for _ in range(_MAX_ITER):
        ap += 1.0
        term *= x / ap
        total += term
        if abs(term) < abs(total) * _EPS:
            break
    return total * _log_gamma_prefactor(a, x)


def _gamma_q_fraction(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) by Lentz's continued fraction (x >= a + 1)."""
    b = x + 1.0 - a
    c = 1.0 / _FPMIN
    d = 1.0 / b
    h = d
    for i in range(1, _MAX_ITER):
        an = -i * (i - a)
        b += 2.0
        d = an * d + b
        if abs(d) < _FPMIN:
            d = _FPMIN
        c = b + an / c
        if abs(c) < _FPMIN:
            c = _FPMIN
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return _log_gamma_prefactor(a, x) * h


def gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a)."""
    if a <= 0.0:
        raise ValueError(f"a must be positive, got {a}")
    if x <= 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    if x < a + 1.0:
        return max(0.0, 1.0 - _gamma_p_series(a, x))
    return min(1.0, _gamma_q_fraction(a, x))


def chi2_sf(x: float, df: float) -> float:
    """P(X > x) for X ~ χ²(df): Q(df/2, x/2). Equals ``scipy.stats.chi2.sf``."""
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    if math.isnan(x):
        return math.nan
    return gamma_q(0.5 * df, 0.5 * x)


@lru_cache(maxsize=1024)
def chi2_isf(alpha: float, df: int) -> float:
    """The x with P(χ²(df) > x) = alpha (bracketing then bisection; cached per (alpha, df))."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if df <= 0:
        raise ValueError(f"df must be positive, got {df}")
    lo, hi = 0.0, max(1.0, float(df))
    while chi2_sf(hi, df) > alpha:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if chi2_sf(mid, df) > alpha:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-10 * hi:
            break
    return 0.5 * (lo + hi)


def cdfs(counts: FloatArray) -> FloatArray:
    """Row-wise empirical CDFs at the upper edge of each bin; rows with no counts stay 0."""
    totals = counts.sum(axis=1, keepdims=True)
    cumulative = np.cumsum(counts, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        result: FloatArray = np.where(totals > 0, cumulative / np.where(totals > 0, totals, 1), 0)
    return result


def binned_ks(current: FloatArray, reference: FloatArray) -> FloatArray:
    """Kolmogorov-Smirnov statistic per row: max |F_cur - F_ref| over the bin edges."""
    diff = np.abs(cdfs(current) - cdfs(reference))
    result: FloatArray = diff.max(axis=1)
    return result


def psi(
    current: FloatArray, reference: FloatArray, valid: npt.NDArray[np.bool_], pseudo: float = 0.5
) -> FloatArray:
    """Population stability index per row, Σ (q - p) ln(q / p), over the `valid` bins.

    Each valid bin gets `pseudo` extra counts in both distributions (additive smoothing), so an
    empty bin costs a finite amount; padding bins (``valid`` false) count for nothing.
    """
    n_bins = valid.sum(axis=1, keepdims=True)
    q = (current + pseudo) * valid
    p = (reference + pseudo) * valid
    q = q / np.maximum(current.sum(axis=1, keepdims=True) + pseudo * n_bins, _FPMIN)
    p = p / np.maximum(reference.sum(axis=1, keepdims=True) + pseudo * n_bins, _FPMIN)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(
            valid, (q - p) * np.log(np.where(valid, q, 1.0) / np.where(valid, p, 1.0)), 0
        )
    result: FloatArray = terms.sum(axis=1)
    return result


def wasserstein(current: FloatArray, reference: FloatArray, positions: FloatArray) -> FloatArray:
    """W1 per row between two distributions whose bin masses sit at `positions` (same shape).

    W1 = ∫ |F_ref - F_cur| dx = Σ_b |F_ref(b) - F_cur(b)| (x_{b+1} - x_b) for point masses at
    the sorted positions x_b. Padding bins must repeat the last position (zero gaps).
    """
    diff = np.abs(cdfs(current) - cdfs(reference))[:, :-1]
    gaps = np.diff(positions, axis=1)
    result: FloatArray = (diff * gaps).sum(axis=1)
    return result


def js_distance(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    """Jensen-Shannon distance with base-2 logarithms: in [0, 1], 0 for equal distributions.

    Inputs are counts or weights; each is normalised to sum 1. Equals
    ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.
    """
    pa = np.asarray(p, dtype=np.float64)
    qa = np.asarray(q, dtype=np.float64)
    if pa.sum() <= 0 or qa.sum() <= 0:
        return math.nan
    pa = pa / pa.sum()
    qa = qa / qa.sum()
    mix = 0.5 * (pa + qa)

    def _kl(a: FloatArray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / mix[nz])))

    divergence = 0.5 * _kl(pa) + 0.5 * _kl(qa)
    return math.sqrt(max(divergence, 0.0))


def chi2_homogeneity(current: npt.ArrayLike, reference: npt.ArrayLike) -> tuple[float, int]:
    """Pearson's χ² test of homogeneity on a 2 x K table of counts: (statistic, df).

    Both samples are treated as random (the reference is a finite sample too), which is what
    keeps the test calibrated when the reference is not much larger than the window. Classes
    empty in both samples are dropped; df = (classes seen) - 1. Equals
    ``scipy.stats.chi2_contingency(table, correction=False)``.
    """
    cur = np.asarray(current, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    keep = (cur + ref) > 0
    cur, ref = cur[keep], ref[keep]
    n, m = cur.sum(), ref.sum()
    if n <= 0 or m <= 0 or cur.size < 2:
        return math.nan, 0
    column = cur + ref
    expected_cur = column * n / (n + m)
    expected_ref = column * m / (n + m)
    statistic = float(
        np.sum((cur - expected_cur) ** 2 / expected_cur)
        + np.sum((ref - expected_ref) ** 2 / expected_ref)
    )
    return statistic, int(cur.size - 1)
