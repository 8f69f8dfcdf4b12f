"""The paired statistics: bootstrap CI coverage on simulated run pairs with a known effect, the
paired tests, and Holm's adjustment (checked against its definition)."""

from __future__ import annotations

import numpy as np
import pytest

from ragtrail.evals._stats import bootstrap_ci, bootstrap_ci_many, holm, paired_p_value


def _simulated_pairs(rng: np.random.Generator, sims: int, n: int, effect: float) -> np.ndarray:
    """Scores of two runs on the same n examples: a per-example difficulty shared by both runs
    (what makes pairing matter), run b better by ``effect`` on average, noise per run."""
    difficulty = rng.beta(2, 2, (sims, n))
    a = np.clip(difficulty + rng.normal(0, 0.1, (sims, n)), 0, 1)
    b = np.clip(difficulty + effect + rng.normal(0, 0.1, (sims, n)), 0, 1)
    return b - a


def test_ci_covers_true_delta_95_percent_of_1000_simulations() -> None:
    rng = np.random.default_rng(2026)
    effect, n, sims = 0.04, 200, 1000
    d = _simulated_pairs(rng, sims, n, effect)
    # the true mean difference (clipping at 0/1 shrinks the effect slightly): estimate it once,
    # precisely, from a very large sample of the same process
    true = float(_simulated_pairs(np.random.default_rng(7), 1, 4_000_000, effect).mean())
    lo, hi = bootstrap_ci_many(d, n_resamples=2000, seed=0)
    coverage = float(np.mean((lo <= true) & (true <= hi)))
    assert 0.93 <= coverage <= 0.97, coverage
    # and the interval is not trivially wide: it excludes 0 in most simulations at this effect size
    assert np.mean(lo > 0) > 0.9


def test_ci_coverage_binary_metric() -> None:
    """0/1 metrics (exact match, hit rate) are the hardest case for a normal approximation."""
    rng = np.random.default_rng(11)
    sims, n = 1000, 300
    a = (rng.random((sims, n)) < 0.55).astype(float)
    b = (rng.random((sims, n)) < 0.60).astype(float)
    lo, hi = bootstrap_ci_many(b - a, n_resamples=2000, seed=1)
    coverage = float(np.mean((lo <= 0.05) & (0.05 <= hi)))
    assert 0.93 <= coverage <= 0.97, coverage


def test_identical_runs_ci_contains_zero_and_not_significant() -> None:
    d = np.zeros(50)
    lo, hi = bootstrap_ci(d)
    assert lo <= 0 <= hi
    assert paired_p_value(d, "t") == 1.0
    assert paired_p_value(d, "wilcoxon") == 1.0


def test_bootstrap_is_seeded_and_matches_many() -> None:
    d = np.random.default_rng(3).normal(0.1, 1, 80)
    assert bootstrap_ci(d, seed=5) == bootstrap_ci(d, seed=5)
    assert bootstrap_ci(d, seed=5) != bootstrap_ci(d, seed=6)
    lo, hi = bootstrap_ci_many(np.vstack([d, d]), seed=5)
    assert (lo[0], hi[0]) == pytest.approx(bootstrap_ci(d, seed=5))
    # the percentile interval brackets the sample mean; BCa stays close to it
    plo, phi = bootstrap_ci(d, method="percentile")
    assert plo < d.mean() < phi
    assert abs(lo[0] - plo) < 0.1 and abs(hi[0] - phi) < 0.1


def test_paired_t_matches_scipy_and_constant_shift() -> None:
    from scipy import stats

    rng = np.random.default_rng(4)
    a = rng.normal(0.5, 0.2, 60)
    b = a + rng.normal(0.03, 0.1, 60)
    assert paired_p_value(b - a, "t") == pytest.approx(stats.ttest_rel(b, a).pvalue)
    assert paired_p_value(b - a, "wilcoxon") == pytest.approx(stats.wilcoxon(b, a).pvalue)
    assert paired_p_value(np.full(10, 0.1), "t") == 0.0
    assert np.isnan(paired_p_value(np.array([0.2]), "t"))
    with pytest.raises(ValueError, match="unknown paired test"):
        paired_p_value(b - a, "mann-whitney")


def test_holm_against_definition() -> None:
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    adj = holm(p)
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> monotone: 0.02, 0.03, 0.06, 0.06
    assert adj[3] == pytest.approx(0.02)
    assert adj[0] == pytest.approx(0.03)
    assert adj[2] == pytest.approx(0.06)
    assert adj[1] == pytest.approx(0.06)
    assert np.isnan(adj[4])
    assert holm([0.9, 0.8]).max() == 1.0
