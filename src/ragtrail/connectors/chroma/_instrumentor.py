"""Chroma connector: ``Collection.query`` → RETRIEVER span ``retrieval {collection}``,
add/upsert/delete/get → ``chroma.{method}`` spans, the collection's embedding-function calls →
EMBEDDING spans ``embeddings {model}``.

Works the same for the in-process clients (ephemeral, persistent) and the HTTP client of a Chroma
server, sync (``Collection``) and async (``AsyncCollection``), because it patches the collection
classes that all clients hand out.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, ClassVar

from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail._log import logger
from ragtrail.connectors._common import FailureCounter, RagtrailInstrumentor, module_functions
from ragtrail.connectors.chroma import _extract as ex
from ragtrail.tracing import (
    Recorder,
    defer_attributes,
    finish_background_span,
    get_config,
    is_enabled,
    record_documents,
    record_exception,
    set_content,
    start_background_span,
)

_COLLECTION_MODULE = "chromadb.api.models.Collection"
_ASYNC_COLLECTION_MODULE = "chromadb.api.models.AsyncCollection"
_COMMON_MODULE = "chromadb.api.models.CollectionCommon"
_METHODS = ("query", "add", "upsert", "delete", "get")

_counter = FailureCounter("chroma", "the Chroma connector")
failures = _counter.count
_failed = _counter.failed


# Per-collection facts that never change for a collection id: distance space, server address, model.
_static_cache: dict[Any, dict[str, Any]] = {}


def _static_attributes(collection: Any) -> dict[str, Any]:
    key = (
        getattr(getattr(collection, "_model", None), "id", None) or id(collection),
        id(getattr(collection, "_embedding_function", None)),
    )
    cached = _static_cache.get(key)
    if cached is not None:
        return cached
    attrs: dict[str, Any] = {semconv.DB_SYSTEM: "chroma"}
    try:
        attrs[semconv.DB_COLLECTION] = str(collection.name)
    except Exception:
        pass
    try:
        attrs[semconv.RETRIEVAL_DISTANCE_SPACE] = ex.distance_space(collection)
    except Exception:
        attrs[semconv.RETRIEVAL_DISTANCE_SPACE] = "l2"
    try:
        host, port = ex.server_address(collection._client)
        if host:
            attrs[semconv.SERVER_ADDRESS] = host
        if port:
            attrs[semconv.SERVER_PORT] = port
    except Exception:
        pass
    try:
        model, _cls = ex.embedding_function_name(getattr(collection, "_embedding_function", None))
        if model:
            attrs[semconv.EMBEDDING_MODEL] = model
    except Exception:
        pass
    if len(_static_cache) > 4096:
        _static_cache.clear()
    _static_cache[key] = attrs
    return attrs


def span_name(method: str, attrs: dict[str, Any]) -> str:
    """``retrieval {collection}`` for a query (the GenAI conventions' retrieval span, the collection
    being the data source), ``chroma.{method}`` for the other collection calls."""
    if method == "query":
        source = attrs.get(semconv.GEN_AI_DATA_SOURCE_ID)
        return f"{semconv.GEN_AI_OP_RETRIEVAL} {source}" if source else semconv.GEN_AI_OP_RETRIEVAL
    return f"chroma.{method}"


def embed_span_name(model: str | None) -> str:
    """``embeddings {model}`` (the GenAI conventions' embeddings span), ``embeddings`` without a model."""
    return f"{semconv.GEN_AI_OP_EMBEDDINGS} {model}" if model else semconv.GEN_AI_OP_EMBEDDINGS


def _start(name: str, kind: str, attrs: dict[str, Any]) -> tuple[Any, object]:
    cfg = get_config()
    assert cfg is not None
    attrs[semconv.SPAN_KIND] = kind
    return start_background_span(cfg.tracer, name, attrs)


def _finish(span: Any, token: object) -> None:
    finish_background_span(span, token)


def _before(
    method: str, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    bound = ex.bind(method, args, kwargs)
    attrs = dict(_static_attributes(instance))
    attrs[semconv.DB_OPERATION] = method
    if method == "query":
        attrs[semconv.GEN_AI_OPERATION_NAME] = semconv.GEN_AI_OP_RETRIEVAL
        collection = attrs.get(semconv.DB_COLLECTION)
        if collection is not None:
            attrs[semconv.GEN_AI_DATA_SOURCE_ID] = collection
    ex.request_attributes(method, bound, attrs)
    return bound, attrs


def _record_request(span: Span, method: str, bound: dict[str, Any]) -> None:
    where = bound.get("where")
    if where:
        set_content(span, semconv.DB_WHERE, where)
    where_doc = bound.get("where_document")
    if where_doc:
        set_content(span, semconv.DB_WHERE_DOCUMENT, where_doc)
    if method == "query":
        text = ex.first_query_text(bound)
        if text is not None:
            set_content(span, semconv.GEN_AI_RETRIEVAL_QUERY_TEXT, text)
    elif method in ("delete", "get") and bound.get("ids") is not None:
        set_content(span, semconv.INPUT_VALUE, {"ids": bound.get("ids")})


def _record_result(span: Span, method: str, attrs: dict[str, Any], result: Any) -> None:
    if method == "query":
        _record_query_result(span, attrs.get(semconv.RETRIEVAL_DISTANCE_SPACE, "l2"), result)
    elif method == "get":
        ids = result.get("ids") if result is not None else None
        if ids is not None:
            span.set_attribute(semconv.DB_RECORD_COUNT, len(ids))
            snap = list(ids[:1000])
            defer_attributes(span, lambda: {semconv.RETRIEVAL_DOCUMENT_IDS: [str(i) for i in snap]}, on_error=_failed)


_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), check_circular=False, allow_nan=False)


def _first(result: Any, key: str) -> Any:
    value = result.get(key)
    return value[0] if value else None


def _record_query_result(span: Span, space: str, result: Any) -> None:
    """Ids, distances, scores and documents of the first query of a QueryResult.

    A query is the hot path of a RAG app, so the caller's thread only copies what the result holds
    (the application may change the lists and metadata dicts afterwards); turning that into attributes
    (JSON, caps, secret masking, the user's mask hook) happens when the span is built on the
    background thread (see :mod:`ragtrail.tracing._background`), or at once for an ordinary SDK span.
    """
    cfg = get_config()
    if cfg is None or not span.is_recording():
        return
    ids = _first(result, "ids") or []
    dists = _first(result, "distances")
    content_on = cfg.capture_content
    texts = _first(result, "documents") if content_on else None
    metas = _first(result, "metadatas") if content_on else None
    snap = (
        list(ids),
        list(dists) if dists is not None else None,
        list(texts) if texts is not None else None,
        [dict(m) if isinstance(m, dict) else m for m in metas] if metas is not None else None,
    )
    defer_attributes(span, lambda: _query_attributes(space, cfg.max_attribute_bytes, *snap), on_error=_failed)


def _query_attributes(
    space: str,
    max_bytes: int,
    ids: list[Any],
    dists: list[Any] | None,
    texts: list[Any] | None,
    metas: list[Any] | None,
) -> dict[str, Any]:
    """The attributes of a query's first result list, in one pass; the common case (string documents
    that fit their share of the attribute cap, JSON-encodable metadata) is serialised here once and
    goes through the same ``set_content`` path as everything else, with exactly what
    :func:`ragtrail.tracing.record_documents` would record. Anything unusual (a huge document to cap,
    a value JSON cannot encode) goes to ``record_documents`` itself."""
    rec = Recorder()
    budget = max(max_bytes // max(1, len(ids)) - 200, 200)
    l2 = space == "l2"
    id_strs: list[str] = []
    distances: list[float] = []
    docs: list[dict[str, Any]] = []
    slow = False
    for i, raw_id in enumerate(ids):
        doc_id = str(raw_id)
        id_strs.append(doc_id)
        item: dict[str, Any] = {"id": doc_id, "rank": i}
        if dists is not None and i < len(dists):
            d = dists[i]
            if d is not None:
                d = float(d)
                distances.append(d)
                item["score"] = 1.0 / (1.0 + d) if l2 else 1.0 - d
        if texts is not None and i < len(texts):
            c = texts[i]
            if c is not None:
                if not isinstance(c, str) or len(c) * 4 > budget:
                    slow = True
                item["content"] = c
        if metas is not None and i < len(metas):
            m = metas[i]
            if m:
                item["metadata"] = m
        docs.append(item)
    score_kind = ex.SPACE_TO_SCORE_KIND.get(space, space)
    text = None
    if not slow:
        try:
            text = _json_encoder.encode(docs)
        except (TypeError, ValueError):
            text = None
        if text is not None and len(text) * 4 > max_bytes and len(text.encode("utf-8")) > max_bytes:
            text = None
    if distances:
        rec.set_attribute(semconv.RETRIEVAL_DISTANCES, distances)
    if text is None:
        record_documents(rec, docs, score_kind=score_kind)  # type: ignore[arg-type]
    else:
        rec.set_attribute(semconv.RETRIEVAL_DOCUMENT_IDS, id_strs)
        rec.set_attribute(semconv.RETRIEVAL_SCORE_KIND, score_kind)
        set_content(rec, semconv.GEN_AI_RETRIEVAL_DOCUMENTS, text, force=True)  # type: ignore[arg-type]
    return rec.attributes


def _guarded(fn: Callable[..., None], what: str, *args: Any) -> None:
    """Record something on a span; a failure is counted, never raised into the app."""
    try:
        fn(*args)
    except Exception:
        _failed(what)


def _make_sync(method: str) -> Callable[..., Any]:
    kind = semconv.RETRIEVER if method == "query" else semconv.TOOL

    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not is_enabled():
            return wrapped(*args, **kwargs)
        try:
            bound, attrs = _before(method, instance, args, kwargs)
            span, token = _start(span_name(method, attrs), kind, attrs)
        except Exception:
            _failed(f"{method} start")
            return wrapped(*args, **kwargs)
        try:
            _guarded(_record_request, f"{method} request", span, method, bound)
            try:
                result = wrapped(*args, **kwargs)
            except BaseException as exc:
                record_exception(span, exc)
                raise
            _guarded(_record_result, f"{method} result", span, method, attrs, result)
            return result
        finally:
            _finish(span, token)

    return wrapper


def _make_async(method: str) -> Callable[..., Any]:
    kind = semconv.RETRIEVER if method == "query" else semconv.TOOL

    async def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not is_enabled():
            return await wrapped(*args, **kwargs)
        try:
            bound, attrs = _before(method, instance, args, kwargs)
            span, token = _start(span_name(method, attrs), kind, attrs)
        except Exception:
            _failed(f"{method} start")
            return await wrapped(*args, **kwargs)
        try:
            _guarded(_record_request, f"{method} request", span, method, bound)
            try:
                result = await wrapped(*args, **kwargs)
            except BaseException as exc:
                record_exception(span, exc)
                raise
            _guarded(_record_result, f"{method} result", span, method, attrs, result)
            return result
        finally:
            _finish(span, token)

    return wrapper


def _embed_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``CollectionCommon._embed(input, is_query)``: the collection calling its embedding function."""
    if not is_enabled():
        return wrapped(*args, **kwargs)
    try:
        inputs = args[0] if args else kwargs.get("input")
        attrs: dict[str, Any] = {
            semconv.DB_SYSTEM: "chroma",
            semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OP_EMBEDDINGS,
        }
        static = _static_attributes(instance)
        if semconv.DB_COLLECTION in static:
            attrs[semconv.DB_COLLECTION] = static[semconv.DB_COLLECTION]
        model, cls = ex.embedding_function_name(getattr(instance, "_embedding_function", None))
        if model:
            attrs[semconv.EMBEDDING_MODEL] = model
            attrs[semconv.GEN_AI_REQUEST_MODEL] = model
        if cls:
            attrs[semconv.EMBEDDING_FUNCTION] = cls
        n = ex._count(inputs)
        if n is not None:
            attrs[semconv.EMBEDDING_COUNT] = n
        span, token = _start(embed_span_name(model), semconv.EMBEDDING, attrs)
    except Exception:
        _failed("embed start")
        return wrapped(*args, **kwargs)
    try:
        set_content(span, semconv.INPUT_VALUE, inputs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            record_exception(span, exc)
            raise
        try:
            dim = ex.embedding_dimension(result)
            if dim:
                span.set_attribute(semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT, dim)
        except Exception:
            _failed("embed result")
        return result
    finally:
        _finish(span, token)


class ChromaInstrumentor(RagtrailInstrumentor):
    """Traces Chroma collections: query (RETRIEVER), add/upsert/delete/get, and embedding calls (EMBEDDING).

    Query spans carry the collection, ``n_results``, the ``where``/``where_document`` filters, the
    returned ids, raw distances and scores (converted per the collection's distance space, see
    :mod:`ragtrail.connectors.chroma._extract`), and the documents (capped, per the content switch).
    """

    library: ClassVar[str] = "chromadb"
    distribution: ClassVar[str] = "chromadb"
    extra: ClassVar[str] = "chroma"
    supported: ClassVar[tuple[str, ...]] = (">=1.0", "<2")

    def _instrument(self, **kwargs: Any) -> None:
        import importlib

        import wrapt

        for method in _METHODS:
            wrapt.wrap_function_wrapper(_COLLECTION_MODULE, f"Collection.{method}", _make_sync(method))
        try:
            importlib.import_module(_ASYNC_COLLECTION_MODULE)
            for method in _METHODS:
                wrapt.wrap_function_wrapper(_ASYNC_COLLECTION_MODULE, f"AsyncCollection.{method}", _make_async(method))
        except Exception:
            logger.debug("ragtrail: chromadb AsyncCollection not patched", exc_info=True)
        try:
            wrapt.wrap_function_wrapper(_COMMON_MODULE, "CollectionCommon._embed", _embed_wrapper)
        except Exception:
            logger.debug("ragtrail: chromadb CollectionCommon._embed not patched", exc_info=True)

    def _uninstrument(self, **kwargs: Any) -> None:
        import importlib

        from opentelemetry.instrumentation.utils import unwrap

        mod = importlib.import_module(_COLLECTION_MODULE)
        for method in _METHODS:
            unwrap(mod.Collection, method)
        try:
            amod = importlib.import_module(_ASYNC_COLLECTION_MODULE)
            for method in _METHODS:
                unwrap(amod.AsyncCollection, method)
        except Exception:
            pass
        try:
            cmod = importlib.import_module(_COMMON_MODULE)
            unwrap(cmod.CollectionCommon, "_embed")
        except Exception:
            pass
        _static_cache.clear()


instrument, uninstrument = module_functions(ChromaInstrumentor)
