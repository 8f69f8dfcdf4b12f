"""Run by tests/test_packaging.py inside a fresh venv that holds only the built wheel and its deps.

``python _wheel_smoke.py STORE STEP``: STEP is ``core`` (bare install), ``langchain`` (``[langchain]``:
langchain-core alone) or ``evals`` (``[evals]``: an evaluation, a comparison and the HTML report).
Prints one ``ok STEP`` line; any failure is an assertion with the reason. With
``RAGTRAIL_SMOKE_BLOCK=1`` the heavy packages are made unimportable first (a bare install simulated in
the dev venv, for the fast test).
"""

from __future__ import annotations

import importlib.abc
import os
import sys
from pathlib import Path

import ragtrail

HEAVY = ("pandas", "numpy", "scipy", "pyarrow", "langchain", "langgraph", "torch")


def core(store: str) -> None:
    if not os.environ.get("RAGTRAIL_SMOKE_FROM_SOURCE"):
        assert "site-packages" in ragtrail.__file__, f"ragtrail imported from {ragtrail.__file__}, not the wheel"
    ragtrail.init(project="smoke", store=store)
    with ragtrail.span("answer", kind="CHAIN"), ragtrail.span("chat", kind="LLM") as s:
        ragtrail.record_usage(s, provider="openai", model="gpt-4o-mini", input_tokens=100, output_tokens=20)
    assert ragtrail.flush()
    client = ragtrail.Client(store)
    spans = client.spans(project="smoke")
    assert sorted(s.kind for s in spans) == ["CHAIN", "LLM"], spans
    # the price table is package data: an unknown file would leave cost empty
    assert any(s.cost_usd for s in spans), "no cost: the price table (ragtrail/data/prices.json) is missing"
    assert len(client.traces(project="smoke")) == 1
    assert client.trace_summaries(project="smoke")[0]["n_spans"] == 2
    try:
        client.spans_df()
    except ragtrail.MissingDependencyError as exc:
        assert "pip install 'ragtrail[analysis]'" in str(exc), exc
    else:
        raise AssertionError("spans_df() worked without pandas?")
    from ragtrail.evals import Dataset, Evaluation, scorers

    ds = Dataset.from_records([{"id": "q1", "input": "a", "reference": "a"}], name="toy")
    run = Evaluation("toy", dataset=ds, pipeline=lambda q: q, scorers=[scorers.exact_match()], store=store,
                     progress=False).run()  # fmt: skip
    assert [r["score"] for r in run.results()] == [1.0], run.results()
    demo = Path(ragtrail.__file__).parent / "data" / "demo" / "corpus.jsonl"
    assert demo.stat().st_size > 0, "the demo corpus is missing from the wheel"
    loaded = [m for m in HEAVY if m in sys.modules]
    assert not loaded, f"a bare install loaded {loaded}"


def langchain(store: str) -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate

    from ragtrail.connectors.langchain import CallbackHandler

    ragtrail.init(project="lc", store=store)
    # a fake chat model stands in for the LLM's answer; everything else is real langchain-core
    chain = ChatPromptTemplate.from_template("Answer: {q}") | FakeListChatModel(responses=["42"])
    out = chain.invoke({"q": "what?"}, config={"callbacks": [CallbackHandler()]})
    assert out.content == "42"
    assert ragtrail.flush()
    kinds = {s.kind for s in ragtrail.Client(store).spans(project="lc")}
    assert {"CHAIN", "LLM"} <= kinds, kinds
    assert "langchain" not in sys.modules and "langgraph" not in sys.modules


def evals(store: str) -> None:
    from ragtrail.evals import Dataset, Evaluation, compare, scorers, write_report

    recs = [{"id": f"q{i}", "input": str(i), "reference": str(i)} for i in range(8)]
    ds = Dataset.from_records(recs, name="toy2")

    def run(pipeline, config):  # type: ignore[no-untyped-def]
        ev = Evaluation("toy2", dataset=ds, pipeline=pipeline, scorers=[scorers.exact_match()], store=store,
                        progress=False)  # fmt: skip
        return ev.run(config=config)

    a = run(lambda q: q, {"variant": "right"})
    b = run(lambda q: q if int(q) % 2 else "wrong", {"variant": "half wrong"})
    st = ragtrail.Client(store).store
    cmp = compare(st, a, b)
    assert cmp.metrics[0].delta == -0.5, cmp.metrics
    out = write_report(st, [a.ref, b.ref], Path(store).with_suffix(".html"))
    html = out.read_text(encoding="utf-8")
    assert "function" in html and "toy2" in html, "the report's JS/CSS (ragtrail/data/report/) is missing"


class _Block(importlib.abc.MetaPathFinder):
    """Makes the packages that a bare install lacks unimportable."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in HEAVY + ("matplotlib", "optuna", "rouge_score", "sacrebleu"):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: simulating a bare install)", name=name)
        return None


if __name__ == "__main__":
    if os.environ.get("RAGTRAIL_SMOKE_BLOCK"):
        sys.meta_path.insert(0, _Block())
    {"core": core, "langchain": langchain, "evals": evals}[sys.argv[2]](sys.argv[1])
    print("ok", sys.argv[2])
