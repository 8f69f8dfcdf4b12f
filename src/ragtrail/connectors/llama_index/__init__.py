"""LlamaIndex connector: ``instrument()`` registers ragtrail's span and event handlers on LlamaIndex's
root instrumentation dispatcher (query engines, retrievers, embeddings, LLMs, synthesis, rerankers).
llama_index is imported only by ``instrument()``.
"""

from __future__ import annotations

from ragtrail.connectors.llama_index._instrumentor import LlamaIndexInstrumentor, failures, instrument, uninstrument

Instrumentor = LlamaIndexInstrumentor

__all__ = ["Instrumentor", "LlamaIndexInstrumentor", "failures", "instrument", "uninstrument"]
