"""Reading LlamaIndex objects without changing them: the span kind of an instance (from the LlamaIndex
base classes that ``instrument()`` imports), the GenAI span name and its attributes, query and response
text, retrieved nodes, provider-reported usage and finish reason, and a tokenizer estimate.

Nothing here consumes a stream: response text is read only from attributes that already hold it.
"""

from __future__ import annotations

import inspect
from typing import Any

from ragtrail import semconv
from ragtrail.connectors._common import retriever_provider

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


def _arguments(bound_args: Any) -> dict[str, Any]:
    try:
        return dict(bound_args.arguments) if bound_args is not None else {}
    except Exception:
        return {}
