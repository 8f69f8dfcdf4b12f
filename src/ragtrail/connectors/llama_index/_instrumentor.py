"""LlamaIndex connector over ``llama_index.core.instrumentation``.

One span handler and one event handler are registered on LlamaIndex's root dispatcher.

* Every public dispatcher span (``RetrieverQueryEngine.query``, ``VectorIndexRetriever.retrieve``,
  ``MiniLM.get_query_embedding``, ``CompactAndRefine.synthesize``, ``OpenAI.chat``…) becomes an OTel
  span whose parent is the OTel span of LlamaIndex's own parent span id. Private helper spans
  (``_retrieve``, ``_query``…) and text splitting are folded into their nearest public ancestor.
* Kinds: query engines and synthesizers CHAIN, retrievers RETRIEVER, embeddings EMBEDDING, LLM
  ``chat``/``complete`` (and their stream/async forms) LLM, rerankers RERANKER, tools TOOL, agents AGENT.
  Node postprocessors and selectors implement private methods (``_postprocess_nodes``, ``_select``) that
  LlamaIndex traces: those get their own span (``X.postprocess_nodes``, ``X.select``) with the nodes or
  choices in and out, so a reranker or a failing postprocessor never relabels or hides in its parent.
* Events fill in the details: query text and answer, retrieved nodes (id, score, rank, content),
  embedding model/count/dimension, LLM model, messages, tokens (the provider's usage when the response
  carries it, else a tokenizer estimate) and, for streamed calls, time to first token.
* Streaming never changes the app: a response object is never read in a way that consumes it (no
  ``str()`` of a ``StreamingResponse``). A streamed LLM span stays open until LlamaIndex reports the end of
  the stream, and so do the spans that returned the stream (synthesizer, query engine), so one streamed
  query is one trace whose root ends when the user has read the last chunk.
* The OTel span is made current while LlamaIndex runs the call, so spans from other connectors
  (Chroma queries under a retriever, sentence-transformers under an embedding) nest correctly.
"""

from __future__ import annotations

import contextvars
import inspect
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail._log import logger
from ragtrail.connectors._common import FailureCounter, RagtrailInstrumentor, module_functions, retriever_provider
from ragtrail.tracing import (
    get_config,
    is_enabled,
    model_display_name,
    record_documents,
    record_exception,
    record_messages,
    record_usage,
    set_content,
)

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
    pending: bool = False  # a streamed call whose LlamaIndex span ended before the stream did
    embed_count: int = 0
    parent: _Open | None = None  # the open record this span's OTel parent came from
    component: str | None = None  # "postprocessor" | "selector" for their private-method spans
    stream_text: str | None = None  # a streamed LLM's final text, given to the spans waiting on it
    stream_owner: bool = False  # returned a response object whose stream ends it (see _wrap_stream)
    instance_id: int | None = None


class _Classes:
    """LlamaIndex base classes used to pick span kinds (imported by ``_instrument``)."""

    selector: tuple[type, ...] = ()
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


def _response_text(resp: Any) -> str | None:
    """The text of a response object, read only from attributes that already hold it.

    Never ``str(resp)``: on a ``StreamingResponse`` that consumes the user's stream.
    """
    if resp is None:
        return None
    if isinstance(resp, str):
        return resp
    for attr in ("response", "text", "response_txt"):
        val = getattr(resp, attr, None)
        if isinstance(val, str):
            return val
    msg = getattr(resp, "message", None)
    if msg is not None:
        content = getattr(msg, "content", None)
        if isinstance(content, str):
            return content
    return None


def _is_stream(result: Any) -> bool:
    """A generator, or a response object whose text is still an unread generator."""
    if inspect.isgenerator(result) or inspect.isasyncgen(result):
        return True
    gen = getattr(result, "response_gen", None)
    if gen is not None and getattr(result, "response_txt", None) is None:
        return inspect.isgenerator(gen) or inspect.isasyncgen(gen)
    return False


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


class _State:
    """Open spans keyed by LlamaIndex span id; skipped (folded) ids mapped to their parent id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[str, _Open] = {}
        self.skipped: dict[str, str | None] = {}

    def waiting_on(self, rec: _Open) -> bool:
        """Whether a streamed LLM call below ``rec`` has still to end (call with the lock held)."""
        for other in self.open.values():
            if other is rec or not other.pending or other.kind != semconv.LLM:
                continue
            up = other.parent
            while up is not None:
                if up is rec:
                    return True
                up = up.parent
        return False

    def streaming_llm(self, owner: _Open, instance_id: int) -> str | None:
        """The id of a pending LLM span of ``instance_id`` under ``owner``, if one is streaming."""
        with self.lock:
            for key, other in self.open.items():
                if other.kind != semconv.LLM or not other.pending or other.instance_id != instance_id:
                    continue
                up = other.parent
                while up is not None:
                    if up is owner:
                        return key
                    up = up.parent
        return None

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
        # generator-returning spans below it that no streamed LLM call keeps open end with it
        below = [
            (k, v)
            for k, v in _STATE.open.items()
            if v.pending and v.kind != semconv.LLM and _below(v, rec) and not _STATE.waiting_on(v)
        ]
    below.sort(key=lambda kv: -_depth(kv[1]))
    for k, v in below:
        with _STATE.lock:
            _STATE.open.pop(k, None)
        v.span.end()
    rec.span.end()


def _depth(rec: _Open) -> int:
    n, up = 0, rec.parent
    while up is not None:
        n, up = n + 1, up.parent
    return n


def _below(rec: _Open, ancestor: _Open) -> bool:
    up = rec.parent
    while up is not None:
        if up is ancestor:
            return True
        up = up.parent
    return False


# -------------------------------------------------------------------------------------- streaming
_STREAM_OWNER: contextvars.ContextVar[_Open | None] = contextvars.ContextVar("ragtrail_li_stream", default=None)
_WRAPPED: weakref.WeakKeyDictionary[Any, list[_Open]] = weakref.WeakKeyDictionary()


def _finish_stream(owners: list[_Open], err: BaseException | None, parts: list[str]) -> None:
    """The user read the stream to its end (or closed it): end the spans that returned it."""
    for rec in owners:
        try:
            if parts:
                set_content(rec.span, semconv.OUTPUT_VALUE, "".join(parts))
            if err is not None:
                record_exception(rec.span, err)
            _end_record(rec)
        except Exception:
            _failed("stream end")


def _sync_stream(gen: Iterator[Any], owners: list[_Open]) -> Iterator[Any]:
    err: BaseException | None = None
    parts: list[str] = []
    try:
        while True:
            tok = _STREAM_OWNER.set(owners[0])
            otok = otel_context.attach(otel_trace.set_span_in_context(owners[0].span))
            try:
                item = next(gen)
                if isinstance(item, str):
                    parts.append(item)
            except StopIteration:
                return
            finally:
                otel_context.detach(otok)
                _STREAM_OWNER.reset(tok)
            yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        err = exc
        raise
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()
        _finish_stream(owners, err, parts)


async def _async_stream(gen: AsyncIterator[Any], owners: list[_Open]) -> AsyncIterator[Any]:
    err: BaseException | None = None
    parts: list[str] = []
    try:
        while True:
            tok = _STREAM_OWNER.set(owners[0])
            otok = otel_context.attach(otel_trace.set_span_in_context(owners[0].span))
            try:
                item = await gen.__anext__()
                if isinstance(item, str):
                    parts.append(item)
            except StopAsyncIteration:
                return
            finally:
                otel_context.detach(otok)
                _STREAM_OWNER.reset(tok)
            yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        err = exc
        raise
    finally:
        aclose = getattr(gen, "aclose", None)
        if aclose is not None:
            await aclose()
        _finish_stream(owners, err, parts)


def _own_stream(rec: _Open, result: Any) -> bool:
    """Make ``rec`` end with the stream of the response object ``result`` (wrapping it once).

    The wrapper yields exactly the chunks of the original stream; it only makes the spans that returned
    the stream current while LlamaIndex produces each chunk, and ends them after the last one.
    """
    try:
        gen: Any = getattr(result, "response_gen", None)
        owners = _WRAPPED.get(gen) if gen is not None else None
        if owners is None:
            owners = [rec]
            wrapped: Any = _async_stream(gen, owners) if inspect.isasyncgen(gen) else _sync_stream(gen, owners)
            result.response_gen = wrapped
            _WRAPPED[wrapped] = owners
        else:
            owners.append(rec)
    except Exception:
        _failed("stream wrap")
        return False  # the span ends now and the stream is left as it was
    rec.stream_owner = True
    return True


# ------------------------------------------------------------------------------------- span handler
_COMPONENT_METHODS = {
    "_postprocess_nodes": "postprocessor",
    "_apostprocess_nodes": "postprocessor",
    "_select": "selector",
    "_aselect": "selector",
}


def _component(instance: Any, method: str) -> str | None:
    """'postprocessor' / 'selector' when ``method`` is one of their traced private methods."""
    comp = _COMPONENT_METHODS.get(method)
    if comp == "postprocessor" and _Classes.postprocessor and isinstance(instance, _Classes.postprocessor):
        return comp
    if comp == "selector" and _Classes.selector and isinstance(instance, _Classes.selector):
        return comp
    return None


def _genai_name(kind: str, name: str, instance: Any, model: Any, attrs: dict[str, Any]) -> str:
    """The GenAI conventions' span name (``chat {model}``, ``embeddings {model}``, ``retrieval {source}``,
    ``execute_tool {tool}``, ``invoke_agent {agent}``), adding the attributes it is made of; other spans
    keep LlamaIndex's ``Class.method`` (the method stays in ``llama_index.span_id`` either way)."""
    cls = type(instance).__name__
    if kind == semconv.LLM:
        return f"{attrs[semconv.GEN_AI_OPERATION_NAME]} {model or cls}"
    if kind == semconv.EMBEDDING:
        return f"{semconv.GEN_AI_OP_EMBEDDINGS} {model}" if model else semconv.GEN_AI_OP_EMBEDDINGS
    if kind == semconv.RETRIEVER:
        attrs[semconv.GEN_AI_OPERATION_NAME] = semconv.GEN_AI_OP_RETRIEVAL
        attrs[semconv.GEN_AI_DATA_SOURCE_ID] = cls
        provider = retriever_provider(cls)
        if provider:  # a GenAI provider's retrieval service; vector stores have none (documented)
            attrs[semconv.GEN_AI_PROVIDER_NAME] = provider
        return f"{semconv.GEN_AI_OP_RETRIEVAL} {cls}"
    if kind == semconv.TOOL:
        meta = getattr(instance, "metadata", None)
        tool = getattr(meta, "name", None) or cls
        attrs[semconv.GEN_AI_OPERATION_NAME] = semconv.GEN_AI_OP_EXECUTE_TOOL
        attrs[semconv.GEN_AI_TOOL_NAME] = str(tool)
        desc = getattr(meta, "description", None)
        if isinstance(desc, str) and desc:
            attrs[semconv.GEN_AI_TOOL_DESCRIPTION] = desc[:1000]
        return f"{semconv.GEN_AI_OP_EXECUTE_TOOL} {tool}"
    if kind == semconv.AGENT:
        agent = getattr(instance, "name", None)
        agent = agent if isinstance(agent, str) and agent else cls
        attrs[semconv.GEN_AI_OPERATION_NAME] = semconv.GEN_AI_OP_INVOKE_AGENT
        attrs[semconv.GEN_AI_AGENT_NAME] = agent
        return f"{semconv.GEN_AI_OP_INVOKE_AGENT} {agent}"
    return name


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


def _arguments(bound_args: Any) -> dict[str, Any]:
    try:
        return dict(bound_args.arguments) if bound_args is not None else {}
    except Exception:
        return {}


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


def _exit_span(id_: str, result: Any) -> _Open | None:
    with _STATE.lock:
        if _STATE.skipped.pop(id_, None) is not None or id_ not in _STATE.open:
            return None
        rec = _STATE.open[id_]
    _detach(rec.token)
    rec.token = None
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


def _finish_reason(resp: Any) -> str | None:
    """The finish reason in a LlamaIndex response's raw provider payload (OpenAI-style), if any."""
    try:
        raw = getattr(resp, "raw", None)
        choices = raw.get("choices") if isinstance(raw, dict) else getattr(raw, "choices", None)
        if choices:
            c = choices[0]
            fr = c.get("finish_reason") if isinstance(c, dict) else getattr(c, "finish_reason", None)
            return str(fr) if fr else None
    except Exception:
        pass
    return None


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


def _end_record(rec: _Open) -> None:
    with _STATE.lock:
        ids = [k for k, v in _STATE.open.items() if v is rec]
    for k in ids:
        _end(k, rec)


def _end_pending_ancestors(rec: _Open | None, text: Any) -> None:
    """Spans that returned a stream (``stream``, the synthesizer, the query engine) end with its last chunk.

    Each gets the streamed text as its output, unless it recorded one itself.
    """
    while rec is not None:
        with _STATE.lock:
            if (
                rec.stream_owner
                or not rec.pending
                or not any(v is rec for v in _STATE.open.values())
                or _STATE.waiting_on(rec)
            ):
                return
        if rec.kind != semconv.LLM and isinstance(text, str):
            attrs = getattr(rec.span, "attributes", None) or {}
            if semconv.OUTPUT_VALUE not in attrs:
                set_content(rec.span, semconv.OUTPUT_VALUE, text)
        _end_record(rec)
        rec = rec.parent


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
                return _new_span(id_, instance, parent_span_id, bound_args)
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
        try:
            from llama_index.core.base.base_selector import BaseSelector

            _Classes.selector = (BaseSelector,)
        except Exception:
            logger.debug("ragtrail: LlamaIndex selectors not found", exc_info=True)
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
