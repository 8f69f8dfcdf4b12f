"""sentence-transformers connector: ``instrument()`` traces ``SentenceTransformer.encode`` as EMBEDDING
spans and ``CrossEncoder.predict``/``rank`` as RERANKER spans. The library is imported only by
``instrument()``.
"""

from __future__ import annotations

from ragtrail.connectors.sentence_transformers._instrumentor import (
    SentenceTransformersInstrumentor,
    failures,
    instrument,
    model_name,
    uninstrument,
)

Instrumentor = SentenceTransformersInstrumentor

__all__ = ["Instrumentor", "SentenceTransformersInstrumentor", "failures", "instrument", "model_name", "uninstrument"]
