"""``early_terminate: {type: hyperband}``: each trial reports the running mean of the metric as its
examples are scored, Optuna's successive-halving pruner stops the trials outside the top 1/eta at
each band, and a stopped trial's run is stored as ``pruned`` with the examples it scored. A
deterministic toy eval through the real harness: the pipeline returns the config's quality and the
scorer adds a fixed per-example difficulty, so every band's ranking is known in advance."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from ragtrail.evals import Dataset, Evaluation
from ragtrail.evals._sweep import run_sweep, sweep_runs_df
from ragtrail.store import open_store

N = 27
DIFFICULTY = dict(zip([f"e{i:02d}" for i in range(N)], np.random.default_rng(0).normal(0, 0.05, N).tolist()))
QUALITIES = [0.5, 0.9, 0.2, 0.8, 0.1, 0.7, 0.3, 0.6]


def _evaluate(store_path: str, calls: list, stop_at: tuple[float, int] | None = None):  # type: ignore[no-untyped-def]
    ds = Dataset.from_records([{"id": e, "input": e} for e in DIFFICULTY], name="toy-hb")

    def pipeline(question: str, config: dict) -> float:
        calls.append((config["quality"], question))
        if stop_at is not None and (config["quality"], question) == (stop_at[0], f"e{stop_at[1]:02d}"):
            raise KeyboardInterrupt  # the sweep process is stopped here
        return config["quality"]

    def quality(example, output) -> float:  # type: ignore[no-untyped-def]
        return float(output) + DIFFICULTY[example.id]

    ev = Evaluation("toy-hb", dataset=ds, pipeline=pipeline, scorers=[quality], max_concurrency=1, store=store_path,
                    progress=False)  # fmt: skip

    def evaluate(config: dict, resume: str | None = None):  # type: ignore[no-untyped-def]
        return ev.run(config=config, resume=resume)

    evaluate.resumable = True  # type: ignore[attr-defined]
    return evaluate


def _spec(early: bool) -> dict:
    spec = {"method": "grid", "metric": {"name": "quality", "goal": "maximize"},
            "parameters": {"quality": {"values": QUALITIES}}}  # fmt: skip
    if early:
        spec["early_terminate"] = {"type": "hyperband", "min_iter": 3, "eta": 3}
    return spec


def test_hyperband_prunes_hopeless_trials_and_keeps_the_best(traced) -> None:  # type: ignore[no-untyped-def]
    full_calls: list = []
    full = run_sweep(_spec(False), _evaluate(traced.store_path, full_calls), store=traced.store_path)
    calls: list = []
    res = run_sweep(_spec(True), _evaluate(traced.store_path, calls), store=traced.store_path)
    states = {t.params["quality"]: (t.state, t.examples) for t in res.trials}
    # at band 3 a trial goes on only when it is in the top 1/3 of those that reached it: here only the
    # first trial and the best (0.9) do; the later ones, all worse than 0.9 at band 3, stop there
    assert states == {0.5: ("complete", N), 0.9: ("complete", N),
                      **dict.fromkeys(QUALITIES[2:], ("pruned", 3))}  # fmt: skip
    assert res.best.params == full.best.params == {"quality": 0.9}
    assert res.best.value == pytest.approx(full.best.value)
    assert len(full_calls) == 8 * N and len(calls) == 2 * N + 6 * 3  # 72 pipeline calls instead of 216
    pruned = next(t for t in res.trials if t.state == "pruned")
    assert pruned.value == pytest.approx(pruned.params["quality"] + np.mean(list(DIFFICULTY.values())[:3]))
    st = open_store(traced.store_path)
    df = sweep_runs_df(st, res.sweep_id)
    assert sorted(df.status) == ["finished"] * 2 + ["pruned"] * 6
    row = st.query("SELECT summary, lineage FROM runs WHERE run_id = ?", (pruned.run_id,))[0]
    assert "pruned by hyperband at 3 examples" in json.loads(row[0])["stopped_reason"]
    rec = json.loads(row[1])["sweep"]
    assert rec["state"] == "pruned" and list(rec["intermediate"]) == ["1", "2", "3"]
    assert st.query("SELECT COUNT(*) FROM run_results WHERE run_id = ?", (pruned.run_id,))[0][0] == 3
    # the CLI shows the sweep id and the pruned status
    from ragtrail.cli import app

    out = CliRunner().invoke(app, ["runs", "list", "--store", traced.store_path, "-n", "20"]).output
    assert res.sweep_id[:12] in out and "pruned" in out
    out = CliRunner().invoke(app, ["runs", "show", pruned.run_id, "--store", traced.store_path]).output
    assert f"sweep    {res.sweep_id}" in out and "status=pruned" in out


def test_a_resumed_hyperband_sweep_prunes_as_the_uninterrupted_one(traced) -> None:  # type: ignore[no-untyped-def]
    ref = run_sweep(_spec(True), _evaluate(traced.store_path, []), store=traced.store_path)
    with pytest.raises(KeyboardInterrupt):  # stopped inside trial 1 (0.9) at its 5th example, past band 3
        run_sweep(_spec(True), _evaluate(traced.store_path, [], stop_at=(0.9, 4)), store=traced.store_path,
                  sweep_id="sweep_hb_cut")  # fmt: skip
    calls: list = []
    res = run_sweep(_spec(True), _evaluate(traced.store_path, calls), store=traced.store_path, resume="sweep_hb_cut")
    assert [(t.params, t.state, t.examples) for t in res.trials] == [
        (t.params, t.state, t.examples) for t in ref.trials
    ]
    assert len(calls) == (N - 4) + 6 * 3  # the cut-short trial's missing examples, then the pruned ones


def test_the_harness_hook_sees_every_scored_example_and_can_stop_the_run(traced) -> None:  # type: ignore[no-untyped-def]
    """``Evaluation.run(on_example_scored=f)``: f gets each example's scores as they are stored; a
    reason it returns stops the run (the examples in flight finish); a stop asked after the last
    example started changes nothing."""
    ds = Dataset.from_records([{"id": f"x{i}", "input": str(i), "reference": str(i)} for i in range(6)], name="hook")
    ev = Evaluation("hook", dataset=ds, pipeline=lambda q: q, scorers=["exact_match"], max_concurrency=1,
                    store=traced.store_path, progress=False)  # fmt: skip
    seen: list = []

    def hook(example_id, scores):  # type: ignore[no-untyped-def]
        seen.append((example_id, scores["exact_match"].value))
        return "enough" if len(seen) == 2 else None

    run = ev.run(on_example_scored=hook)
    assert seen == [("x0", 1.0), ("x1", 1.0)] and run.status == "stopped"
    assert run.summary["stopped_reason"] == "enough" and run.summary["n_examples"] == 2
    seen.clear()
    run = ev.run(on_example_scored=lambda e, s: seen.append(e) or ("too late" if e == "x5" else None))
    assert len(seen) == 6 and run.status == "finished"
