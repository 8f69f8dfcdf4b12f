"""The span side of the LlamaIndex connector: a dispatcher span starts an OTel span under the OTel span
of its LlamaIndex parent (private helper spans and text splitting are folded into it), and ends it on
exit or drop, unless a stream it returned is still being read. Node postprocessors and selectors get their
own span with the nodes or choices in and out.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail.connectors.llama_index._extract import (
    _arguments,
    _Classes,
    _component,
    _genai_name,
    _is_stream,
    _kind,
    _node_doc,
    _query_text,
    _response_text,
)
from ragtrail.connectors.llama_index._state import _STATE, _detach, _end, _failed, _Open
from ragtrail.connectors.llama_index._streams import _STREAM_OWNER, _own_stream
from ragtrail.tracing import get_config, model_display_name, record_documents, record_exception, set_content

_MAX_SKIPPED = 100_000


def _new_span(id_: str, instance: Any, parent_span_id: str | None, bound_args: Any = None) -> _Open | None:
    name = id_.split("-", 1)[0]
    method = name.rsplit(".", 1)[-1]
    component = _component(instance, method)
    if component is not None:
        name = name[: -len(method)] + method.lstrip("_")
    elif (method.startswith("_") and method != "__call__") or (
        _Classes.splitter and isinstance(instance, _Classes.splitter)
    ):
        with _STATE.lock:
            if len(_STATE.skipped) > _MAX_SKIPPED:
                _STATE.skipped.clear()
            _STATE.skipped[id_] = parent_span_id
        return None
    cfg = get_config()
    if cfg is None:
        return None
    kind = _kind(instance, method)
    parent = _STATE.resolve(parent_span_id)
    lazy = False
    if parent is None:
        # started while the user reads a stream: the span that returned that stream is the parent
        parent = _STREAM_OWNER.get()
        lazy = parent is not None
    if kind == semconv.LLM and parent is not None and parent.kind == semconv.LLM:
        # an LLM method implemented by another (acomplete → complete): one call, one LLM span
        with _STATE.lock:
            _STATE.skipped[id_] = parent_span_id
        return None
    if kind == semconv.LLM and lazy and parent is not None:
        # astream_complete's generator calling stream_complete as the user reads: still one LLM call
        outer = _STATE.streaming_llm(parent, id(instance))
        if outer is not None:
            with _STATE.lock:
                _STATE.skipped[id_] = outer
            return None
    ctx = otel_trace.set_span_in_context(parent.span) if parent is not None else None
    attrs: dict[str, Any] = {semconv.SPAN_KIND: kind, semconv.LLAMA_INDEX_SPAN_ID: id_}
    if parent_span_id:
        attrs[semconv.LLAMA_INDEX_PARENT_SPAN_ID] = parent_span_id
    provider = model = None
    try:
        if kind == semconv.RETRIEVER:
            top_k = getattr(instance, "similarity_top_k", None) or getattr(instance, "_similarity_top_k", None)
            if isinstance(top_k, int):
                attrs[semconv.RETRIEVAL_TOP_K] = top_k
        elif kind == semconv.EMBEDDING:
            model = getattr(instance, "model_name", None)
            if isinstance(model, str) and model:
                model = model_display_name(model)  # a local directory's stable name, never its path
                attrs[semconv.EMBEDDING_MODEL] = model
                attrs[semconv.GEN_AI_REQUEST_MODEL] = model
            bs = getattr(instance, "embed_batch_size", None)
            if isinstance(bs, int):
                attrs[semconv.EMBEDDING_BATCH_SIZE] = bs
            attrs[semconv.GEN_AI_OPERATION_NAME] = semconv.GEN_AI_OP_EMBEDDINGS
            attrs[semconv.GEN_AI_PROVIDER_NAME] = type(instance).__name__
        elif kind == semconv.LLM:
            provider = type(instance).__name__
            meta = getattr(instance, "metadata", None)
            model = getattr(meta, "model_name", None) or getattr(instance, "model", None)
            if isinstance(model, str) and model and model != "unknown":  # LlamaIndex's "not said"
                model = model_display_name(model)  # a local directory's stable name, never its path
                attrs[semconv.GEN_AI_REQUEST_MODEL] = model
            else:
                model = None
            attrs[semconv.GEN_AI_PROVIDER_NAME] = provider
            attrs[semconv.GEN_AI_OPERATION_NAME] = (
                semconv.GEN_AI_OP_CHAT if "chat" in method else semconv.GEN_AI_OP_TEXT_COMPLETION
            )
            attrs[semconv.GEN_AI_REQUEST_STREAM] = "stream" in method
        name = _genai_name(kind, name, instance, model, attrs)
    except Exception:
        _failed("span attributes")
    span = cfg.tracer.start_span(name, context=ctx, attributes=attrs)
    token = otel_context.attach(otel_trace.set_span_in_context(span))
    rec = _Open(
        span=span,
        kind=kind,
        parent_id=parent_span_id,
        token=token,
        provider=provider,
        model=model,
        parent=parent,
        component=component,
        instance_id=id(instance),
    )
    if component is not None:
        _component_input(rec, bound_args)
    with _STATE.lock:
        _STATE.open[id_] = rec
    return rec


def _component_input(rec: _Open, bound_args: Any) -> None:
    """A postprocessor's query and incoming nodes; a selector's query and choices."""
    try:
        args = _arguments(bound_args)
        query = args.get("query_bundle") if rec.component == "postprocessor" else args.get("query")
        if query is not None:
            key = semconv.GEN_AI_RETRIEVAL_QUERY_TEXT if rec.component == "postprocessor" else semconv.INPUT_VALUE
            set_content(rec.span, key, _query_text(query))
        if rec.component == "postprocessor":
            nodes = args.get("nodes") or []
            rec.span.set_attribute(semconv.RERANKER_PAIR_COUNT, len(nodes))
            set_content(rec.span, semconv.INPUT_VALUE, [_node_doc(n) for n in nodes])
        else:
            choices = args.get("choices") or []
            set_content(
                rec.span,
                semconv.LLAMA_INDEX_SELECTOR_CHOICES,
                [getattr(c, "description", c) if not isinstance(c, str) else c for c in choices],
            )
    except Exception:
        _failed("component input")


def _component_output(rec: _Open, result: Any) -> None:
    try:
        if rec.component == "postprocessor":
            if isinstance(result, list):
                score_kind = "reranker" if rec.kind == semconv.RERANKER else "llama_index"
                record_documents(rec.span, [_node_doc(n) for n in result], score_kind=score_kind)
        else:
            selections = getattr(result, "selections", None)
            if selections is not None:
                out = [{"index": getattr(s, "index", None), "reason": getattr(s, "reason", None)} for s in selections]
                set_content(rec.span, semconv.OUTPUT_VALUE, out)
    except Exception:
        _failed("component output")


def _take(id_: str) -> _Open | None:
    """The open span ``id_`` (None when it was skipped or is unknown), its context detached."""
    with _STATE.lock:
        if _STATE.skipped.pop(id_, None) is not None or id_ not in _STATE.open:
            return None
        rec = _STATE.open[id_]
    _detach(rec.token)
    rec.token = None
    return rec


def _exit_span(id_: str, result: Any) -> _Open | None:
    rec = _take(id_)
    if rec is None:
        return None
    streaming = _is_stream(result)
    if streaming:
        if rec.kind != semconv.LLM and getattr(result, "response_gen", None) is not None:
            if _own_stream(rec, result):
                rec.pending = True  # ends after the user reads the last chunk
                return rec
            streaming = False
        with _STATE.lock:
            # an LLM stream ends on LlamaIndex's end event; a generator-returning span ends with the
            # streamed LLM call below it, or with the span above it that owns the response's stream
            wait = rec.kind == semconv.LLM or _STATE.waiting_on(rec) or rec.parent is not None
            if wait:
                rec.pending = True
        if wait:
            return rec
    try:
        if rec.component is not None:
            _component_output(rec, result)
        elif rec.kind in (semconv.CHAIN, semconv.AGENT, semconv.TOOL) and not streaming:
            _record_output(rec.span, result)
    except Exception:
        _failed("span output")
    _end(id_, rec)
    return rec


def _record_output(span: Span, result: Any) -> None:
    if result is None:
        return
    if isinstance(result, (str, int, float, bool)):
        set_content(span, semconv.OUTPUT_VALUE, result)
        return
    if hasattr(result, "source_nodes") or hasattr(result, "response"):
        text = _response_text(result)
        if text is not None:
            set_content(span, semconv.OUTPUT_VALUE, text)


def _drop_span(id_: str, err: BaseException | None) -> _Open | None:
    rec = _take(id_)
    if rec is None:
        return None
    if err is not None:
        record_exception(rec.span, err)
    _end(id_, rec)
    return rec
