"""Paired statistics for comparing two runs: seeded paired bootstrap CIs, paired tests, Holm.

Everything works on *paired differences* ``d_i = b_i − a_i`` (one per example scored ok in both runs).

- **Confidence interval**: a seeded paired bootstrap of the mean difference, BCa-corrected
  (bias-corrected and accelerated; for the mean the jackknife is closed-form, so the correction costs
  nothing). Resampling is vectorised with numpy and chunked so memory stays bounded; the same code
  resamples many independent sets of differences at once (``bootstrap_ci_many``), which is what makes
  a 1,000-simulation coverage check take about a second.
- **p-value**: the paired t-test (``scipy.stats.ttest_rel`` on the pairs) by default. The quantity
  ragtrail reports and gates on is the *mean* difference, and the t-test's null hypothesis is exactly
  "the mean difference is 0", so the p-value and the CI answer the same question. Wilcoxon's
  signed-rank test (``test="wilcoxon"``) tests a different null (differences symmetric about 0 — a
  pseudo-median shift), drops tied pairs, and can contradict the CI of the mean on skewed score
  distributions; it is available for users who want a rank test. For bounded scores and the
  dataset sizes evals use (tens to thousands of pairs) the mean difference is close to normal.
- **Holm** (step-down Bonferroni) adjusts p-values across the metrics of one comparison; it controls
  the family-wise error rate under any dependence between metrics.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from ragtrail.evals import _needs_numpy  # noqa: F401  (numpy + scipy, or a one-line install hint)

# isort: split
import numpy as np

TestName = Literal["t", "wilcoxon"]
TESTS: tuple[str, ...] = ("t", "wilcoxon")

_CHUNK_ELEMENTS = 4_000_000  # resampled values held in memory at once


def _norm_ppf(p: np.ndarray | float) -> Any:
    from scipy.special import ndtri

    return ndtri(p)


def _norm_cdf(x: np.ndarray | float) -> Any:
    from scipy.special import ndtr

    return ndtr(x)


def bootstrap_ci_many(
    diffs: np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int | None = 0,
    method: Literal["bca", "percentile"] = "bca",
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap CIs of the mean for each row of ``diffs`` (shape ``(m, n)``): returns ``(low, high)``.

    Rows are independent sets of paired differences of equal length ``n``. Resampling draws the
    same number of pairs with replacement (a paired bootstrap: a pair is resampled as a unit).
    """
    d = np.asarray(diffs, dtype=np.float64)
    if d.ndim != 2:
        raise ValueError("diffs must be 2-D: (sets, pairs)")
    m, n = d.shape
    if n == 0:
        nan = np.full(m, np.nan)
        return nan, nan.copy()
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    # Each resample is a vector of counts (how often each pair was drawn); the resampled means of all
    # rows are then one matrix product. Rows share the resampling counts: each row's bootstrap is
    # still exact, and a thousand independent simulations cost one BLAS call per chunk.
    means = np.empty((m, n_resamples))
    per_chunk = max(1, _CHUNK_ELEMENTS // n)
    for c0 in range(0, n_resamples, per_chunk):
        c1 = min(n_resamples, c0 + per_chunk)
        k = c1 - c0
        idx = rng.integers(0, n, size=(k, n), dtype=np.int32)
        counts = np.bincount((idx + (np.arange(k) * n)[:, None]).ravel(), minlength=k * n).reshape(k, n)
        means[:, c0:c1] = d @ (counts.T / n)
    alpha = (1.0 - confidence) / 2.0
    theta = d.mean(axis=1)
    if method == "percentile" or n < 3:
        lo_q = np.full(m, alpha)
        hi_q = np.full(m, 1 - alpha)
    else:
        # bias correction: share of resampled means below the estimate
        below = (means < theta[:, None]).mean(axis=1) + 0.5 * (means == theta[:, None]).mean(axis=1)
        below = np.clip(below, 1.0 / (n_resamples + 1), 1 - 1.0 / (n_resamples + 1))
        z0 = _norm_ppf(below)
        # acceleration from the closed-form jackknife of the mean
        jack = (d.sum(axis=1, keepdims=True) - d) / (n - 1)
        u = jack.mean(axis=1, keepdims=True) - jack
        num = (u**3).sum(axis=1)
        den = 6.0 * np.power((u**2).sum(axis=1), 1.5)
        with np.errstate(divide="ignore", invalid="ignore"):
            acc = np.where(den > 0, num / den, 0.0)
        z_lo, z_hi = _norm_ppf(alpha), _norm_ppf(1 - alpha)
        with np.errstate(divide="ignore", invalid="ignore"):
            lo_q = _norm_cdf(z0 + (z0 + z_lo) / (1 - acc * (z0 + z_lo)))
            hi_q = _norm_cdf(z0 + (z0 + z_hi) / (1 - acc * (z0 + z_hi)))
        degenerate = ~np.isfinite(lo_q) | ~np.isfinite(hi_q)
        lo_q = np.where(degenerate, alpha, lo_q)
        hi_q = np.where(degenerate, 1 - alpha, hi_q)
    means.sort(axis=1)
    return _row_quantiles(means, lo_q), _row_quantiles(means, hi_q)


def _row_quantiles(sorted_rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-row quantile ``q[i]`` of the sorted rows (linear interpolation, numpy's default)."""
    b = sorted_rows.shape[1]
    pos = np.clip(np.asarray(q, dtype=np.float64), 0.0, 1.0) * (b - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, b - 1)
    frac = pos - lo
    rows = np.arange(sorted_rows.shape[0])
    return sorted_rows[rows, lo] * (1 - frac) + sorted_rows[rows, hi] * frac


def bootstrap_ci(
    diffs: np.ndarray | list[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int | None = 0,
    method: Literal["bca", "percentile"] = "bca",
) -> tuple[float, float]:
    """Seeded paired-bootstrap CI of the mean of one set of paired differences (NaN, NaN when empty)."""
    d = np.asarray(diffs, dtype=np.float64).reshape(1, -1)
    lo, hi = bootstrap_ci_many(d, confidence=confidence, n_resamples=n_resamples, seed=seed, method=method)
    return float(lo[0]), float(hi[0])


def paired_p_value(diffs: np.ndarray | list[float], test: str = "t") -> float:
    """Two-sided p-value of a paired test on the differences (NaN with fewer than 2 pairs).

    All differences zero → 1.0 (no evidence of any difference). All differences equal and non-zero
    → 0.0 for the t-test (a deterministic shift; scipy would return NaN for zero variance).
    """
    from scipy import stats

    d = np.asarray(diffs, dtype=np.float64)
    if test not in TESTS:
        raise ValueError(f"unknown paired test {test!r}; use one of {', '.join(TESTS)}")
    if d.size < 2:
        return float("nan")
    scale = max(1.0, float(np.max(np.abs(d))))
    if np.all(np.abs(d) <= 1e-12 * scale):
        return 1.0
    if test == "t":
        if float(np.ptp(d)) <= 1e-9 * scale:  # a constant shift (up to rounding): no variance to test
            return 0.0
        with np.errstate(all="ignore"):
            res = stats.ttest_1samp(d, 0.0)
        p = float(res.pvalue)
        return 1.0 if math.isnan(p) else p
    nz = d[d != 0]
    if nz.size == 0:
        return 1.0
    res = stats.wilcoxon(d, zero_method="wilcox", alternative="two-sided")
    p = float(res.pvalue)
    return 1.0 if math.isnan(p) else p


def holm(p_values: list[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values; NaN entries stay NaN and are not counted in the family."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion: always inside [0, 1], sensible at 0/n and n/n and for small n."""
    if n <= 0:
        return float("nan"), float("nan")
    z = float(_norm_ppf(0.5 + confidence / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(
    values: list[float] | np.ndarray, confidence: float = 0.95, *, n_resamples: int = 10_000, seed: int | None = 0
) -> tuple[float | None, float | None, float | None, str | None]:
    """Mean of one run's scores with an interval that respects the scores' range: ``(mean, low, high,
    method)``. 0/1 scores (exact match, hit rate…) get the Wilson score interval of a proportion; any
    other scores a seeded bootstrap percentile interval of the mean, which never leaves [min, max] of the
    data (so a metric bounded in [0, 1] stays inside it). ``method`` is ``"wilson"`` or
    ``"bootstrap percentile"``; low/high are None with fewer than 2 values."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return None, None, None, None
    m = float(a.mean())
    if a.size < 2:
        return m, None, None, None
    if bool(np.all((a == 0) | (a == 1))):
        lo, hi = wilson_interval(int(a.sum()), int(a.size), confidence)
        return m, lo, hi, "wilson"
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, _CHUNK_ELEMENTS // a.size))
    means = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - start)
        means[start : start + k] = a[rng.integers(0, a.size, size=(k, a.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return m, float(lo), float(hi), "bootstrap percentile"


__all__ = [
    "TESTS", "bootstrap_ci", "bootstrap_ci_many", "holm", "mean_interval", "paired_p_value", "wilson_interval",
]  # fmt: skip
