"""A sweep killed with SIGKILL at a random trial and example resumes into exactly the sequence of
configs that the uninterrupted sweep runs, for grid, seeded random, seeded bayes and unseeded random
(whose draws follow the sweep id): finished trials are not run again, the cut-short trial's run is
finished in place (only its missing examples run), and no run is left ``running``. Each sweep runs
in a subprocess through the real eval harness (an eval file, a deterministic pipeline, the built-in
token_f1 scorer); no LLM is involved."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ragtrail.store import open_store

N_EXAMPLES = 5
WORDS = "alpha beta gamma delta epsilon zeta eta theta".split()

PIPELINE = """
import os, signal
from ragtrail.evals import current_trial

WORDS = "alpha beta gamma delta epsilon zeta eta theta".split()
LOG = os.environ["SWEEP_LOG"]
KILL = os.environ.get("SWEEP_KILL_AT")  # "trial,example": die there, as kill -9 would


def answer(question, config=None):
    trial = current_trial()
    with open(LOG, "a") as f:
        f.write(f"{trial.number} {question}\\n")
    if KILL and KILL == f"{trial.number},{question.split()[-1]}":
        os.kill(os.getpid(), signal.SIGKILL)
    i = int(question.split()[-1])
    n = max(1, min(len(WORDS), int(round(config["top_k"]))))
    junk = ["noise"] * int(round(config["temperature"] * 4)) + [config["mode"]] * (i % 2)
    return " ".join(WORDS[:n] + junk)
"""

DRIVER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from ragtrail.evals._sweep import run_sweep
res = run_sweep(sys.argv[2], store=sys.argv[3], sweep_id=sys.argv[4] if sys.argv[5] == "new" else None,
                resume=sys.argv[4] if sys.argv[5] == "resume" else None)
print(json.dumps([t.params for t in res.trials]))
"""

SWEEPS = {
    "grid": "method: grid\nparameters:\n  top_k: {values: [2, 5, 8]}\n  mode: {values: [x, y]}\n"
    "  temperature: {value: 0.25}\n",
    "random-seeded": "method: random\nseed: 11\nrun_cap: 6\nparameters:\n  top_k: {min: 1, max: 8}\n"
    "  mode: {values: [x, y]}\n  temperature: {distribution: q_uniform, min: 0, max: 1, q: 0.25}\n",
    "bayes-seeded": "method: bayes\nseed: 3\nrun_cap: 6\nparameters:\n  top_k: {distribution: q_normal, mu: 5, sigma: 2, q: 1}\n"
    "  mode: {values: [x, y]}\n  temperature: {distribution: uniform, min: 0.0, max: 1.0}\n",
    "random-unseeded": "method: random\nrun_cap: 6\nparameters:\n  top_k: {min: 1, max: 8}\n"
    "  mode: {values: [x, y]}\n  temperature: {distribution: beta, a: 2, b: 2}\n",
}


def _setup(d: Path, method: str) -> None:
    d.mkdir()
    (d / "qa.jsonl").write_text(
        "".join(json.dumps({"id": f"e{i}", "input": f"question {i}", "reference": " ".join(WORDS[:5])}) + "\n"
                for i in range(N_EXAMPLES))
    )  # fmt: skip
    (d / "resume_pipe.py").write_text(PIPELINE)
    (d / "eval.yaml").write_text(
        "name: kill-eval\ndataset: {path: qa.jsonl, name: kill-qa}\npipeline: resume_pipe:answer\n"
        "scorers: [token_f1]\nconfig: {top_k: 1, temperature: 0.0, mode: x}\nmax_concurrency: 1\n"
    )
    (d / "sweep.yaml").write_text("eval: eval.yaml\nmetric: {name: token_f1, goal: maximize}\n" + SWEEPS[method])
    (d / "driver.py").write_text(DRIVER)


def _sweep(d: Path, store: str, sweep_id: str, mode: str, log: Path, kill: str | None = None):  # type: ignore[no-untyped-def]
    env = {**os.environ, "SWEEP_LOG": str(log), "HF_HUB_OFFLINE": "1"}
    if kill:
        env["SWEEP_KILL_AT"] = kill
    return subprocess.run([sys.executable, str(d / "driver.py"), str(d), str(d / "sweep.yaml"), store, sweep_id, mode],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip


def _runs(store: str, sweep_id: str) -> list[tuple]:
    s = open_store(store)
    try:
        rows = s.query("SELECT version, config, status, run_id FROM runs WHERE sweep_id = ? ORDER BY version",
                       (sweep_id,))  # fmt: skip
        return [(v, json.loads(c), st, rid, s.query("SELECT COUNT(*) FROM run_examples WHERE run_id = ?", (rid,))[0][0])
                for v, c, st, rid in rows]  # fmt: skip
    finally:
        s.close()


@pytest.mark.slow
@pytest.mark.parametrize("method", list(SWEEPS))
def test_sigkill_at_a_random_trial_and_example_then_resume_runs_the_same_sequence(tmp_path, method) -> None:  # type: ignore[no-untyped-def]
    d = tmp_path / "sweep"
    _setup(d, method)
    sweep_id = "sweep_00c0ffee00c0ffee"
    # the uninterrupted sweep
    ref_store = str(tmp_path / "ref.db")
    done = _sweep(d, ref_store, sweep_id, "new", tmp_path / "ref.log")
    assert done.returncode == 0, done.stderr[-3000:]
    ref = _runs(ref_store, sweep_id)
    assert len(ref) == 6 and all(r[2] == "finished" for r in ref)
    # the same sweep killed at a random trial and example, then resumed
    k, j = random.randrange(1, 5), random.randrange(N_EXAMPLES)
    where = f"killed at trial {k}, example {j}"
    store = str(tmp_path / "cut.db")
    cut = _sweep(d, store, sweep_id, "new", tmp_path / "cut.log", kill=f"{k},{j}")
    assert cut.returncode == -9, (where, cut.returncode, cut.stderr[-2000:])
    before = _runs(store, sweep_id)
    assert len(before) == k + 1 and before[-1][2] == "running", where  # the cut-short trial's run
    again = _sweep(d, store, sweep_id, "resume", tmp_path / "resume.log")
    assert again.returncode == 0, (where, again.stderr[-3000:])
    after = _runs(store, sweep_id)
    assert [r[1] for r in after] == [r[1] for r in ref], where  # exactly the uninterrupted sequence of configs
    assert all(r[2] == "finished" and r[4] == N_EXAMPLES for r in after), (where, after)
    assert [r[3] for r in after[: k + 1]] == [r[3] for r in before], where  # the cut-short run finished in place
    resumed = (tmp_path / "resume.log").read_text().split("\n")[:-1]
    trials_rerun = sorted({int(line.split()[0]) for line in resumed})
    assert trials_rerun == list(range(k, 6)), where  # finished trials never ran again
    assert sum(line.startswith(f"{k} ") for line in resumed) == N_EXAMPLES - j, where  # only the missing examples
    assert json.loads(again.stdout.strip().splitlines()[-1]) == json.loads(done.stdout.strip().splitlines()[-1])


def test_a_function_sweep_cut_short_marks_the_old_run_failed_and_runs_the_trial_again(traced, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A ``function:`` trial cannot be continued in place: its cut-short run is marked failed (never
    left running) and the trial runs again; a trial whose evaluation raises after its run started is
    recorded failed, and a resume does not take it for a cut-short one."""
    from ragtrail.evals import Dataset, Evaluation
    from ragtrail.evals._sweep import run_sweep

    ds = Dataset.from_records([{"id": f"e{i}", "input": str(i), "reference": "yes"} for i in range(4)], name="fn-qa")
    state = {"stop": True}

    def pipeline(question: str, config: dict) -> str:
        if state["stop"] and config["k"] == 3 and question == "2":
            raise KeyboardInterrupt  # the sweep process is stopped here
        return "yes" if config["k"] >= 2 else "no"

    ev = Evaluation("fn-eval", dataset=ds, pipeline=pipeline, scorers=["exact_match"], max_concurrency=1,
                    progress=False, store=traced.store_path)  # fmt: skip

    def evaluate(config: dict):  # type: ignore[no-untyped-def]
        run = ev.run(config=config)
        if config["k"] == 1:
            raise RuntimeError("post-processing failed")  # after its run was created and finished
        return run

    spec = {"method": "random", "seed": 0, "run_cap": 5, "metric": {"name": "exact_match", "goal": "maximize"},
            "parameters": {"k": {"values": [1, 2, 3]}}}  # fmt: skip  # draws k = 2, 1, 3, 2, 1
    state["stop"] = False
    ref = run_sweep(spec, evaluate, store=traced.store_path, sweep_id="sweep_fn_ref")
    state["stop"] = True
    with pytest.raises(KeyboardInterrupt):  # inside trial 2 (k = 3), at its third example
        run_sweep(spec, evaluate, store=traced.store_path, sweep_id="sweep_fn_cut")
    state["stop"] = False
    res = run_sweep(spec, evaluate, store=traced.store_path, resume="sweep_fn_cut")
    draws = [(t.params["k"], t.state) for t in ref.trials]
    assert draws == [(2, "complete"), (1, "failed"), (3, "complete"), (2, "complete"), (1, "failed")]
    assert [(t.params["k"], t.state) for t in res.trials] == draws
    s = open_store(traced.store_path)
    rows = s.query("SELECT status, summary FROM runs WHERE sweep_id = 'sweep_fn_cut' ORDER BY version")
    assert [r[0] for r in rows] == ["finished", "finished", "failed", "finished", "finished", "finished"]
    assert "trial 2 ran again as a new run" in json.loads(rows[2][1])["stopped_reason"]  # the cut-short run
