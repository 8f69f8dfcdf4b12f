"""Data for the UI tests: real spans written by ragtrail's tracing into a real store, and two real eval
runs. The "LLM" answers are fake (LangChain's FakeListChatModel through the real LangChain handler, and
a deterministic function in the eval pipeline): no model runs."""

from __future__ import annotations

import re
from typing import Any

import ragtrail
from ragtrail.evals import Dataset, Evaluation, scorers
from ragtrail.tracing import record_documents, record_usage

PROJECT = "shop"
HOSTILE = [
    "<script>document.title='pwned'</script>",
    '"><img src=x onerror="document.title=\'pwned\'">',
    "javascript:document.title='pwned'",
    "[bold red]rich[/] <b>bold</b> **md** &amp;",
    "ctl\x1b[31mred\x00nul\u202eevil",
]
DOCS = {f"d{i}": f"document {i} about topic {i % 5}" for i in range(20)}


def _records() -> list[dict[str, Any]]:
    return [
        {"id": f"q{i:02d}", "input": f"what is topic {i % 5} number {i}?", "reference": f"topic {i % 5} number {i}",
         "relevant": {f"d{i % 20}": 1}}
        for i in range(12)
    ]  # fmt: skip


def pipeline(question: str, config: dict[str, Any]) -> dict[str, Any]:
    """Retrieval puts the relevant document at rank config['rank'] on even examples (misses it on odd
    ones); the answer is cut from the question (deterministic, no model). Example 7 fails in v2."""
    n = int(re.findall(r"\d+", question)[-1])
    with ragtrail.span("retrieve", kind="RETRIEVER") as sp:
        rel = f"d{n % 20}"
        others = [d for d in DOCS if d != rel][:4]
        ranked = others[: config["rank"]] + [rel] + others[config["rank"] :] if n % 2 == 0 else others
        record_documents(sp, [{"id": d, "score": 1.0 / (r + 1), "content": DOCS[d]} for r, d in enumerate(ranked)])
    with ragtrail.span("generate", kind="LLM") as sp:
        record_usage(sp, provider="openai", model="gpt-4o-mini", input_tokens=100 + n, output_tokens=10,
                     cached_input_tokens=40)  # fmt: skip
        if config.get("fail") and n == 7:
            raise RuntimeError("the model server went away")
        answer = " ".join(question.split()[2 : 2 + config["words"]])
    return {"answer": answer}


def _langchain_trace() -> None:
    """One trace through the real LangChain handler: a prompt | fake chat model chain."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate

    from ragtrail.connectors.langchain import CallbackHandler

    chain = ChatPromptTemplate.from_messages([("system", "You answer briefly."), ("user", "{q}")]) | FakeListChatModel(
        responses=["Deleted notes stay in the Trash for 30 days."]
    )
    chain.invoke({"q": "How long do deleted notes stay?"}, config={"callbacks": [CallbackHandler()]})


BIG_TRACE = "f" * 32
BIG_SPANS = 900


def _big_trace(store: str) -> None:
    """A trace of 900 spans (more than the trace page renders as HTML up front), written as rows
    through the store's own writer; span 850 carries a hostile name."""
    import json
    import time

    from ragtrail.store import open_store

    t0 = time.time_ns()
    rows = []
    for i in range(BIG_SPANS):
        parent = None if i == 0 else f"{(i - 1) // 30:016x}"
        name = HOSTILE[0] if i == 850 else f"step-{i}"
        rows.append((BIG_TRACE, f"{i:016x}", parent, name, "CHAIN", t0 + i * 1000, t0 + i * 1000 + 500_000, 0.5,
                     "OK", None, None, None, None, None, PROJECT, json.dumps({"ragtrail.span.kind": "CHAIN"}), None,
                     None))  # fmt: skip
    rows[0] = rows[0][:6] + (t0 + BIG_SPANS * 1000 + 500_000,) + rows[0][7:]
    st = open_store(store)
    st.write_spans(rows)


def build(store: str, *, n_plain: int = 6) -> dict[str, Any]:
    """Fill ``store``: plain traces (one with an error, one with hostile text everywhere), a LangChain
    trace, and two eval runs of 12 examples. Returns what the tests look for."""
    ragtrail.init(project=PROJECT, store=store)
    try:
        for i in range(n_plain):
            with ragtrail.span(f"answer-{i}", kind="CHAIN", attributes={"ragtrail.input.value": f"question {i}"}):
                with ragtrail.span("search", kind="RETRIEVER") as sp:
                    record_documents(sp, [{"id": f"doc-{i}-{r}", "score": 0.9 - r / 10, "content": f"text {i}.{r}"}
                                          for r in range(3)])  # fmt: skip
                with ragtrail.span("chat gpt-4o", kind="LLM") as sp:
                    record_usage(sp, provider="openai", model="gpt-4o" if i % 2 else "gpt-4o-mini",
                                 input_tokens=200 + i, output_tokens=20, cached_input_tokens=64, ttft_s=0.12)  # fmt: skip
        try:
            with ragtrail.span("broken", kind="CHAIN"):
                with ragtrail.span("tool-call", kind="TOOL"):
                    raise ValueError("boom: the tool failed")
        except ValueError:
            pass
        nasty = " | ".join(HOSTILE)
        with ragtrail.span(HOSTILE[0], kind="CHAIN", attributes={"ragtrail.input.value": nasty,
                                                                  "ragtrail.output.value": nasty}):  # fmt: skip
            with ragtrail.span(HOSTILE[1], kind="RETRIEVER") as sp:
                record_documents(sp, [{"id": h, "score": 0.5, "content": h} for h in HOSTILE])
            with ragtrail.span(HOSTILE[2], kind="LLM") as sp:
                record_usage(sp, provider="openai", model=HOSTILE[3], input_tokens=5, output_tokens=5)
        _langchain_trace()
        ragtrail.flush(10)
        _big_trace(store)
        ds = Dataset.from_records(_records(), name="qa")
        ev = Evaluation("rag-qa", dataset=ds, pipeline=pipeline, store=store, progress=False,
                        scorers=[scorers.recall_at_k(1), scorers.reciprocal_rank(), scorers.token_f1()])  # fmt: skip
        v1 = ev.run(config={"rank": 2, "words": 4})
        v2 = ev.run(config={"rank": 0, "words": 2, "fail": True})
        ragtrail.flush(10)
    finally:
        ragtrail.shutdown()
    return {"v1": v1.ref, "v2": v2.ref, "hostile": HOSTILE}
