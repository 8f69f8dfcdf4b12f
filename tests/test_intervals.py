"""Per-run intervals stay inside the metric's range: Wilson for 0/1 scores, bootstrap percentile otherwise."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from ragtrail.evals import Dataset, Evaluation, scorers
from ragtrail.evals._report import build_report
from ragtrail.evals._stats import mean_interval, wilson_interval


@pytest.fixture(autouse=True)
def _no_tracing_left_behind():  # type: ignore[no-untyped-def]
    """Evaluations start ragtrail when it is not running; stop it so the next test starts clean."""
    yield
    import ragtrail

    ragtrail.shutdown()


def test_wilson_for_exact_match_stays_in_0_1() -> None:
    # the case: exact match 0.8 on 5 examples (a t-interval gave [0.24, 1.36])
    m, lo, hi, method = mean_interval([1, 1, 1, 1, 0])
    assert method == "wilson" and m == 0.8
    assert lo == pytest.approx(0.3755, abs=1e-3) and hi == pytest.approx(0.9638, abs=1e-3)
    assert wilson_interval(5, 5)[1] == 1.0 and wilson_interval(0, 5)[0] == 0.0
    assert 0 < wilson_interval(0, 5)[1] < 0.6  # all wrong is still uncertain on 5 examples


def test_wilson_covers_about_95_percent() -> None:
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(2000):
        k = int(rng.binomial(30, 0.8))
        lo, hi = wilson_interval(k, 30)
        hits += lo <= 0.8 <= hi
    assert 0.92 <= hits / 2000 <= 0.98


def test_bootstrap_percentile_for_graded_scores_stays_in_range() -> None:
    vals = [1.0, 0.9, 0.95, 1.0, 0.2]
    m, lo, hi, method = mean_interval(vals)
    assert method == "bootstrap percentile"
    assert min(vals) <= lo < m < hi <= 1.0
    assert mean_interval(vals) == (m, lo, hi, method)  # seeded: the same report twice
    assert mean_interval([0.5]) == (0.5, None, None, None) and mean_interval([]) == (None, None, None, None)


def test_report_labels_the_interval(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = str(tmp_path / "s.db")
    ds = Dataset.from_records([{"id": f"q{i}", "input": str(i), "reference": str(i)} for i in range(5)], name="toy")
    run = Evaluation("toy", dataset=ds, pipeline=lambda q: q if q != "4" else "no", store=store, progress=False,
                     scorers=[scorers.exact_match(), scorers.token_f1()]).run()  # fmt: skip
    from ragtrail import Client

    page = build_report(Client(store).store, [run.ref])
    data = json.loads(re.search(r'<script id="ragtrail-data" type="application/json">(.*?)</script>', page, re.S)[1])
    rows = {m["metric"]: m for m in data["runs"][0]["metrics"]}
    em = rows["exact_match"]
    assert em["mean"] == 0.8 and em["ci_method"] == "wilson" and 0.3 < em["ci_low"] and em["ci_high"] < 1.0
    assert rows["token_f1"]["ci_method"] == "wilson"  # these token F1 scores happen to be 0/1 as well
    assert "Wilson for 0/1 scores, bootstrap percentile otherwise" in page


def test_operational_metrics_are_their_own_holm_family(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ragtrail import Client
    from ragtrail.evals import compare
    from ragtrail.evals._compare import OPERATIONAL
    from ragtrail.evals._stats import holm

    store = str(tmp_path / "s.db")
    ds = Dataset.from_records([{"id": f"q{i}", "input": str(i), "reference": str(i)} for i in range(30)], name="t")

    def run(pipeline):  # type: ignore[no-untyped-def]
        return Evaluation("holm", dataset=ds, pipeline=pipeline, store=store, progress=False,
                          scorers=[scorers.exact_match(), scorers.token_f1()]).run()  # fmt: skip

    a, b = run(lambda q: q), run(lambda q: q if int(q) % 3 else "wrong")
    cmp = compare(Client(store).store, a, b, operational=True)
    quality = [m for m in cmp.metrics if m.metric not in OPERATIONAL]
    operational = [m for m in cmp.metrics if m.metric in OPERATIONAL]
    assert quality and operational
    expected = holm([m.p_value for m in quality])
    assert [m.p_adjusted for m in quality] == pytest.approx(list(expected), nan_ok=True)
