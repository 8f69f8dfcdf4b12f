"""``ragtrail.context()`` through LlamaIndex: a real VectorStoreIndex, the real MiniLM embedding model and
LlamaIndex's MockLLM (only the LLM's answers are fake); sync and async queries."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("sentence_transformers")

from test_llama_index import embed_model, index, inst, minilm  # noqa: E402, F401 - shared fixtures

import ragtrail  # noqa: E402
from ragtrail import semconv  # noqa: E402


def test_every_llama_index_span_carries_the_context(inst, index):  # noqa: F811
    from llama_index.core.llms import MockLLM

    engine = index.as_query_engine(similarity_top_k=2, llm=MockLLM(max_tokens=6))
    with ragtrail.context(session_id="li-s", user_id="li-u", tags=["llama"]):
        engine.query("What is the capital of France?")

    async def both() -> None:
        async def one(i: int) -> None:
            async with ragtrail.context(session_id=f"li-a{i}"):
                await engine.aquery("Which city is the capital of Germany?")

        await asyncio.gather(one(0), one(1))

    asyncio.run(both())
    spans = inst.spans()
    by_trace: dict[int, list] = {}
    for s in spans:
        by_trace.setdefault(s.context.trace_id, []).append(s)
    assert len(by_trace) == 3
    sessions = []
    for tspans in by_trace.values():
        assert len(tspans) >= 5  # query, retrieve, embedding, synthesize, LLM…
        got = {s.attributes.get(semconv.SESSION_ID) for s in tspans}
        assert len(got) == 1 and None not in got, [(s.name, s.attributes.get(semconv.SESSION_ID)) for s in tspans]
        sessions.append(got.pop())
    assert sorted(sessions) == ["li-a0", "li-a1", "li-s"]
    sync = next(t for t in by_trace.values() if t[0].attributes[semconv.SESSION_ID] == "li-s")
    assert {(s.attributes.get(semconv.USER_ID), tuple(s.attributes.get(semconv.TAGS) or ())) for s in sync} == {
        ("li-u", ("llama",))
    }
    assert any(s.attributes.get(semconv.SPAN_KIND) == semconv.EMBEDDING for s in sync)
