"""sentence-transformers connector.

* ``SentenceTransformer.encode`` (and ``encode_query``/``encode_document``, which call it) → one
  EMBEDDING span: model, number of texts, batch size, dimension, device, input tokens, peak GPU memory
  (CUDA only).
* ``CrossEncoder.predict`` → RERANKER span (pairs, top scores); ``CrossEncoder.rank`` → one RERANKER
  span (query, ranked documents with scores), its inner ``predict`` not traced twice.

Models loaded from a local directory are named by their model card's title or the directory's last
path components, not by the path (see :func:`ragtrail.tracing.model_display_name`).

Token counts are exact and nearly free: the model's own tokenizer output is observed as it goes by
(the attention masks of the batches ``preprocess`` builds are summed), so nothing is tokenized twice.
They are recorded as ``gen_ai.usage.input_tokens`` with source ``provider`` (the model's tokenizer
itself, not an estimate).

When ``encode`` runs inside an EMBEDDING span that a framework opened and that has no token count
yet (a Chroma embedding-function call, a LlamaIndex embedding call, a ``ragtrail.span(kind=
"EMBEDDING")``), the model's details are added to that span instead of nesting a second EMBEDDING
span, so one embedding operation is one span.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ClassVar

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail.connectors._common import FailureCounter, RagtrailInstrumentor, module_functions
from ragtrail.tracing import (
    get_config,
    is_enabled,
    model_display_name,
    record_documents,
    record_exception,
    set_content,
)
from ragtrail.tracing import gpu as _gpu

_ST_MODULE = "sentence_transformers.sentence_transformer.model"
_CE_MODULE = "sentence_transformers.cross_encoder.model"
_BASE_MODULE = "sentence_transformers.base.model"
_PROVIDER = "sentence_transformers"
_TOP_SCORES = 10

# Token accumulator of the innermost traced call; ``preprocess`` adds each batch's real token count.
_tokens: ContextVar[list[int] | None] = ContextVar("ragtrail_st_tokens", default=None)
# True inside ``CrossEncoder.rank`` so that its inner ``predict`` is not a second span.
_in_rank: ContextVar[bool] = ContextVar("ragtrail_st_in_rank", default=False)

_counter = FailureCounter("st", "the sentence-transformers connector")
failures = _counter.count
_failed = _counter.failed
_names: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()


_PROVIDER = "sentence_transformers"
"""``gen_ai.provider.name`` of an in-process sentence-transformers model."""


def model_name(model: Any) -> str | None:
    """The model's hub id when known, else a stable name for the directory it was loaded from (its model
    card's title or the path's last components, never the full path: see ``ragtrail.tracing.model_display_name``); cached per
    model."""
    try:
        return _names[model]
    except (KeyError, TypeError):
        pass
    name: str | None = None
    try:
        card = getattr(model, "model_card_data", None)
        for attr in ("model_id", "base_model"):
            val = getattr(card, attr, None) if card is not None else None
            if isinstance(val, str) and val:
                name = val
                break
        if name is None:
            first = model[0]
            inner = getattr(first, "auto_model", None) or getattr(first, "model", None)
            cfg = getattr(inner, "config", None)
            val = getattr(cfg, "_name_or_path", None) or getattr(cfg, "name_or_path", None)
            if isinstance(val, str) and val:
                name = val
        if name is None:
            inner = getattr(model, "model", None)
            cfg = getattr(inner, "config", None)
            val = getattr(cfg, "_name_or_path", None)
            if isinstance(val, str) and val:
                name = val
        if name is not None:
            name = model_display_name(name)
    except Exception:
        name = None
    try:
        _names[model] = name
    except TypeError:
        pass
    return name


def _count_inputs(inputs: Any) -> int:
    if isinstance(inputs, (str, dict, tuple)):
        return 1
    try:
        return len(inputs)
    except TypeError:
        return 1


def _dimension(result: Any) -> int | None:
    shape = getattr(result, "shape", None)
    if shape is not None:
        return int(shape[-1]) if len(shape) >= 1 else None
    if isinstance(result, list) and result:
        shape = getattr(result[0], "shape", None)
        if shape is not None and len(shape) >= 1:
            return int(shape[-1])
    return None


def _cuda_device(device: Any) -> Any:
    """The torch device when it is a CUDA device, else None."""
    if getattr(device, "type", None) == "cuda":
        return device
    return None


def _attr(span: Span, key: str) -> Any:
    attrs = getattr(span, "attributes", None)
    try:
        return attrs.get(key) if attrs is not None else None
    except Exception:
        return None


def _adoptable_embedding_span(span: Span) -> bool:
    """An open framework EMBEDDING span without a token count yet: encode enriches it."""
    if not span.is_recording():
        return False
    return _attr(span, semconv.SPAN_KIND) == semconv.EMBEDDING and _attr(span, semconv.USAGE_SOURCE) is None


def _unnamed_embeddings_span(span: Span) -> bool:
    """A framework's GenAI embeddings span that knew no model (named ``embeddings``): the model names it."""
    if _attr(span, semconv.GEN_AI_OPERATION_NAME) != semconv.GEN_AI_OP_EMBEDDINGS:
        return False
    return not _attr(span, semconv.GEN_AI_REQUEST_MODEL)


# ---------------------------------------------------------------------------------------- wrappers
def _preprocess_wrapper(
    wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    acc = _tokens.get()
    features = wrapped(*args, **kwargs)
    if acc is not None:
        try:
            getter = getattr(features, "get", None)  # a dict or a transformers BatchEncoding
            mask = getter("attention_mask") if getter is not None else None
            if mask is not None:
                acc[0] += int(mask.sum())
            else:
                ids = getter("input_ids") if getter is not None else None
                if ids is not None:
                    acc[0] += int(ids.numel())
        except Exception:
            _failed("token count")
    return features


def _encode_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not is_enabled() or _tokens.get() is not None:
        # disabled, or a nested encode (encode_query → encode) already being traced
        return wrapped(*args, **kwargs)
    cfg = get_config()
    try:
        inputs = args[0] if args else kwargs.get("inputs", kwargs.get("sentences"))
        batch_size = kwargs.get("batch_size", args[3] if len(args) > 3 else 32)
        name = model_name(instance)
        device = instance.device
        attrs: dict[str, Any] = {
            semconv.EMBEDDING_COUNT: _count_inputs(inputs),
            semconv.DEVICE: str(device),
            semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OP_EMBEDDINGS,
        }
        if isinstance(batch_size, int):
            attrs[semconv.EMBEDDING_BATCH_SIZE] = batch_size
        if name:
            attrs[semconv.EMBEDDING_MODEL] = name
        parent = otel_trace.get_current_span()
        adopt = _adoptable_embedding_span(parent)
        token_ctx = None
        if adopt:
            span = parent
            prior = _attr(span, semconv.EMBEDDING_COUNT)
            if isinstance(prior, int) and _attr(span, semconv.EMBEDDING_BATCH_SIZE) is not None:
                attrs[semconv.EMBEDDING_COUNT] = prior + attrs[semconv.EMBEDDING_COUNT]
            if _attr(span, semconv.EMBEDDING_MODEL):
                attrs.pop(semconv.EMBEDDING_MODEL, None)  # keep the name the framework gave the model
            elif name and _unnamed_embeddings_span(span):
                span.update_name(f"{semconv.GEN_AI_OP_EMBEDDINGS} {name}")  # the framework knew no model
                attrs[semconv.GEN_AI_REQUEST_MODEL] = name
            span.set_attributes(attrs)
        else:
            assert cfg is not None
            attrs[semconv.SPAN_KIND] = semconv.EMBEDDING
            attrs[semconv.GEN_AI_PROVIDER_NAME] = _PROVIDER
            if name:
                attrs[semconv.GEN_AI_REQUEST_MODEL] = name
            span_name = f"{semconv.GEN_AI_OP_EMBEDDINGS} {name}" if name else semconv.GEN_AI_OP_EMBEDDINGS
            span = cfg.tracer.start_span(span_name, attributes=attrs)
            token_ctx = otel_context.attach(otel_trace.set_span_in_context(span))
            set_content(span, semconv.INPUT_VALUE, inputs)
        cuda = _cuda_device(device)
        # GPU type, utilisation, memory (NVML, sampled off this thread) and torch's peak for this call
        gpu = _gpu.begin(_gpu.cuda_indices(cuda), reset_peak=True) if cuda is not None else None
        acc = [0]
        tok = _tokens.set(acc)
    except Exception:
        _failed("encode start")
        return wrapped(*args, **kwargs)
    try:
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            record_exception(span, exc)
            raise
        try:
            dim = _dimension(result)
            if dim:
                span.set_attribute(semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT, dim)
            if acc[0]:
                n = acc[0]
                if adopt:
                    # a framework span enriched by several encode calls (LlamaIndex batches) adds up
                    prev = _attr(span, semconv.GEN_AI_USAGE_INPUT_TOKENS)
                    n += int(prev or 0)
                span.set_attributes(
                    {
                        semconv.GEN_AI_USAGE_INPUT_TOKENS: n,
                        semconv.USAGE_TOTAL_TOKENS: n,
                        semconv.USAGE_SOURCE: "provider",
                        semconv.GEN_AI_PROVIDER_NAME: _PROVIDER,
                    }
                )
                if name and not (adopt and _attr(span, semconv.GEN_AI_REQUEST_MODEL)):
                    span.set_attribute(semconv.GEN_AI_REQUEST_MODEL, name)
            if gpu is not None:
                gpu.finish(span)
        except Exception:
            _failed("encode result")
        return result
    finally:
        _tokens.reset(tok)
        if token_ctx is not None:
            try:
                span.end()
            finally:
                otel_context.detach(token_ctx)


def _scores_list(scores: Any) -> list[float]:
    try:
        if hasattr(scores, "tolist"):
            scores = scores.tolist()
        out: list[float] = []
        for s in scores:
            if isinstance(s, list):  # multi-label heads: one score per label; keep the first
                s = s[0] if s else float("nan")
            elif hasattr(s, "tolist"):
                s = s.tolist()
                if isinstance(s, list):
                    s = s[0] if s else float("nan")
            out.append(float(s))
        return out
    except Exception:
        return []


def _start_reranker(name: str, instance: Any, extra: dict[str, Any]) -> tuple[Span, object, Any]:
    cfg = get_config()
    assert cfg is not None
    attrs: dict[str, Any] = {semconv.SPAN_KIND: semconv.RERANKER, semconv.DEVICE: str(instance.device)}
    model = model_name(instance)
    if model:
        attrs[semconv.RERANKER_MODEL] = model
        attrs[semconv.GEN_AI_REQUEST_MODEL] = model
    attrs.update(extra)
    span = cfg.tracer.start_span(name, attributes=attrs)
    token = otel_context.attach(otel_trace.set_span_in_context(span))
    return span, token, _cuda_device(instance.device)


def _record_tokens(span: Span, n: int, model: str | None) -> None:
    if n:
        span.set_attributes(
            {
                semconv.GEN_AI_USAGE_INPUT_TOKENS: n,
                semconv.USAGE_TOTAL_TOKENS: n,
                semconv.USAGE_SOURCE: "provider",
                semconv.GEN_AI_PROVIDER_NAME: _PROVIDER,
            }
        )


def _predict_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not is_enabled() or _in_rank.get() or _tokens.get() is not None:
        return wrapped(*args, **kwargs)
    try:
        inputs = args[0] if args else kwargs.get("inputs", kwargs.get("sentences"))
        single = isinstance(inputs, (tuple, dict)) or (
            isinstance(inputs, list) and len(inputs) == 2 and all(isinstance(x, str) for x in inputs)
        )
        n_pairs = 1 if single else _count_inputs(inputs)
        extra: dict[str, Any] = {semconv.RERANKER_PAIR_COUNT: n_pairs}
        bs = kwargs.get("batch_size")
        if isinstance(bs, int):
            extra[semconv.EMBEDDING_BATCH_SIZE] = bs
        span, token, cuda = _start_reranker("CrossEncoder.predict", instance, extra)
        set_content(span, semconv.INPUT_VALUE, inputs)
        gpu = _gpu.begin(_gpu.cuda_indices(cuda), reset_peak=True) if cuda is not None else None
        acc = [0]
        tok = _tokens.set(acc)
    except Exception:
        _failed("predict start")
        return wrapped(*args, **kwargs)
    try:
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            record_exception(span, exc)
            raise
        try:
            scores = _scores_list(result if not single else [result])
            if scores:
                span.set_attribute(semconv.RERANKER_TOP_SCORES, sorted(scores, reverse=True)[:_TOP_SCORES])
            set_content(span, semconv.OUTPUT_VALUE, scores)
            _record_tokens(span, acc[0], None)
            if gpu is not None:
                gpu.finish(span)
        except Exception:
            _failed("predict result")
        return result
    finally:
        _tokens.reset(tok)
        try:
            span.end()
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]


def _rank_wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not is_enabled() or _in_rank.get():
        return wrapped(*args, **kwargs)
    try:
        query = args[0] if args else kwargs.get("query")
        documents = args[1] if len(args) > 1 else kwargs.get("documents")
        top_k = args[2] if len(args) > 2 else kwargs.get("top_k")
        extra: dict[str, Any] = {semconv.RERANKER_PAIR_COUNT: _count_inputs(documents)}
        if isinstance(top_k, int):
            extra[semconv.RETRIEVAL_TOP_K] = top_k
        span, token, cuda = _start_reranker("CrossEncoder.rank", instance, extra)
        set_content(span, semconv.GEN_AI_RETRIEVAL_QUERY_TEXT, query)
        gpu = _gpu.begin(_gpu.cuda_indices(cuda), reset_peak=True) if cuda is not None else None
        acc = [0]
        tok = _tokens.set(acc)
        rtok = _in_rank.set(True)
    except Exception:
        _failed("rank start")
        return wrapped(*args, **kwargs)
    try:
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            record_exception(span, exc)
            raise
        try:
            docs = []
            scores = []
            for item in result:
                idx = item.get("corpus_id")
                score = float(item.get("score"))
                scores.append(score)
                content = item.get("text")
                if content is None and documents is not None and isinstance(idx, int) and 0 <= idx < len(documents):
                    content = documents[idx]
                docs.append({"id": idx, "score": score, "content": content})
            record_documents(span, docs, score_kind="cross_encoder")
            span.set_attribute(semconv.RERANKER_TOP_SCORES, scores[:_TOP_SCORES])
            _record_tokens(span, acc[0], None)
            if gpu is not None:
                gpu.finish(span)
        except Exception:
            _failed("rank result")
        return result
    finally:
        _in_rank.reset(rtok)
        _tokens.reset(tok)
        try:
            span.end()
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]


class SentenceTransformersInstrumentor(RagtrailInstrumentor):
    """Traces ``SentenceTransformer.encode`` (EMBEDDING) and ``CrossEncoder.predict``/``rank`` (RERANKER)."""

    library: ClassVar[str] = "sentence_transformers"
    distribution: ClassVar[str] = "sentence-transformers"
    extra: ClassVar[str] = "embeddings"
    supported: ClassVar[tuple[str, ...]] = (">=6.0", "<7")

    def _instrument(self, **kwargs: Any) -> None:
        import wrapt

        wrapt.wrap_function_wrapper(_ST_MODULE, "SentenceTransformer.encode", _encode_wrapper)
        wrapt.wrap_function_wrapper(_CE_MODULE, "CrossEncoder.predict", _predict_wrapper)
        wrapt.wrap_function_wrapper(_CE_MODULE, "CrossEncoder.rank", _rank_wrapper)
        wrapt.wrap_function_wrapper(_BASE_MODULE, "BaseModel.preprocess", _preprocess_wrapper)

    def _uninstrument(self, **kwargs: Any) -> None:
        import importlib

        from opentelemetry.instrumentation.utils import unwrap

        unwrap(importlib.import_module(_ST_MODULE).SentenceTransformer, "encode")
        ce = importlib.import_module(_CE_MODULE).CrossEncoder
        unwrap(ce, "predict")
        unwrap(ce, "rank")
        unwrap(importlib.import_module(_BASE_MODULE).BaseModel, "preprocess")


instrument, uninstrument = module_functions(SentenceTransformersInstrumentor)
