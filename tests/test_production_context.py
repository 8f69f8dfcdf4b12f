"""``ragtrail.context()``: session, user, tags and metadata on every span started inside it.

Real LangChain runnables (sync, async, ``batch``, thread pools, ``config={"metadata", "tags"}``), a
plain ``@ragtrail.trace`` tree, threads and tasks that copy the context. Only the LLM's answers are
fake (``FakeListChatModel``).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
from concurrent.futures import ThreadPoolExecutor

import pytest

import ragtrail
from ragtrail import semconv
from ragtrail.tracing import ContextSpanProcessor, current_context


def _ctx(span) -> tuple:  # type: ignore[no-untyped-def]
    a = span.attributes
    md = a.get(semconv.METADATA)
    return (
        a.get(semconv.SESSION_ID),
        a.get(semconv.USER_ID),
        tuple(a.get(semconv.TAGS) or ()),
        json.loads(md) if md else None,
    )


def _by_trace(spans):  # type: ignore[no-untyped-def]
    out: dict[int, list] = {}
    for s in spans:
        out.setdefault(s.context.trace_id, []).append(s)
    return out


def test_plain_trace_tree_and_nesting(traced):
    @ragtrail.trace(kind="RETRIEVER")
    def lookup(q: str) -> list[str]:
        with ragtrail.span("inner"):
            return [q]

    @ragtrail.trace()
    def answer(q: str) -> str:
        lookup(q)
        with ragtrail.context(user_id="u-2", tags=["inner-tag"], metadata={"k": "inner", "x": 1}):
            with ragtrail.span("override"):
                pass
        return q

    with ragtrail.context(session_id="conv-1", user_id="u-1", tags=["beta"], metadata={"k": "v"}):
        answer("hi")
    with ragtrail.span("outside"):
        pass
    spans = {s.name: s for s in traced.spans()}
    for name in ("answer", "lookup", "inner"):
        assert _ctx(spans[name]) == ("conv-1", "u-1", ("beta",), {"k": "v"}), name
        assert spans[name].attributes[semconv.GEN_AI_CONVERSATION_ID] == "conv-1"
    # nested: user replaced, tags added, metadata keys overridden, session kept
    assert _ctx(spans["override"]) == ("conv-1", "u-2", ("beta", "inner-tag"), {"k": "inner", "x": 1})
    assert _ctx(spans["outside"]) == (None, None, (), None)
    # promoted to indexed columns
    df = traced.client().traces_df(session_id="conv-1")
    assert len(df) == 1 and df.loc[0, "user_id"] == "u-1" and df.loc[0, "root_name"] == "answer"
    assert len(traced.client().traces_df(user_id="u-2")) == 1
    assert len(traced.client().traces_df(tags=["beta"])) == 1
    assert len(traced.client().traces_df(tags="beta")) == 1  # one tag as a plain string
    assert len(traced.client().traces_df(tags=["beta", "nope"])) == 0
    assert len(traced.client().traces_df(tags=["inner-tag"], session_id="conv-1")) == 1


def test_threads_and_tasks_that_copy_the_context_inherit_it(traced):
    def work(i: int) -> None:
        with ragtrail.span(f"thread-{i}"):
            pass

    async def task(i: int) -> None:
        await asyncio.sleep(0)
        with ragtrail.span(f"task-{i}"):
            pass

    async def main() -> None:
        async with ragtrail.context(session_id="async-s"):
            await asyncio.gather(*(asyncio.create_task(task(i)) for i in range(5)))

    with ragtrail.context(session_id="thread-s", tags=["t"]), ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(contextvars.copy_context().run, work, i) for i in range(8)]
        for f in futs:
            f.result()
    asyncio.run(main())
    spans = traced.spans()
    assert (
        sorted(s.attributes.get(semconv.SESSION_ID) for s in spans if s.name.startswith("thread-")) == ["thread-s"] * 8
    )
    assert [s.attributes.get(semconv.SESSION_ID) for s in spans if s.name.startswith("task-")] == ["async-s"] * 5
    assert current_context().session_id is None  # everything was restored


def test_init_defaults_sit_under_every_context(store_path):
    ragtrail.init(project="d", store=store_path, user_id="svc", tags=["prod"], metadata={"region": "eu"})
    try:
        with ragtrail.span("a"):
            pass
        with ragtrail.context(session_id="s", tags=["x"]), ragtrail.span("b"):
            pass
        ragtrail.flush()
        spans = {s.name: s for s in ragtrail.Client(store_path).spans()}
        assert spans["a"].attributes[semconv.USER_ID] == "svc" and spans["a"].session_id is None
        b = spans["b"].attributes
        assert (b[semconv.SESSION_ID], b[semconv.USER_ID], b[semconv.TAGS]) == ("s", "svc", ["prod", "x"])
        assert json.loads(b[semconv.METADATA]) == {"region": "eu"}
    finally:
        ragtrail.shutdown()
        ragtrail.tracing._context.set_defaults()


def test_bad_values_are_config_errors():
    with pytest.raises(ragtrail.ConfigError, match="session_id"):
        ragtrail.context(session_id={"a": 1})  # type: ignore[arg-type]
    with pytest.raises(ragtrail.ConfigError, match="tags"):
        ragtrail.context(tags=[1, 2])  # type: ignore[list-item]
    with pytest.raises(ragtrail.ConfigError, match="metadata"):
        ragtrail.context(metadata=["a"])  # type: ignore[arg-type]


def test_the_public_processor_works_on_a_provider_ragtrail_does_not_feed():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    mem = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(ContextSpanProcessor())
    provider.add_span_processor(SimpleSpanProcessor(mem))
    with ragtrail.context(session_id="own"):
        provider.get_tracer("x").start_span("s").end()
    assert mem.get_finished_spans()[0].attributes[semconv.SESSION_ID] == "own"


# ------------------------------------------------------------------------------------------ LangChain
lc = pytest.importorskip("langchain_core")


@pytest.fixture
def chain(traced):  # type: ignore[no-untyped-def]
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnableParallel

    from ragtrail.connectors import langchain as lc_connector

    llm = FakeListChatModel(responses=["fake answer"] * 1000)  # the only fake: the LLM's answers

    def retrieve(q: str) -> str:
        with ragtrail.span("vector-search", kind="RETRIEVER"):  # a non-LangChain span inside a run
            return f"context for {q}"

    prompt = ChatPromptTemplate.from_messages([("system", "{context}"), ("human", "{question}")])
    c = RunnableParallel(context=RunnableLambda(retrieve), question=RunnableLambda(lambda q: q)) | prompt | llm
    c = c | StrOutputParser()
    lc_connector.instrument()
    try:
        yield c
    finally:
        lc_connector.uninstrument()


def _check_every_span(traced, expect_by_question):  # type: ignore[no-untyped-def]
    spans = traced.spans()
    traces = _by_trace(spans)
    assert len(traces) == len(expect_by_question)
    for tspans in traces.values():
        root = [s for s in tspans if s.parent is None or s.parent.trace_id != s.context.trace_id]
        assert len(root) == 1
        raw = root[0].attributes[semconv.INPUT_VALUE]
        q = json.loads(raw) if raw.startswith('"') else raw
        want = expect_by_question[q]
        assert len(tspans) >= 6  # parallel, lambdas, prompt, chat model, parser, vector-search
        for s in tspans:
            got = _ctx(s)
            assert got[:3] == want[:3], (s.name, got, want)
            if want[3] is not None:
                assert got[3] == want[3], (s.name, got)


def test_langchain_sync_with_ambient_context_and_config_metadata(chain, traced):
    with ragtrail.context(user_id="u-9", tags=["app"]):
        chain.invoke("q1", config={"metadata": {"session_id": "conv-7", "plan": "pro"}, "tags": ["lc-tag"]})
    _check_every_span(traced, {"q1": ("conv-7", "u-9", ("app", "lc-tag"), {"plan": "pro", "session_id": "conv-7"})})


def test_langchain_batch_gives_each_input_its_own_context(chain, traced):
    configs = [{"metadata": {"session_id": f"s{i}", "user_id": f"u{i}"}, "tags": [f"t{i}"]} for i in range(4)]
    assert chain.batch([f"q{i}" for i in range(4)], config=configs) == ["fake answer"] * 4
    _check_every_span(traced, {f"q{i}": (f"s{i}", f"u{i}", (f"t{i}",), None) for i in range(4)})


def test_langchain_async_concurrent_calls_keep_their_contexts_apart(chain, traced):
    async def one(i: int) -> str:
        async with ragtrail.context(session_id=f"as{i}", user_id="au"):
            return await chain.ainvoke(f"aq{i}")

    async def main() -> list[str]:
        return await asyncio.gather(*(one(i) for i in range(10)))

    assert asyncio.run(main()) == ["fake answer"] * 10
    _check_every_span(traced, {f"aq{i}": (f"as{i}", "au", (), None) for i in range(10)})


def test_langchain_in_a_thread_pool(chain, traced):
    def one(i: int) -> str:
        with ragtrail.context(session_id=f"ts{i}", tags=["pool"]):
            return chain.invoke(f"tq{i}")

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(12))) == ["fake answer"] * 12
    _check_every_span(traced, {f"tq{i}": (f"ts{i}", None, ("pool",), None) for i in range(12)})


def test_one_context_object_entered_by_many_threads_at_once(traced):
    import threading

    shared = ragtrail.context(session_id="shared")
    barrier = threading.Barrier(4)
    after: list = []

    def work(i: int) -> None:
        with shared:
            barrier.wait()  # all four are inside the same context object at once
            with ragtrail.span(f"w{i}"):
                pass
        after.append(current_context().session_id)  # each thread restored its own context

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert after == [None] * 4
    assert {s.attributes[semconv.SESSION_ID] for s in traced.spans()} == {"shared"}
