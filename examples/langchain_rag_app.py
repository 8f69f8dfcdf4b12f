"""A LangChain RAG app traced by ragtrail (offline).

    python examples/langchain_rag_app.py "How long can deleted notes be restored?"

Chroma + MiniLM embeddings + a chat model. Every run of the chain becomes one trace: the chain, the
retriever with the Chroma query (documents with ids and scores) and the question's embedding, the prompt
and the chat model call (tokens, cost, time to first token). Set OPENAI_BASE_URL (and OPENAI_MODEL) to
answer with a real OpenAI-compatible server, e.g. vLLM, instead of the offline extractive model.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import ragtrail
from ragtrail.connectors import chroma, sentence_transformers
from ragtrail.connectors import langchain as lc
from ragtrail.demo import _llm, build_chain, build_vectorstore


def main() -> None:
    question = " ".join(sys.argv[1:]) or "Which identity providers are supported for single sign-on?"
    ragtrail.init(project="langchain-rag-example")
    # one call each: LangChain (every chain, no callbacks to pass), Chroma, sentence-transformers
    lc.instrument()
    chroma.instrument()
    sentence_transformers.instrument()

    chain = build_chain(build_vectorstore(), top_k=3, llm=_llm(os.environ.get("OPENAI_BASE_URL"), os.environ.get("OPENAI_MODEL")))
    result = chain.stream(question)  # streamed: the LLM span records time to first token
    answer = ""
    for chunk in result:
        answer += chunk.get("answer", "")
    print("answer:", answer)

    ragtrail.flush()
    trace = ragtrail.Client().traces(project="langchain-rag-example", limit=1)[0]
    print(trace.to_text())
    print(f"\nragtrail traces show {trace.trace_id}")


if __name__ == "__main__":
    main()
