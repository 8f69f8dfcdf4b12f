"""Paired comparison statistics: accuracy and speed, against scipy.stats.bootstrap in the same run.

    .venv/bin/python -m benchmarks.compare_stats           # full
    .venv/bin/python -m benchmarks.compare_stats --quick   # smaller

1. Coverage: 1,000 simulated pairs of runs with a known effect; the share of 95% CIs that cover the
   true delta (target 95% ± 2%), for ragtrail's vectorised BCa bootstrap and scipy's BCa bootstrap.
2. Speed: one paired-bootstrap CI (10,000 resamples, BCa) of n paired differences, ragtrail vs
   ``scipy.stats.bootstrap(..., paired=True, method="BCa")``; ratio and the largest difference of bounds.
3. ``compare()`` end to end on a SQLite store: two runs x 5 metrics x N examples.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
from scipy import stats

from ragtrail.evals._stats import bootstrap_ci, bootstrap_ci_many


def _pairs(rng: np.random.Generator, sims: int, n: int, effect: float) -> np.ndarray:
    diff = rng.beta(2, 2, (sims, n))
    a = np.clip(diff + rng.normal(0, 0.1, (sims, n)), 0, 1)
    b = np.clip(diff + effect + rng.normal(0, 0.1, (sims, n)), 0, 1)
    return b - a


def coverage(sims: int, n: int, scipy_sims: int) -> None:
    rng = np.random.default_rng(2026)
    d = _pairs(rng, sims, n, 0.04)
    true = float(_pairs(np.random.default_rng(7), 1, 4_000_000, 0.04).mean())
    t0 = time.perf_counter()
    lo, hi = bootstrap_ci_many(d, n_resamples=2000, seed=0)
    t_ours = time.perf_counter() - t0
    cov = float(np.mean((lo <= true) & (true <= hi)))
    t0 = time.perf_counter()
    hits = 0
    for i in range(scipy_sims):
        r = stats.bootstrap((d[i],), np.mean, n_resamples=2000, method="BCa", random_state=i)
        hits += r.confidence_interval.low <= true <= r.confidence_interval.high
    t_scipy = time.perf_counter() - t0
    print(f"coverage ({sims} simulations, n={n}): ragtrail {cov:.3f} in {t_ours:.2f} s; "
          f"scipy {hits / scipy_sims:.3f} over {scipy_sims} simulations in {t_scipy:.2f} s "
          f"(per simulation: ragtrail {t_ours / sims * 1e3:.2f} ms, scipy {t_scipy / scipy_sims * 1e3:.1f} ms, "
          f"ratio {(t_scipy / scipy_sims) / (t_ours / sims):.0f}x)")


def speed(sizes: list[int], repeats: int) -> None:
    rng = np.random.default_rng(1)
    for n in sizes:
        a = rng.random(n)
        b = np.clip(a + rng.normal(0.02, 0.1, n), 0, 1)
        d = b - a
        best_ours = best_scipy = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            lo, hi = bootstrap_ci(d, n_resamples=10_000, seed=0)
            best_ours = min(best_ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            r = stats.bootstrap((a, b), lambda x, y, axis=-1: np.mean(y - x, axis=axis), paired=True,
                                n_resamples=10_000, method="BCa", random_state=0)  # fmt: skip
            best_scipy = min(best_scipy, time.perf_counter() - t0)
        gap = max(abs(lo - r.confidence_interval.low), abs(hi - r.confidence_interval.high))
        print(f"n={n:>6}: ragtrail {best_ours * 1e3:8.1f} ms, scipy {best_scipy * 1e3:8.1f} ms, "
              f"ratio {best_scipy / best_ours:5.1f}x; CI [{lo:+.4f}, {hi:+.4f}] vs scipy "
              f"[{r.confidence_interval.low:+.4f}, {r.confidence_interval.high:+.4f}] (max gap {gap:.4f})")


def end_to_end(n: int) -> None:
    import sys

    from ragtrail.evals._compare import compare
    from ragtrail.store import open_store
    sys.path.insert(0, "tests")
    from test_compare_support import make_run

    with tempfile.TemporaryDirectory() as tmp:
        s = open_store(f"{tmp}/bench.db")
        rng = np.random.default_rng(0)
        ids = [f"q{i}" for i in range(n)]
        for shift in (0.0, 0.01):
            scores = {f"m{k}": {e: float(np.clip(v + shift, 0, 1)) for e, v in zip(ids, rng.random(n))} for k in range(5)}
            make_run(s, "bench", scores, latency_ms=dict.fromkeys(ids, 100.0))
        t0 = time.perf_counter()
        cmp = compare(s, "bench:v1", "bench:v2", operational=True)
        dt = time.perf_counter() - t0
        print(f"compare(): 2 runs x {len(cmp.metrics)} metrics x {n} examples in {dt:.2f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    if args.quick:
        coverage(1000, 100, 50)
        speed([100, 1000], 2)
        end_to_end(1000)
    else:
        coverage(1000, 200, 200)
        speed([100, 1000, 10_000], 3)
        end_to_end(5000)


if __name__ == "__main__":
    main()
