"""ragtrail.analysis over real traces written to a real SQLite store."""

import time

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest

import ragtrail
from ragtrail import analysis


def _make_traces():
    @ragtrail.trace(kind="CHAIN", name="rag")
    def rag(q, fail=False):
        with ragtrail.span("search", kind="RETRIEVER"):
            time.sleep(0.02)
        with ragtrail.span("chat gpt-4o-mini", kind="LLM") as s:
            ragtrail.record_usage(s, provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
            time.sleep(0.005)
            if fail:
                raise RuntimeError("model overloaded")
        return q

    rag("a")
    rag("b")
    with pytest.raises(RuntimeError):
        rag("c", fail=True)


def test_latency_cost_errors(traced):
    _make_traces()
    spans = traced.client().spans_df(project="test")
    lat = analysis.latency_by_kind(spans).set_index("kind")
    # retriever sleeps 20 ms x3, LLM 5 ms x3: the retriever owns most self time
    assert lat.loc["RETRIEVER", "spans"] == 3
    assert lat.loc["RETRIEVER", "self_ms"] > lat.loc["LLM", "self_ms"]
    assert lat["self_share"].sum() == pytest.approx(1.0)
    # self time of the chain excludes its children
    assert lat.loc["CHAIN", "self_ms"] < lat.loc["CHAIN", "total_ms"] - 60

    cost = analysis.cost_by_model(spans).set_index("model")
    assert cost.loc["gpt-4o-mini", "calls"] == 3
    assert cost.loc["gpt-4o-mini", "input_tokens"] == 3000
    # 1000 x 0.15/M + 100 x 0.60/M per call
    assert cost.loc["gpt-4o-mini", "cost_usd"] == pytest.approx(3 * (1000 * 0.15 + 100 * 0.60) / 1e6)

    per_trace = analysis.cost_by_trace(spans)
    assert len(per_trace) == 3 and set(per_trace["root"]) == {"rag"}
    slow = analysis.slowest_traces(spans, n=2)
    assert len(slow) == 2 and set(slow["slowest_span"]) == {"search"}

    errs = analysis.error_traces(spans)
    assert len(errs) == 1
    assert errs.iloc[0]["span"] in ("chat gpt-4o-mini", "rag")
    assert errs.iloc[0]["error"] == "RuntimeError"

    ax = analysis.plot_latency_by_kind(spans)
    assert ax.get_xlabel().startswith("self time (ms")
    tr = traced.client().trace(spans.iloc[0]["trace_id"])
    html = tr._repr_html_()
    assert "search" in html and "RETRIEVER" in html and "ms" in html
    assert analysis.plot_trace_waterfall(tr).get_xlabel() == "ms since trace start"


def test_scores_and_comparison_views():
    results = pd.DataFrame(
        {
            "example_id": ["1", "2", "3", "1", "2", "3"],
            "scorer": ["f1"] * 3 + ["recall@5"] * 3,
            "score": [0.5, 1.0, None, 1.0, 0.0, 1.0],
            "status": ["ok", "ok", "error", "ok", "ok", "ok"],
        }
    )
    dist = analysis.score_distributions(results).set_index("scorer")
    assert dist.loc["f1", "n_ok"] == 2 and dist.loc["f1", "n_error"] == 1
    assert dist.loc["f1", "mean"] == pytest.approx(0.75)
    assert dist.loc["recall@5", "mean"] == pytest.approx(2 / 3)
    analysis.plot_score_distributions(results)

    comp = pd.DataFrame(
        {
            "metric": ["f1", "recall@5"], "mean_a": [0.5, 0.6], "mean_b": [0.7, 0.6], "delta": [0.2, 0.0],
            "ci_low": [0.1, -0.1], "ci_high": [0.3, 0.1], "p_value": [0.01, 1.0], "p_adjusted": [0.02, 1.0],
            "n_pairs": [30, 30],
        }
    )
    html = analysis.comparison_html(comp)
    assert "#2a9d4b" in html  # the significant improvement is coloured green
    assert html.count("#555") == 1  # the null one is grey
    ax = analysis.plot_run_vs_run(comp)
    assert "95%" in ax.get_xlabel()
