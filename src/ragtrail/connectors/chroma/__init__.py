"""Chroma connector: ``instrument()`` traces every Chroma collection call in the process.

``Collection.query`` becomes a RETRIEVER span (collection, ``n_results``, filters, ids, distances and
scores, documents); ``add``/``upsert``/``delete``/``get`` become spans of their own; the collection's
embedding-function calls become EMBEDDING spans. chromadb is imported only by ``instrument()``.
"""

from __future__ import annotations

from ragtrail.connectors.chroma._extract import SPACE_TO_SCORE_KIND, score_from_distance
from ragtrail.connectors.chroma._instrumentor import ChromaInstrumentor, failures, instrument, uninstrument

Instrumentor = ChromaInstrumentor

__all__ = [
    "SPACE_TO_SCORE_KIND",
    "ChromaInstrumentor",
    "Instrumentor",
    "failures",
    "instrument",
    "score_from_distance",
    "uninstrument",
]
