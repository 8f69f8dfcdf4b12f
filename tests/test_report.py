"""`ragtrail report`: a self-contained HTML file built from two real harness runs (real spans in a real
SQLite store; the "LLM" is a deterministic function — no model), opened in headless Chromium
(Debian's `chromium`) to check that the charts rendered, the trace links resolve to embedded trace
trees, and nothing is fetched from the network."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

import ragtrail
from ragtrail.cli import app as cli_app
from ragtrail.evals import Dataset, Evaluation, scorers
from ragtrail.evals._report import build_report, write_report
from ragtrail.tracing import record_documents

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS = {f"d{i}": f"document {i} about topic {i % 5}" for i in range(20)}
NASTY = "</script><script>document.title='pwned'</script> & <b>bold</b>"


def _records() -> list[dict]:
    recs = []
    for i in range(24):
        recs.append({
            "id": f"q{i:02d}", "input": NASTY if i == 0 else f"what is topic {i % 5} number {i}?",
            "reference": f"topic {i % 5} number {i}", "relevant": {f"d{i % 20}": 1},
        })  # fmt: skip
    return recs


def pipeline(question: str, config: dict) -> dict:
    """Retrieval ranks the relevant doc at position config['rank'] on even examples; the fake LLM
    answers from the question (deterministic: no model)."""
    n = int(re.findall(r"\d+", question)[-1]) if re.findall(r"\d+", question) else 0
    with ragtrail.span("retrieve", kind="RETRIEVER") as sp:
        rel = f"d{n % 20}"
        others = [d for d in DOCS if d != rel][:4]
        ranked = others[: config["rank"]] + [rel] + others[config["rank"] :] if n % 2 == 0 else others
        record_documents(sp, [{"id": d, "score": 1.0 / (r + 1), "content": DOCS[d]} for r, d in enumerate(ranked)])
    with ragtrail.span("generate", kind="LLM"):
        words = question.split()
        answer = " ".join(words[2 : 2 + config["words"]])
    return {"answer": answer}


@pytest.fixture
def two_runs(traced):  # type: ignore[no-untyped-def]
    ds = Dataset.from_records(_records(), name="qa")
    ev = Evaluation("rag-qa", dataset=ds, pipeline=pipeline, store=traced.store_path, progress=False,
                    scorers=[scorers.recall_at_k(1), scorers.reciprocal_rank(), scorers.token_f1()])  # fmt: skip
    v1 = ev.run(config={"rank": 2, "words": 4})
    v2 = ev.run(config={"rank": 0, "words": 2})
    ragtrail.flush(10)
    return traced, v1, v2


def _dump_dom(path: str, tmp_path) -> str:  # type: ignore[no-untyped-def]
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000", "--dump-dom",
           f"file://{path}"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_report_renders_in_headless_chromium(two_runs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    traced, v1, v2 = two_runs
    client = traced.client()
    path = write_report(client.store, [v1.ref, v2.ref], tmp_path / "report.html")
    source = path.read_text()
    # self-contained: a CSP that forbids any fetch, and nothing that would load from elsewhere
    assert "Content-Security-Policy" in source and "default-src 'none'" in source
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", source, re.I)
    assert "url(" not in source and "@import" not in source
    assert NASTY not in source  # embedded data is escaped

    dom = _dump_dom(str(path), tmp_path)
    assert 'data-charts-rendered="4"' in dom and 'data-chart-errors="0"' in dom
    assert "<title>ragtrail report: rag-qa:v1 vs rag-qa:v2</title>" in dom  # the injected script never ran
    cmp = client.compare(v1.ref, v2.ref)
    quality = list(cmp.metrics)
    forest = re.search(r'<div class="chart" data-chart="forest"[^>]*data-rendered="1"[^>]*>(.*?)</svg>', dom, re.S)
    assert forest, "the forest plot was not rendered"
    assert forest.group(1).count('class="delta"') == len(quality) == 3
    assert forest.group(1).count('class="ci"') == 3
    means = re.search(r'data-chart="means"[^>]*>(.*?)</svg>', dom, re.S)
    assert means and means.group(1).count('class="bar"') == 6  # 3 metrics x 2 runs
    assert dom.count('class="ecdf"') == 2
    assert dom.count('class="pt"') >= 20  # the scatter's points
    # every trace link points at an embedded trace tree that shows the pipeline's spans
    links = set(re.findall(r'href="#(trace-[0-9a-f]+)"', dom))
    assert links, "no per-example trace links"
    ids = set(re.findall(r'id="(trace-[0-9a-f]+)"', dom))
    assert links <= ids
    assert "retrieve" in dom and "generate" in dom and "RETRIEVER" in dom
    # the per-example difference table lists the regressed examples named by the comparison
    worst = cmp.regressions_df().example_id.iloc[0]
    assert f'href="#ex-{worst}"' in dom
    assert "document.title=&#39;pwned&#39;" in dom or "document.title='pwned'" in dom  # shown as text


@pytest.mark.slow
def test_report_cli_and_single_run(two_runs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    traced, v1, v2 = two_runs
    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli_app, ["report", v1.ref, v2.ref, "-o", str(out), "--store", traced.store_path])
    assert res.exit_code == 0, res.output
    assert out.exists() and "wrote" in res.output
    single = build_report(traced.client().store, [v2.ref])
    assert '"comparisons":[]' in single and "rag-qa:v2" in single
    res = CliRunner().invoke(cli_app, ["report", "rag-qa:v9", "-o", str(out), "--store", traced.store_path])
    assert res.exit_code != 0


def test_report_needs_a_run(store_path) -> None:  # type: ignore[no-untyped-def]
    from ragtrail._exceptions import ConfigError
    from ragtrail.store import open_store

    with pytest.raises(ConfigError, match="at least one run"):
        build_report(open_store(store_path), [])


if os.environ.get("RAGTRAIL_REQUIRE_CHROMIUM") == "1" and CHROMIUM is None:  # pragma: no cover
    raise RuntimeError("RAGTRAIL_REQUIRE_CHROMIUM=1 but no chromium on PATH")
