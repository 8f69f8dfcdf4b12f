"""Faults and bad input: ``kill -9`` halfway through a run then resume (results equal an uninterrupted
run's, no finished example's pipeline called again), and the ``ragtrail eval run`` YAML path with
malformed YAML, unknown scorers and missing dataset fields. No LLM is involved."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ragtrail.cli import app
from ragtrail.evals import load_run

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import ragtrail
    from ragtrail import semconv
    from ragtrail.evals import Dataset, Evaluation, scorers

    store, calls_path, kill_after, resume = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    ragtrail.init(project="kill", store=store)
    ds = Dataset.from_records(
        [{"id": f"e{i:02d}", "input": f"q {i}", "reference": f"answer {i}", "relevant": {f"d{i}": 1, "dx": 1}}
         for i in range(24)], name="kill")
    state = {"n": 0}

    def pipe(q):
        with open(calls_path, "a") as f:
            f.write(q + "\\n")
            f.flush()
            os.fsync(f.fileno())
        state["n"] += 1
        if kill_after and state["n"] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: like an OOM kill
        i = int(q.split()[1])
        with ragtrail.span("retrieve", kind=semconv.RETRIEVER) as s:
            ragtrail.record_documents(s, [{"id": f"d{(i * 7) % 24}"}, {"id": "dx"}, {"id": f"d{i}"}])
        return f"answer {i}" if i % 3 else "something else"

    @scorers.scorer(name="words", batched=True)
    def words(items):
        return [float(len(o.split())) for _e, o, _t in items]

    ev = Evaluation("killme", ds, pipe, [scorers.recall_at_k(2), scorers.ndcg_at_k(3), scorers.token_f1(), words],
                    max_concurrency=3, batch_size=7, progress=False)
    run = ev.run(config={"k": 3}, resume=resume or None)
    print(run.ref, run.status)
    """
)


def _run(tmp: Path, store: str, calls: Path, kill_after: int, resume: str = "") -> subprocess.CompletedProcess[str]:
    script = tmp / "kill_script.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, str(script), store, str(calls), str(kill_after), resume],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip


def _results(store: str, ref: str) -> dict[tuple[str, str], tuple[float | None, str]]:
    run = load_run(store, ref)
    return {(r["example_id"], r["scorer"]): (r["score"], r["status"]) for r in run.results()}


@pytest.mark.slow
def test_kill_9_then_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    store = str(tmp_path / "killed.db")
    calls = tmp_path / "calls.txt"
    p = _run(tmp_path, store, calls, kill_after=11)
    assert p.returncode == -signal.SIGKILL, p.stderr
    first_calls = calls.read_text().split("\n")[:-1]
    assert 11 <= len(first_calls) <= 13  # the other workers may have started before the kill
    run = load_run(store, "killme:v1")
    assert run.status == "running"  # killed: never finished
    finished = {e["example_id"] for e in run.examples() if e["status"] == "ok"}
    assert 0 < len(finished) < 24
    words_done = {r["example_id"] for r in run.results() if r["scorer"] == "words"}
    assert finished - words_done, "expected finished examples whose batched score was still pending"

    calls.write_text("")
    p = _run(tmp_path, store, calls, kill_after=0, resume="killme:v1")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["killme:v1", "finished"]
    second_calls = calls.read_text().split("\n")[:-1]
    rerun_ids = {f"e{int(q.split()[1]):02d}" for q in second_calls}
    assert not (rerun_ids & finished), "a finished example's pipeline was called again"
    assert rerun_ids | finished == {f"e{i:02d}" for i in range(24)}

    clean_store = str(tmp_path / "clean.db")
    p = _run(tmp_path, clean_store, tmp_path / "calls_clean.txt", kill_after=0)
    assert p.returncode == 0, p.stderr
    resumed, clean = _results(store, "killme:v1"), _results(clean_store, "killme:v1")
    assert len(clean) == 24 * 4
    assert resumed == clean
    s_resumed = load_run(store, "killme:v1").summary
    s_clean = load_run(clean_store, "killme:v1").summary
    assert s_resumed["metrics"] == s_clean["metrics"]


# --------------------------------------------------------------------------- eval.yaml
PIPELINE_MODULE = textwrap.dedent(
    """
    import ragtrail
    from ragtrail import semconv

    def answer(question, config):
        with ragtrail.span("search", kind=semconv.RETRIEVER) as s:
            ragtrail.record_documents(s, [{"id": "d1"}, {"id": "d9"}][: config["top_k"]])
        return {"answer": "Paris", "contexts": None} if False else "Paris"

    def shouty(output):
        return output.isupper()
    """
)


@pytest.fixture(autouse=True)
def _no_tracing_leak():  # type: ignore[no-untyped-def]
    """`eval run` initialises tracing in-process (CliRunner); leave no global state to later tests."""
    yield
    import ragtrail
    from ragtrail.tracing import get_config

    if get_config() is not None:
        ragtrail.shutdown()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "my_rag_app.py").write_text(PIPELINE_MODULE)
    (tmp_path / "qa.jsonl").write_text(
        json.dumps({"id": "a", "question": "capital of France?", "answer": "Paris", "relevant": {"d1": 1}}) + "\n"
        + json.dumps({"id": "b", "question": "capital of Peru?", "answer": "Lima", "relevant": {"d7": 1}}) + "\n"
    )  # fmt: skip
    return tmp_path


def _yaml(project: Path, body: str) -> Path:
    p = project / "eval.yaml"
    p.write_text(textwrap.dedent(body))
    return p


GOOD = """
name: capitals
dataset: {path: qa.jsonl, fields: {input: question, reference: answer}}
pipeline: my_rag_app:answer
scorers:
  - recall_at_k: {k: 1}
  - name: ndcg_at_k
    k: 2
  - exact_match
  - my_rag_app:shouty
config: {top_k: 2}
max_concurrency: 2
"""


def test_eval_run_from_yaml(project: Path, store_path: str) -> None:
    cfg = _yaml(project, GOOD)
    r = CliRunner().invoke(app, ["eval", "run", str(cfg), "-s", store_path, "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "capitals:v1" in r.output and "recall@1" in r.output
    run = load_run(store_path, "capitals:v1")
    assert run.config == {"top_k": 2} and run.lineage["pipeline"] == "my_rag_app:answer"
    assert run.metrics == {"recall@1": 0.5, "ndcg@2": pytest.approx(0.5), "exact_match": 0.5, "shouty": 0.0}
    r = CliRunner().invoke(app, ["eval", "run", str(cfg), "-s", store_path, "--dry-run"])
    assert r.exit_code == 0 and "config OK" in r.output and "2 examples" in r.output
    r = CliRunner().invoke(app, ["eval", "run", str(cfg), "-s", store_path, "--resume", "capitals:v1", "--no-progress"])
    assert r.exit_code == 0 and "capitals:v1" in r.output
    out = CliRunner().invoke(app, ["runs", "show", "capitals:v1", "-s", store_path, "--examples"]).output
    assert "recall@1" in out and "0.5000" in out and "dataset  qa:" in out
    out = CliRunner().invoke(app, ["runs", "list", "-s", store_path]).output
    assert "capitals:v1" in out
    out = CliRunner().invoke(app, ["runs", "show", "capitals:v1", "-s", store_path, "--json"]).output
    assert json.loads(out)["summary"]["metrics"]["exact_match"]["n_ok"] == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("name: x\ndataset: qa.jsonl\n  pipeline: [oops\n", r"eval\.yaml:\d+:\d+: malformed YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        (GOOD.replace("exact_match", "exact_mtch"), "unknown scorer 'exact_mtch'.*Did you mean exact_match"),
        (
            GOOD.replace("max_concurrency: 2", "max_concurrency: 0"),
            "max_concurrency: Input should be greater than or equal to 1",
        ),
        (GOOD.replace("my_rag_app:answer", "my_rag_app:nope"), "has no attribute 'nope'"),
        (
            GOOD.replace("input: question", "input: query"),
            r"qa\.jsonl:1: field 'query' \(the example input\) is missing",
        ),
        (GOOD.replace("qa.jsonl", "missing.jsonl"), "missing.jsonl.*does not exist"),
        (GOOD + "colour: blue\n", "colour: Extra inputs are not permitted"),
    ],
)
def test_eval_yaml_errors_are_clear(project: Path, store_path: str, body: str, message: str) -> None:
    cfg = _yaml(project, body)
    r = CliRunner().invoke(app, ["eval", "run", str(cfg), "-s", store_path, "--no-progress"])
    assert r.exit_code != 0
    import re

    assert r.exception is not None and re.search(message, str(r.exception)), str(r.exception)
