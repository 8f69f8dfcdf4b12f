"""LlamaIndex connector over ``llama_index.core.instrumentation``.

One span handler and one event handler are registered on LlamaIndex's root dispatcher.

* Every public dispatcher span (``RetrieverQueryEngine.query``, ``VectorIndexRetriever.retrieve``,
  ``MiniLM.get_query_embedding``, ``CompactAndRefine.synthesize``, ``OpenAI.chat``…) becomes an OTel
  span whose parent is the OTel span of LlamaIndex's own parent span id. Private helper spans
  (``_retrieve``, ``_query``…) and text splitting are folded into their nearest public ancestor.
* Kinds: query engines and synthesizers CHAIN, retrievers RETRIEVER, embeddings EMBEDDING, LLM
  ``chat``/``complete`` (and their stream/async forms) LLM, rerankers RERANKER, tools TOOL, agents AGENT.
* Events fill in the details: query text and answer, retrieved nodes (id, score, rank, content),
  embedding model/count/dimension, LLM model, messages, tokens (the provider's usage when the response
  carries it, else a tokenizer estimate) and, for streamed calls, time to first token. A streamed LLM
  span stays open until LlamaIndex reports the end of the stream.
* The OTel span is made current while LlamaIndex runs the call, so spans from other connectors
  (Chroma queries under a retriever, sentence-transformers under an embedding) nest correctly.
"""

from __future__ import annotations

import inspect
import threading
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail._log import logger
from ragtrail.connectors._common import FailureCounter, RagtrailInstrumentor, module_functions
from ragtrail.tracing import get_config, is_enabled, record_documents, record_exception, record_usage, set_content

_LLM_METHODS = frozenset(
    {
        "chat",
        "complete",
        "stream_chat",
        "stream_complete",
        "achat",
        "acomplete",
        "astream_chat",
        "astream_complete",
    }
)
_MAX_SKIPPED = 100_000

_counter = FailureCounter("llama_index", "the LlamaIndex connector")
failures = _counter.count
_failed = _counter.failed


@dataclass
class _Open:
    span: Span
    kind: str
    parent_id: str | None
    token: object | None
    start: float = field(default_factory=time.perf_counter)
    llm_start: float | None = None
    first_token: float | None = None
    provider: str | None = None
    model: str | None = None
    pending: bool = False  # a streamed LLM call whose LlamaIndex span ended before the stream did
    embed_count: int = 0


class _Classes:
    """LlamaIndex base classes used to pick span kinds (imported by ``_instrument``)."""

    retriever: tuple[type, ...] = ()
    embedding: tuple[type, ...] = ()
    llm: tuple[type, ...] = ()
    postprocessor: tuple[type, ...] = ()
    tool: tuple[type, ...] = ()
    splitter: tuple[type, ...] = ()


def _kind(instance: Any, method: str) -> str:
    if instance is None:
        return semconv.CHAIN
    if _Classes.retriever and isinstance(instance, _Classes.retriever):
        return semconv.RETRIEVER
    if _Classes.embedding and isinstance(instance, _Classes.embedding):
        return semconv.EMBEDDING
    if _Classes.llm and isinstance(instance, _Classes.llm):
        return semconv.LLM if method in _LLM_METHODS else semconv.CHAIN
    if _Classes.postprocessor and isinstance(instance, _Classes.postprocessor):
        return semconv.RERANKER if "rerank" in type(instance).__name__.lower() else semconv.CHAIN
    if _Classes.tool and isinstance(instance, _Classes.tool):
        return semconv.TOOL
    if "agent" in type(instance).__name__.lower():
        return semconv.AGENT
    return semconv.CHAIN


def _query_text(q: Any) -> Any:
    return getattr(q, "query_str", q)


def _node_doc(n: Any) -> dict[str, Any]:
    node = getattr(n, "node", n)
    doc: dict[str, Any] = {
        "id": getattr(node, "node_id", None) or getattr(node, "id_", None),
        "score": getattr(n, "score", None),
    }
    try:
        doc["content"] = node.get_content()
    except Exception:
        doc["content"] = getattr(node, "text", None)
    meta = getattr(node, "metadata", None)
    if meta:
        doc["metadata"] = meta
    return doc


def _response_text(resp: Any) -> Any:
    if resp is None:
        return None
    for attr in ("response", "text"):
        val = getattr(resp, attr, None)
        if isinstance(val, str):
            return val
    msg = getattr(resp, "message", None)
    if msg is not None:
        content = getattr(msg, "content", None)
        if isinstance(content, str):
            return content
    return str(resp)


def _usage(resp: Any) -> tuple[int | None, int | None]:
    """(input, output) tokens the provider reported in a CompletionResponse/ChatResponse, if any."""
    for source in (getattr(resp, "raw", None), getattr(resp, "additional_kwargs", None)):
        if source is None:
            continue
        usage = source.get("usage") if isinstance(source, dict) else getattr(source, "usage", None)
        cand = usage if usage is not None else source
        get = cand.get if isinstance(cand, dict) else (lambda k, _c=cand: getattr(_c, k, None))
        inp = get("prompt_tokens") or get("input_tokens")
        out = get("completion_tokens") or get("output_tokens")
        if inp is not None or out is not None:
            return (int(inp) if inp is not None else None), (int(out) if out is not None else None)
    return None, None


def _estimate_tokens(text: str) -> int | None:
    try:
        from llama_index.core.utils import get_tokenizer

        return len(get_tokenizer()(text))
    except Exception:
        return None


def _messages(messages: Any) -> list[dict[str, Any]]:
    out = []
    for m in messages or []:
        role = getattr(m, "role", None)
        out.append({"role": getattr(role, "value", role), "content": getattr(m, "content", None)})
    return out


class _State:
    """Open spans keyed by LlamaIndex span id; skipped (folded) ids mapped to their parent id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[str, _Open] = {}
        self.skipped: dict[str, str | None] = {}

    def resolve(self, span_id: str | None) -> _Open | None:
        hops = 0
        with self.lock:
            while span_id is not None and hops < 256:
                rec = self.open.get(span_id)
                if rec is not None:
                    return rec
                if span_id not in self.skipped:
                    return None
                span_id = self.skipped[span_id]
                hops += 1
        return None

    def clear(self) -> None:
        with self.lock:
            recs = list(self.open.values())
            self.open.clear()
            self.skipped.clear()
        for rec in recs:
            try:
                rec.span.end()
            except Exception:
                pass


_STATE = _State()


def _detach(token: object | None) -> None:
    if token is None:
        return
    try:
        otel_context._RUNTIME_CONTEXT.detach(token)  # type: ignore[attr-defined,arg-type]
    except Exception:
        # LlamaIndex ended the span in another context (a Future's callback): nothing to restore here
        pass


def _end(span_id: str, rec: _Open) -> None:
    with _STATE.lock:
        _STATE.open.pop(span_id, None)
    rec.span.end()


# ------------------------------------------------------------------------------------- span handler
def _new_span(id_: str, instance: Any, parent_span_id: str | None) -> _Open | None:
    name = id_.split("-", 1)[0]
    method = name.rsplit(".", 1)[-1]
    if (method.startswith("_") and method != "__call__") or (
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
    if kind == semconv.LLM and parent is not None and parent.kind == semconv.LLM:
        # an LLM method implemented by another (acomplete → complete): one call, one LLM span
        with _STATE.lock:
            _STATE.skipped[id_] = parent_span_id
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
            if isinstance(model, str):
                attrs[semconv.EMBEDDING_MODEL] = model
            bs = getattr(instance, "embed_batch_size", None)
            if isinstance(bs, int):
                attrs[semconv.EMBEDDING_BATCH_SIZE] = bs
            attrs[semconv.GEN_AI_OPERATION_NAME] = "embeddings"
        elif kind == semconv.LLM:
            provider = type(instance).__name__
            meta = getattr(instance, "metadata", None)
            model = getattr(meta, "model_name", None) or getattr(instance, "model", None)
            if isinstance(model, str):
                attrs[semconv.GEN_AI_REQUEST_MODEL] = model
            else:
                model = None
            attrs[semconv.GEN_AI_PROVIDER_NAME] = provider
            attrs[semconv.GEN_AI_OPERATION_NAME] = "chat" if "chat" in method else "text_completion"
            attrs[semconv.STREAMING] = "stream" in method
    except Exception:
        _failed("span attributes")
    span = cfg.tracer.start_span(name, context=ctx, attributes=attrs)
    token = otel_context.attach(otel_trace.set_span_in_context(span))
    rec = _Open(span=span, kind=kind, parent_id=parent_span_id, token=token, provider=provider, model=model)
    with _STATE.lock:
        _STATE.open[id_] = rec
    return rec


def _exit_span(id_: str, result: Any) -> _Open | None:
    with _STATE.lock:
        if _STATE.skipped.pop(id_, None) is not None or id_ not in _STATE.open:
            return None
        rec = _STATE.open[id_]
    _detach(rec.token)
    rec.token = None
    streaming = inspect.isgenerator(result) or inspect.isasyncgen(result)
    if streaming and rec.kind == semconv.LLM:
        rec.pending = True  # ended by the LLM end event, when the stream is consumed
        return rec
    try:
        if rec.kind in (semconv.CHAIN, semconv.AGENT, semconv.TOOL) and not streaming:
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
    with _STATE.lock:
        if _STATE.skipped.pop(id_, None) is not None or id_ not in _STATE.open:
            return None
        rec = _STATE.open[id_]
    _detach(rec.token)
    rec.token = None
    if err is not None:
        record_exception(rec.span, err)
    _end(id_, rec)
    return rec


# ----------------------------------------------------------------------------------- event handler
def _on_event(event: Any) -> None:
    rec = _STATE.resolve(getattr(event, "span_id", None))
    if rec is None:
        return
    span = rec.span
    kind = type(event).__name__
    if kind == "QueryStartEvent":
        set_content(span, semconv.INPUT_VALUE, _query_text(event.query))
    elif kind == "QueryEndEvent":
        set_content(span, semconv.OUTPUT_VALUE, _response_text(event.response))
    elif kind == "RetrievalStartEvent":
        set_content(span, semconv.RETRIEVAL_QUERY, _query_text(event.str_or_query_bundle))
    elif kind == "RetrievalEndEvent":
        record_documents(span, [_node_doc(n) for n in event.nodes or []], score_kind="llama_index")
    elif kind == "EmbeddingStartEvent":
        md = event.model_dict or {}
        if isinstance(md.get("model_name"), str):
            span.set_attribute(semconv.EMBEDDING_MODEL, md["model_name"])
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
        if isinstance(model, str) and model:
            rec.model = model
            span.set_attribute(semconv.GEN_AI_REQUEST_MODEL, model)
        if kind == "LLMChatStartEvent":
            set_content(span, semconv.GEN_AI_INPUT_MESSAGES, _messages(event.messages))
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
            span.set_attribute(semconv.STREAMING, True)
    elif kind in ("LLMCompletionEndEvent", "LLMChatEndEvent"):
        _on_llm_end(rec, event, kind)
    elif kind == "SynthesizeStartEvent":
        set_content(span, semconv.INPUT_VALUE, _query_text(event.query))
    elif kind == "SynthesizeEndEvent":
        set_content(span, semconv.OUTPUT_VALUE, _response_text(event.response))
    elif kind == "ReRankStartEvent":
        span.set_attribute(semconv.SPAN_KIND, semconv.RERANKER)
        if event.model_name:
            span.set_attribute(semconv.RERANKER_MODEL, str(event.model_name))
        if isinstance(event.top_n, int):
            span.set_attribute(semconv.RETRIEVAL_TOP_K, event.top_n)
        span.set_attribute(semconv.RERANKER_PAIR_COUNT, len(event.nodes or []))
        if event.query is not None:
            set_content(span, semconv.RETRIEVAL_QUERY, _query_text(event.query))
    elif kind == "ReRankEndEvent":
        record_documents(span, [_node_doc(n) for n in event.nodes or []], score_kind="reranker")


def _on_llm_end(rec: _Open, event: Any, kind: str) -> None:
    span = rec.span
    resp = event.response
    text = _response_text(resp)
    if kind == "LLMChatEndEvent":
        set_content(span, semconv.GEN_AI_OUTPUT_MESSAGES, [{"role": "assistant", "content": text}])
    else:
        set_content(span, semconv.OUTPUT_VALUE, text)
    inp, out = _usage(resp)
    source = "provider"
    if inp is None and out is None:
        prompt = (
            event.prompt
            if kind == "LLMCompletionEndEvent"
            else "\n".join(str(m.get("content") or "") for m in _messages(event.messages))
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
        with _STATE.lock:
            ids = [k for k, v in _STATE.open.items() if v is rec]
        for k in ids:
            _end(k, rec)
        _end_pending_ancestors(rec.parent_id)


def _end_pending_ancestors(span_id: str | None) -> None:
    """A streamed ``stream`` (predict-level) span waits for its inner ``stream_complete`` to finish."""
    while span_id is not None:
        with _STATE.lock:
            rec = _STATE.open.get(span_id)
        if rec is None or not rec.pending:
            return
        _end(span_id, rec)
        span_id = rec.parent_id


def _build_handlers() -> tuple[Any, Any]:
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

    class RagtrailSpanHandler(BaseSpanHandler[Any]):  # type: ignore[misc,valid-type]
        """Mirrors LlamaIndex dispatcher spans as ragtrail OTel spans."""

        @classmethod
        def class_name(cls) -> str:
            return "RagtrailSpanHandler"

        def new_span(
            self,
            id_: str,
            bound_args: Any,
            instance: Any | None = None,
            parent_span_id: str | None = None,
            tags: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            if not is_enabled():
                return None
            try:
                return _new_span(id_, instance, parent_span_id)
            except Exception:
                _failed("span start")
                return None

        def prepare_to_exit_span(
            self, id_: str, bound_args: Any, instance: Any | None = None, result: Any | None = None, **kwargs: Any
        ) -> Any:
            try:
                return _exit_span(id_, result)
            except Exception:
                _failed("span end")
                return None

        def prepare_to_drop_span(
            self,
            id_: str,
            bound_args: Any,
            instance: Any | None = None,
            err: BaseException | None = None,
            **kwargs: Any,
        ) -> Any:
            try:
                return _drop_span(id_, err)
            except Exception:
                _failed("span drop")
                return None

    class RagtrailEventHandler(BaseEventHandler):  # type: ignore[misc]
        """Copies LlamaIndex event payloads onto the matching ragtrail spans."""

        @classmethod
        def class_name(cls) -> str:
            return "RagtrailEventHandler"

        def handle(self, event: Any, **kwargs: Any) -> None:
            try:
                _on_event(event)
            except Exception:
                _failed(f"event {type(event).__name__}")

    return RagtrailSpanHandler(), RagtrailEventHandler()


class LlamaIndexInstrumentor(RagtrailInstrumentor):
    """Traces LlamaIndex through its instrumentation dispatcher (span and event handlers on the root)."""

    library: ClassVar[str] = "llama_index.core"
    distribution: ClassVar[str] = "llama-index-core"
    extra: ClassVar[str] = "llama-index"
    supported: ClassVar[tuple[str, ...]] = (">=0.14", "<0.15")

    _handlers: ClassVar[tuple[Any, Any] | None] = None

    def _instrument(self, **kwargs: Any) -> None:
        from llama_index.core.base.base_retriever import BaseRetriever
        from llama_index.core.base.embeddings.base import BaseEmbedding
        from llama_index.core.instrumentation import get_dispatcher
        from llama_index.core.llms.llm import BaseLLM

        _Classes.retriever = (BaseRetriever,)
        _Classes.embedding = (BaseEmbedding,)
        _Classes.llm = (BaseLLM,)
        try:
            from llama_index.core.postprocessor.types import BaseNodePostprocessor

            _Classes.postprocessor = (BaseNodePostprocessor,)
        except Exception:
            logger.debug("ragtrail: LlamaIndex node postprocessors not found", exc_info=True)
        try:
            from llama_index.core.tools.types import BaseTool

            _Classes.tool = (BaseTool,)
        except Exception:
            logger.debug("ragtrail: LlamaIndex tools not found", exc_info=True)
        try:
            from llama_index.core.node_parser.interface import TextSplitter

            _Classes.splitter = (TextSplitter,)
        except Exception:
            logger.debug("ragtrail: LlamaIndex text splitters not found", exc_info=True)
        span_handler, event_handler = _build_handlers()
        dispatcher = get_dispatcher()
        dispatcher.add_span_handler(span_handler)
        dispatcher.add_event_handler(event_handler)
        LlamaIndexInstrumentor._handlers = (span_handler, event_handler)

    def _uninstrument(self, **kwargs: Any) -> None:
        from llama_index.core.instrumentation import get_dispatcher

        handlers = LlamaIndexInstrumentor._handlers
        LlamaIndexInstrumentor._handlers = None
        if handlers is None:
            return
        dispatcher = get_dispatcher()
        span_handler, event_handler = handlers
        dispatcher.span_handlers = [h for h in dispatcher.span_handlers if h is not span_handler]
        dispatcher.event_handlers = [h for h in dispatcher.event_handlers if h is not event_handler]
        _STATE.clear()


instrument, uninstrument = module_functions(LlamaIndexInstrumentor)
