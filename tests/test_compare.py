"""client.compare / ragtrail.evals._compare on runs inserted straight into a real SQLite store
(and one on the real PostgreSQL server): pairing, CIs, Holm, regressions, errors."""

from __future__ import annotations

import numpy as np
import pytest
from test_compare_support import make_run

import ragtrail
from ragtrail._exceptions import ConfigError, EvalError, RagtrailWarning
from ragtrail.evals._compare import COLUMNS, compare
from ragtrail.store import open_store


@pytest.fixture
def store(store_path):  # type: ignore[no-untyped-def]
    s = open_store(store_path)
    yield s
    s.close()


def _scores(rng: np.random.Generator, n: int, shift: float) -> dict[str, float]:
    base = rng.beta(2, 2, n)
    return {f"q{i:03d}": float(np.clip(base[i] + shift, 0, 1)) for i in range(n)}


def test_compare_columns_delta_ci_and_significance(store) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    n = 120
    base = rng.beta(2, 2, n)
    ids = [f"q{i:03d}" for i in range(n)]
    a_f1 = {e: float(base[i]) for i, e in enumerate(ids)}
    b_f1 = {e: float(np.clip(base[i] + 0.08 + rng.normal(0, 0.05), 0, 1)) for i, e in enumerate(ids)}
    same = {e: float(v) for e, v in zip(ids, rng.random(n))}
    make_run(store, "rag-qa", {"token_f1": a_f1, "recall@5": same})
    make_run(store, "rag-qa", {"token_f1": b_f1, "recall@5": same})
    cmp = ragtrail.Client(store).compare("rag-qa:v1", "rag-qa:v2")
    df = cmp.to_df()
    assert list(df.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert set(df.metric) == {"token_f1", "recall@5"}
    f1 = df.set_index("metric").loc["token_f1"]
    assert f1.n_pairs == n
    assert f1.delta == pytest.approx(f1.mean_b - f1.mean_a)
    assert f1.delta == pytest.approx(np.mean([b_f1[e] - a_f1[e] for e in ids]))
    assert f1.ci_low < f1.delta < f1.ci_high and f1.ci_low > 0
    assert f1.p_adjusted >= f1.p_value and f1.p_adjusted < 0.05
    assert bool(f1.significant) and cmp["token_f1"].verdict == "better"
    r5 = df.set_index("metric").loc["recall@5"]  # identical scores: CI contains 0, not significant
    assert r5.delta == 0 and r5.ci_low <= 0 <= r5.ci_high
    assert r5.p_value == 1.0 and not bool(r5.significant)
    # same seed → the same CI; the table renders with both runs named
    again = compare(store, "rag-qa:v1", "rag-qa:v2")
    assert again["token_f1"].ci_low == cmp["token_f1"].ci_low
    text = cmp.render()
    assert "rag-qa:v2 vs rag-qa:v1" in text and "token_f1" in text and "better" in text


def test_identical_runs_not_significant(store) -> None:  # type: ignore[no-untyped-def]
    s = _scores(np.random.default_rng(1), 40, 0.0)
    make_run(store, "rag-qa", {"em": s, "f1": s})
    make_run(store, "rag-qa", {"em": s, "f1": s})
    cmp = compare(store, "rag-qa:v1", "rag-qa:latest")
    assert not cmp.any_significant
    for m in cmp.metrics:
        assert m.ci_low <= 0 <= m.ci_high and m.delta == 0
    assert cmp.regressions == []


def test_regressions_carry_trace_ids_and_errors(store) -> None:  # type: ignore[no-untyped-def]
    a = {"q1": 1.0, "q2": 0.5, "q3": 0.2, "q4": 0.9}
    b = {"q1": 0.0, "q2": 0.5, "q3": 0.7, "q4": ("error", "judge timed out")}
    make_run(store, "rag-qa", {"faithfulness": a})
    make_run(store, "rag-qa", {"faithfulness": b})
    cmp = compare(store, "rag-qa:v1", "rag-qa:v2")
    m = cmp["faithfulness"]
    assert m.n_pairs == 3 and m.n_error_b == 1 and m.n_regressed == 2 and m.n_improved == 1
    reg = cmp.regressions_df()
    assert list(reg.example_id) == ["q4", "q1"]  # the error first, then the worst drop
    assert reg.iloc[0].status_b == "error" and reg.iloc[0].reason_b == "judge timed out"
    tids = dict(store.query("SELECT example_id, trace_id FROM run_results WHERE run_id = ?", (cmp.b.run_id,)))
    assert reg.iloc[1].trace_id_b == tids["q1"] and len(tids["q1"]) == 32
    assert list(cmp.improvements_df().example_id) == ["q3"]


def test_lower_is_better_operational_metrics(store) -> None:  # type: ignore[no-untyped-def]
    ids = [f"q{i}" for i in range(30)]
    s = dict.fromkeys(ids, 0.5)
    make_run(store, "rag-qa", {"f1": s}, latency_ms={e: 100.0 + i for i, e in enumerate(ids)})
    make_run(store, "rag-qa", {"f1": s}, latency_ms={e: 150.0 + i for i, e in enumerate(ids)})
    cmp = compare(store, "rag-qa:v1", "rag-qa:v2", operational=True)
    lat = cmp["latency_ms"]
    assert lat.delta == pytest.approx(50.0) and not lat.higher_is_better
    assert lat.verdict == "worse" and lat.n_regressed == 30
    assert "cost_usd" not in cmp  # no cost recorded anywhere: not compared


def test_dataset_versions_differ_pairs_shared_ids_with_warning(store) -> None:  # type: ignore[no-untyped-def]
    make_run(store, "rag-qa", {"f1": {"q1": 0.1, "q2": 0.2, "q3": 0.3}}, dataset_version="d1")
    make_run(store, "rag-qa", {"f1": {"q2": 0.4, "q3": 0.5, "q4": 0.9}}, dataset_version="d2")
    with pytest.warns(RagtrailWarning, match="dataset versions differ.*2 example ids"):
        cmp = compare(store, "rag-qa:v1", "rag-qa:v2")
    m = cmp["f1"]
    assert m.n_pairs == 2 and m.mean_a == pytest.approx(0.25) and m.mean_b == pytest.approx(0.45)
    assert any("dataset versions differ" in w for w in cmp.warnings)


def test_different_evaluations_error_unless_allowed(store) -> None:  # type: ignore[no-untyped-def]
    make_run(store, "rag-qa", {"f1": {"q1": 0.1, "q2": 0.2}})
    make_run(store, "other-eval", {"f1": {"q1": 0.3, "q2": 0.2}})
    with pytest.raises(EvalError, match=r"different evaluations.*allow_different=True"):
        compare(store, "rag-qa:v1", "other-eval:v1")
    with pytest.warns(RagtrailWarning, match="different evaluations"):
        cmp = compare(store, "rag-qa:v1", "other-eval:v1", allow_different=True)
    assert cmp["f1"].n_pairs == 2


def test_unknown_alias_version_evaluation_and_metric(store) -> None:  # type: ignore[no-untyped-def]
    make_run(store, "rag-qa", {"f1": {"q1": 0.1}})
    with pytest.raises(EvalError, match=r"no run 'rag-qa:production': rag-qa has versions v1 and aliases latest"):
        compare(store, "rag-qa:production", "rag-qa:v1")
    with pytest.raises(EvalError, match=r"no run 'rag-qa:v9'"):
        compare(store, "rag-qa:v9", "rag-qa:v1")
    with pytest.raises(EvalError, match=r"no runs named 'nope'"):
        compare(store, "nope:v1", "rag-qa:v1")
    with pytest.raises(ConfigError, match=r"metric 'ndcg@10' is not in run"):
        compare(store, "rag-qa:v1", "rag-qa:v1", metrics=["ndcg@10"])


def test_alias_resolves(store) -> None:  # type: ignore[no-untyped-def]
    from ragtrail.evals._gates import move_alias

    make_run(store, "rag-qa", {"f1": {"q1": 0.1, "q2": 0.3}})
    make_run(store, "rag-qa", {"f1": {"q1": 0.2, "q2": 0.5}})
    move_alias(store, "rag-qa:v1", "production")
    cmp = compare(store, "rag-qa:production", "rag-qa:latest")
    assert cmp.a.ref == "rag-qa:v1" and cmp.b.ref == "rag-qa:v2"
    assert cmp["f1"].delta == pytest.approx(0.15)


@pytest.mark.postgres
def test_compare_on_postgres(pg_url) -> None:  # type: ignore[no-untyped-def]
    s = open_store(pg_url)
    rng = np.random.default_rng(5)
    make_run(s, "rag-qa", {"f1": _scores(rng, 30, 0.0)})
    make_run(s, "rag-qa", {"f1": _scores(np.random.default_rng(5), 30, 0.1)})
    cmp = compare(s, "rag-qa:v1", "rag-qa:v2")
    assert cmp["f1"].n_pairs == 30 and cmp["f1"].delta > 0.05
    s.close()


def test_end_to_end_through_the_harness(traced, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Two real Evaluation runs (the pipeline is a deterministic function; no LLM), then compare,
    gate and promote them, and follow a regressed example to its stored trace."""
    from typer.testing import CliRunner

    from ragtrail.cli import app
    from ragtrail.evals import Dataset, Evaluation, scorers

    recs = [{"id": f"e{i:02d}", "input": f"name the colour number {i}", "reference": f"colour {i} is blue"} for i in range(30)]
    ds = Dataset.from_records(recs, name="colours")

    def pipeline(question: str, config: dict) -> str:
        with ragtrail.span("generate", kind="LLM"):
            n = int(question.rsplit(" ", 1)[-1])
            good = n % config["every"] != config["every"] - 1  # every=3: a third of the answers go wrong
            return f"colour {n} is blue" if good else "I do not know"

    ev = Evaluation("colours-qa", dataset=ds, pipeline=pipeline, scorers=[scorers.token_f1(), scorers.exact_match()],
                    store=traced.store_path, progress=False)  # fmt: skip
    v1 = ev.run(config={"every": 1000})
    v2 = ev.run(config={"every": 3})
    client = traced.client()
    client.set_alias(v1, "production")
    cmp = client.compare("colours-qa:production", v2)
    assert cmp.a.ref == "colours-qa:v1" and cmp.b.ref == "colours-qa:v2"
    em = cmp["exact_match"]
    assert em.n_pairs == 30 and em.mean_a == 1.0 and em.delta == pytest.approx(-10 / 30)
    assert em.ci_high < 0 and em.significant and em.verdict == "worse" and em.n_regressed == 10
    worst = cmp.regressions_df("exact_match")
    assert set(worst.example_id) == {f"e{i:02d}" for i in range(2, 30, 3)}
    trace = client.trace(worst.trace_id_b.iloc[0])  # the regressed example's trace is in the store
    assert any(s.name == "generate" for s in trace.spans)
    gates = tmp_path / "gates.yaml"
    gates.write_text("baseline: production\ngates:\n  - exact_match >= production - 0.05\n  - token_f1 >= 0.5\n")
    runner = CliRunner()
    res = runner.invoke(app, ["gate", "colours-qa:v2", "--gates", str(gates), "--store", traced.store_path])
    assert res.exit_code == 1, res.output
    res = runner.invoke(app, ["runs", "promote", "colours-qa:v2", "--gates", str(gates), "--store", traced.store_path])
    assert res.exit_code == 1 and client.run("colours-qa:production").ref == "colours-qa:v1"
    v3 = ev.run(config={"every": 1000})
    res = runner.invoke(app, ["runs", "promote", v3.ref, "--gates", str(gates), "--store", traced.store_path])
    assert res.exit_code == 0, res.output
    assert client.run("colours-qa:production").ref == "colours-qa:v3"
    res = runner.invoke(app, ["runs", "compare", "colours-qa:v1", "colours-qa:v2", "--store", traced.store_path])
    assert res.exit_code == 0 and "exact_match" in res.output and "Regressed examples" in res.output
