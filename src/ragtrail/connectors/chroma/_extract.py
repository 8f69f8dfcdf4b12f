"""Small extractors that turn Chroma call arguments and results into span attributes.

Each function is independent and guarded by the caller, so one failing extractor loses one
attribute, never the span.

Scores: Chroma returns *distances* (smaller is closer). ragtrail records the raw distances in
``ragtrail.retrieval.distances`` and a *score* per document (larger is closer) converted according to
the collection's distance space:

==========  ==============================  ==================================  ===================
space       Chroma's distance ``d``         score recorded                      ``score_kind``
==========  ==============================  ==================================  ===================
``cosine``  ``1 - cos(q, x)``               ``1 - d`` (the cosine similarity)    ``cosine_similarity``
``ip``      ``1 - q·x``                     ``1 - d`` (the inner product)        ``inner_product``
``l2``      ``‖q - x‖²`` (squared L2)       ``1 / (1 + d)`` in (0, 1]            ``inverse_l2``
==========  ==============================  ==================================  ===================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ragtrail import semconv
from ragtrail.tracing import model_display_name

SPACE_TO_SCORE_KIND: dict[str, str] = {
    "cosine": "cosine_similarity",
    "ip": "inner_product",
    "l2": "inverse_l2",
}

# Positional parameter names after ``self`` of the patched Collection / AsyncCollection methods.
PARAMS: dict[str, tuple[str, ...]] = {
    "query": (
        "query_embeddings",
        "query_texts",
        "query_images",
        "query_uris",
        "ids",
        "n_results",
        "where",
        "where_document",
        "include",
    ),
    "add": ("ids", "embeddings", "metadatas", "documents", "images", "uris"),
    "upsert": ("ids", "embeddings", "metadatas", "documents", "images", "uris"),
    "delete": ("ids", "where", "where_document", "limit"),
    "get": ("ids", "where", "limit", "offset", "where_document", "include"),
}


def bind(method: str, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The call's arguments by name (cheaper than ``inspect.signature().bind``)."""
    if not args:
        return dict(kwargs)
    bound = dict(zip(PARAMS[method], args, strict=False))
    bound.update(kwargs)
    return bound


def score_from_distance(space: str, distance: float) -> float:
    """Convert a Chroma distance into a similarity score (larger is closer); see the module docstring."""
    if space == "l2":
        return 1.0 / (1.0 + distance)
    return 1.0 - distance  # cosine and ip


def distance_space(collection: Any) -> str:
    """The collection's distance function: ``cosine``, ``l2`` or ``ip`` (Chroma's default is l2)."""
    try:
        cfg = collection.configuration
        for key in ("hnsw", "spann"):
            part = cfg.get(key) if cfg else None
            if part and part.get("space"):
                return str(part["space"])
    except Exception:
        pass
    meta = getattr(collection, "metadata", None) or {}
    space = meta.get("hnsw:space") if isinstance(meta, Mapping) else None
    return str(space) if space else "l2"


def embedding_function_name(ef: Any) -> tuple[str | None, str | None]:
    """(model name, embedding-function class) of a Chroma embedding function, as far as it tells; a model
    loaded from a local directory is named by :func:`ragtrail.tracing.model_display_name`, never its path."""
    if ef is None:
        return None, None
    cls = type(ef).__name__
    for attr in ("model_name", "_model_name", "model"):
        val = getattr(ef, attr, None)
        if isinstance(val, str) and val:
            return model_display_name(val), cls
    try:
        cfg = ef.get_config() if hasattr(ef, "get_config") else None
        if isinstance(cfg, Mapping):
            for key in ("model_name", "model"):
                if isinstance(cfg.get(key), str):
                    return model_display_name(str(cfg[key])), cls
    except Exception:
        pass
    try:
        name = ef.name() if hasattr(ef, "name") else None
        if isinstance(name, str):
            return name, cls
    except Exception:
        pass
    return None, cls


def server_address(client: Any) -> tuple[str | None, int | None]:
    """Host and port of a Chroma HTTP client (None for the in-process clients)."""
    settings = client.get_settings() if hasattr(client, "get_settings") else getattr(client, "_settings", None)
    if settings is None:
        return None, None
    impl = str(getattr(settings, "chroma_api_impl", "") or "")
    if "fastapi" not in impl.lower() and "http" not in impl.lower():
        return None, None
    host = getattr(settings, "chroma_server_host", None)
    port = getattr(settings, "chroma_server_http_port", None)
    try:
        port = int(port) if port is not None else None
    except (TypeError, ValueError):
        port = None
    return (str(host) if host else None), port


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, (str, bytes)):
        return 1
    try:
        return len(value)
    except TypeError:
        return None


def request_attributes(method: str, bound: Mapping[str, Any], attrs: dict[str, Any]) -> None:
    """Add what is known before the call to ``attrs``: top-k, query count, record/id-filter counts."""
    if method == "query":
        n = bound.get("n_results", 10)
        if isinstance(n, int):
            attrs[semconv.RETRIEVAL_TOP_K] = n
        for key in ("query_embeddings", "query_texts", "query_images", "query_uris"):
            value = bound.get(key)
            if value is not None:
                if key == "query_embeddings":
                    shape = getattr(value, "shape", None)
                    if shape is not None:
                        count = int(shape[0]) if len(shape) == 2 else 1
                    else:
                        count = 1 if value and isinstance(value[0], (int, float)) else len(value)
                else:
                    count = _count(value) or 0
                attrs[semconv.RETRIEVAL_QUERY_COUNT] = count
                break
    ids = bound.get("ids")
    if ids is not None:
        c = _count(ids)
        if c is not None:
            attrs[semconv.DB_RECORD_COUNT if method in ("add", "upsert") else semconv.DB_FILTER_IDS_COUNT] = c


def query_documents(result: Mapping[str, Any], space: str) -> tuple[list[dict[str, Any]], list[float]]:
    """Documents (id, score, content, metadata) and raw distances of the first query of a QueryResult."""
    ids_all = result.get("ids") or []
    if not ids_all:
        return [], []
    ids: Sequence[Any] = ids_all[0] or []
    dists_all = result.get("distances")
    docs_all = result.get("documents")
    metas_all = result.get("metadatas")
    dists = dists_all[0] if dists_all else None
    texts = docs_all[0] if docs_all else None
    metas = metas_all[0] if metas_all else None
    out: list[dict[str, Any]] = []
    distances: list[float] = []
    for i, doc_id in enumerate(ids):
        item: dict[str, Any] = {"id": doc_id}
        if dists is not None and i < len(dists) and dists[i] is not None:
            d = float(dists[i])
            distances.append(d)
            item["score"] = score_from_distance(space, d)
        if texts is not None and i < len(texts):
            item["content"] = texts[i]
        if metas is not None and i < len(metas) and metas[i]:
            item["metadata"] = metas[i]
        out.append(item)
    return out, distances


def first_query_text(bound: Mapping[str, Any]) -> str | None:
    """The first query text of a ``query_texts=`` call."""
    texts = bound.get("query_texts")
    if isinstance(texts, str):
        return texts
    if texts:
        first = texts[0]
        return first if isinstance(first, str) else None
    return None


def embedding_dimension(result: Any) -> int | None:
    """Dimension of the vectors an embedding function returned."""
    if result is None:
        return None
    shape = getattr(result, "shape", None)
    if shape is not None and len(shape) == 2:
        return int(shape[1])
    if len(result) == 0:
        return None
    first = result[0]
    shape = getattr(first, "shape", None)
    if shape is not None and len(shape) == 1:
        return int(shape[0])
    return len(first)
