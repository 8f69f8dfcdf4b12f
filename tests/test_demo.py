"""`make demo`'s job (python -m ragtrail.demo) end to end, into a temporary store."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_offline_and_reports(tmp_path):
    store = tmp_path / "demo.db"
    report = tmp_path / "report.html"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAGTRAIL_HOME": str(tmp_path / "home")}
    env.pop("OPENAI_BASE_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "ragtrail.demo", "--store", str(store), "--report", str(report)],
        capture_output=True, text=True, env=env, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]"):
        assert step in out
    assert str(store) in out  # says where the store is
    assert "notebooks/02_analyze_traces.ipynb" in out  # and what to open next
    assert "rag-demo:v1" in out and "rag-demo:v2" in out
    assert report.exists() and report.stat().st_size > 1000

    import ragtrail

    client = ragtrail.Client(str(store))
    spans = client.spans_df(project="ragtrail-demo")
    assert {"CHAIN", "RETRIEVER", "EMBEDDING", "LLM"} <= set(spans["kind"].dropna())
    llm = spans[spans.kind == "LLM"]
    assert (llm["input_tokens"] > 0).all() and llm["cost_usd"].notna().all()
    run = client.run("rag-demo:v2")
    assert run.summary["n_examples"] == 36
    # the demo's lesson: the tight context budget costs answer quality, significantly, and saves money
    assert run.config["context_chars"] == 1000 and client.run("rag-demo:v1").config["context_chars"] == 120
    rows = {m.metric: m for m in client.compare("rag-demo:v1", "rag-demo:v2").metrics}
    assert rows["token_f1"].significant and rows["token_f1"].delta > 0.1
    assert rows["recall@4"].delta == 0  # the same retrieval: the difference is what reaches the model
    assert rows["cost_usd"].significant and rows["cost_usd"].delta > 0
    assert "Conclusion: rag-demo:v2 is better on" in out and "token_f1" in out
