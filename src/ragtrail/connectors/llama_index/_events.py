"""The event side of the LlamaIndex connector: LlamaIndex's instrumentation events (query, retrieval,
embedding, LLM, synthesis, rerank) fill in the details of the OTel span they belong to -- query text and
answer, retrieved nodes, models, messages, tokens and time to first token -- and the end of a streamed
LLM call ends the spans that waited on it.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail.connectors.llama_index._extract import (
    _estimate_tokens,
    _finish_reason,
    _node_doc,
    _query_text,
    _response_text,
    _usage,
)
from ragtrail.connectors.llama_index._state import _STATE, _end_record, _Open
from ragtrail.connectors.llama_index._streams import _end_pending_ancestors
from ragtrail.tracing import model_display_name, record_documents, record_messages, record_usage, set_content


def _on_event(event: Any) -> None:
    rec = _STATE.resolve(getattr(event, "span_id", None))
    if rec is None:
        return
    span = rec.span
    kind = type(event).__name__
    if kind == "QueryStartEvent":
        set_content(span, semconv.INPUT_VALUE, _query_text(event.query))
    elif kind == "QueryEndEvent":
        _set_output(span, event.response)
    elif kind == "RetrievalStartEvent":
        set_content(span, semconv.GEN_AI_RETRIEVAL_QUERY_TEXT, _query_text(event.str_or_query_bundle))
    elif kind == "RetrievalEndEvent":
        record_documents(span, [_node_doc(n) for n in event.nodes or []], score_kind="llama_index")
    elif kind == "EmbeddingStartEvent":
        md = event.model_dict or {}
        if isinstance(md.get("model_name"), str):
            span.set_attribute(semconv.EMBEDDING_MODEL, model_display_name(md["model_name"]))
    elif kind == "EmbeddingEndEvent":
        chunks = event.chunks or []
        rec.embed_count += len(chunks)
        span.set_attribute(semconv.EMBEDDING_COUNT, rec.embed_count)
        if event.embeddings:
            span.set_attribute(semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT, len(event.embeddings[0]))
        set_content(span, semconv.INPUT_VALUE, chunks if len(chunks) != 1 else chunks[0])
    elif kind in ("LLMCompletionStartEvent", "LLMChatStartEvent"):
        rec.llm_start = time.perf_counter()
        md = event.model_dict or {}
        model = md.get("model") or md.get("model_name")
        if isinstance(model, str) and model and model != "unknown":
            rec.model = model = model_display_name(model)
            span.set_attribute(semconv.GEN_AI_REQUEST_MODEL, model)
        if kind == "LLMChatStartEvent":
            record_messages(span, list(event.messages or ()))
        else:
            set_content(span, semconv.INPUT_VALUE, event.prompt)
        params = event.additional_kwargs or {}
        for key, attr in (
            ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE),
            ("max_tokens", semconv.GEN_AI_REQUEST_MAX_TOKENS),
        ):
            val = params.get(key, md.get(key))
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                span.set_attribute(attr, val)
    elif kind in ("LLMCompletionInProgressEvent", "LLMChatInProgressEvent"):
        if rec.first_token is None:
            rec.first_token = time.perf_counter()
            span.set_attribute(semconv.GEN_AI_REQUEST_STREAM, True)
    elif kind in ("LLMCompletionEndEvent", "LLMChatEndEvent"):
        _on_llm_end(rec, event, kind)
    elif kind == "SynthesizeStartEvent":
        set_content(span, semconv.INPUT_VALUE, _query_text(event.query))
    elif kind == "SynthesizeEndEvent":
        _set_output(span, event.response)
    elif kind == "ReRankStartEvent":
        if rec.component != "postprocessor":
            return  # rerank events from outside a postprocessor span: never relabel the enclosing span
        rec.kind = semconv.RERANKER
        span.set_attribute(semconv.SPAN_KIND, semconv.RERANKER)
        if event.model_name:
            span.set_attribute(semconv.RERANKER_MODEL, model_display_name(str(event.model_name)))
        if isinstance(event.top_n, int):
            span.set_attribute(semconv.RETRIEVAL_TOP_K, event.top_n)
        span.set_attribute(semconv.RERANKER_PAIR_COUNT, len(event.nodes or []))
        if event.query is not None:
            set_content(span, semconv.GEN_AI_RETRIEVAL_QUERY_TEXT, _query_text(event.query))
    elif kind == "ReRankEndEvent":
        record_documents(span, [_node_doc(n) for n in event.nodes or []], score_kind="reranker")


def _set_output(span: Span, response: Any) -> None:
    text = _response_text(response)
    if text is not None:  # a stream's text is recorded when the user has read it (see _finish_stream)
        set_content(span, semconv.OUTPUT_VALUE, text)


def _on_llm_end(rec: _Open, event: Any, kind: str) -> None:
    span = rec.span
    resp = event.response
    text = _response_text(resp)
    rec.stream_text = text
    if kind == "LLMChatEndEvent":
        msg = getattr(resp, "message", None)
        out = msg if msg is not None else text or ""
        record_messages(span, None, [out], finish_reasons=[_finish_reason(resp)])
    else:
        set_content(span, semconv.OUTPUT_VALUE, text)
    inp, out = _usage(resp)
    source = "provider"
    if inp is None and out is None:
        prompt = (
            event.prompt
            if kind == "LLMCompletionEndEvent"
            else "\n".join(str(getattr(m, "content", None) or "") for m in event.messages or ())
        )
        inp = _estimate_tokens(prompt or "")
        out = _estimate_tokens(text or "") if isinstance(text, str) else None
        source = "tokenizer_estimate"
    ttft = None
    if rec.first_token is not None and rec.llm_start is not None:
        ttft = rec.first_token - rec.llm_start
    record_usage(
        span, provider=rec.provider, model=rec.model, input_tokens=inp, output_tokens=out, source=source, ttft_s=ttft
    )
    if rec.pending:
        _end_record(rec)
        _end_pending_ancestors(rec.parent, text)
