"""Small extractors from LangChain callback arguments to span attributes.

Each function looks at one concern (model name, request parameters, token usage, messages…), reads
LangChain objects by attribute (duck typing, so that this module imports nothing from LangChain) and
is guarded by its caller: a failing extractor loses one attribute, never the span.

Content (messages, documents, inputs, outputs) is turned into *bounded* plain data: strings are cut at
:data:`STR_CAP` characters, containers at :data:`MAX_ITEMS` items and :data:`MAX_DEPTH` levels, so the
cost of capturing a value does not grow with the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from ragtrail import semconv
from ragtrail.tracing import model_display_name, to_message

STR_CAP = 8_192
"""Longest string kept whole in captured content (characters); the attribute byte cap applies after."""
MAX_ITEMS = 64
"""Most items of a list or dict kept in captured content."""
MAX_DEPTH = 6
"""Deepest nesting kept in captured content."""

_SCALARS = (int, float, bool)
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr).encode

# ------------------------------------------------------------------------------------------ names


def run_name(serialized: Mapping[str, Any] | None, kwargs: Mapping[str, Any], default: str) -> str:
    """The run's name exactly as LangChain's tracers compute it."""
    name = kwargs.get("name")
    if name:
        return str(name)
    if serialized:
        n = serialized.get("name")
        if n:
            return str(n)
        ids = serialized.get("id")
        if ids:
            return str(ids[-1])
    return default


# ------------------------------------------------------------------------------------ model, params

_MODEL_KEYS = ("model", "model_name", "model_id", "deployment_name", "azure_deployment", "repo_id")


def model_name(
    serialized: Mapping[str, Any] | None,
    invocation_params: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> str | None:
    """Requested model: invocation params, then ``ls_model_name`` metadata, then serialized kwargs; a
    model loaded from a local directory (``HuggingFacePipeline(model_id=<dir>)``, an embedding model by
    path…) is named by :func:`ragtrail.tracing.model_display_name`, never by its path."""
    name = _model_name(serialized, invocation_params, metadata)
    return model_display_name(name) if name else None


def _model_name(
    serialized: Mapping[str, Any] | None,
    invocation_params: Mapping[str, Any] | None,
    metadata: Mapping[str, Any] | None,
) -> str | None:
    if invocation_params:
        for k in _MODEL_KEYS:
            v = invocation_params.get(k)
            if isinstance(v, str) and v:
                return v
    if metadata:
        v = metadata.get("ls_model_name")
        if isinstance(v, str) and v:
            return v
    if serialized:
        kw = serialized.get("kwargs")
        if isinstance(kw, Mapping):
            for k in _MODEL_KEYS:
                v = kw.get(k)
                if isinstance(v, str) and v:
                    return v
    return None


_PROVIDER_ALIASES = {"azure": "azure.ai.openai", "google_genai": "gcp.gen_ai", "google_vertexai": "gcp.vertex_ai",
                     "bedrock": "aws.bedrock", "amazon_bedrock": "aws.bedrock", "mistralai": "mistral_ai",
                     "huggingface": "huggingface", "vllm": "vllm", "ollama": "ollama"}  # fmt: skip


def provider_name(serialized: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None) -> str | None:
    """Model provider: ``ls_provider`` metadata, else the integration package in the serialized id."""
    if metadata:
        v = metadata.get("ls_provider")
        if isinstance(v, str) and v:
            return _PROVIDER_ALIASES.get(v, v)
    if serialized:
        ids = serialized.get("id")
        if isinstance(ids, list) and len(ids) >= 2:
            first = str(ids[0])
            if first.startswith("langchain_") and first != "langchain_core":
                p = first[len("langchain_") :]
                return _PROVIDER_ALIASES.get(p, p)
            if first in ("langchain", "langchain_community") and len(ids) >= 4:
                p = str(ids[2])
                return _PROVIDER_ALIASES.get(p, p)
    return None


_PARAMS: tuple[tuple[str, tuple[str, ...], type], ...] = (
    (semconv.GEN_AI_REQUEST_TEMPERATURE, ("temperature", "ls_temperature"), float),
    (semconv.GEN_AI_REQUEST_MAX_TOKENS,
     ("max_tokens", "max_completion_tokens", "max_new_tokens", "max_output_tokens", "num_predict", "ls_max_tokens"),
     int),
    (semconv.GEN_AI_REQUEST_TOP_P, ("top_p",), float),
    (semconv.GEN_AI_REQUEST_TOP_K, ("top_k",), int),
    (semconv.GEN_AI_REQUEST_SEED, ("seed",), int),
    (semconv.GEN_AI_REQUEST_FREQUENCY_PENALTY, ("frequency_penalty",), float),
    (semconv.GEN_AI_REQUEST_PRESENCE_PENALTY, ("presence_penalty",), float),
)  # fmt: skip


def request_params(
    invocation_params: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None, out: dict[str, Any]
) -> None:
    """Add request parameters (temperature, max tokens, top_p, top_k, seed, penalties, stop) to ``out``."""
    for attr, keys, typ in _PARAMS:
        for k in keys:
            src = metadata if k.startswith("ls_") else invocation_params
            if not src:
                continue
            v = src.get(k)
            if v is not None and isinstance(v, _SCALARS) and not isinstance(v, bool):
                out[attr] = typ(v)
                break
    stop = (invocation_params or {}).get("stop") or (metadata or {}).get("ls_stop")
    if stop:
        if isinstance(stop, str):
            stop = [stop]
        if isinstance(stop, (list, tuple)):
            out[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = [str(s) for s in stop[:16]]


# ----------------------------------------------------------------------------------------- usage


def _usage_from_metadata(um: Mapping[str, Any]) -> tuple[int | None, int | None, int | None]:
    inp = um.get("input_tokens")
    out = um.get("output_tokens")
    det = um.get("input_token_details")
    cached = det.get("cache_read") if isinstance(det, Mapping) else None
    return inp, out, cached


def token_details(response: Any, out: dict[str, Any]) -> None:
    """Reasoning output tokens and cache-creation input tokens from ``usage_metadata`` into ``out``
    (LangChain counts both inside its input / output totals, as the GenAI conventions do)."""
    reasoning = creation = 0
    for gens in getattr(response, "generations", None) or ():
        for g in gens:
            um = getattr(getattr(g, "message", None), "usage_metadata", None)
            if not um:
                continue
            det_in, det_out = um.get("input_token_details"), um.get("output_token_details")
            if isinstance(det_in, Mapping) and isinstance(det_in.get("cache_creation"), int):
                creation += det_in["cache_creation"]
            if isinstance(det_out, Mapping) and isinstance(det_out.get("reasoning"), int):
                reasoning += det_out["reasoning"]
    if reasoning:
        out[semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = reasoning
    if creation:
        out[semconv.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = creation


def _usage_from_llm_output(llm_output: Mapping[str, Any]) -> tuple[int | None, int | None, int | None] | None:
    tu = llm_output.get("token_usage") or llm_output.get("usage")
    if not isinstance(tu, Mapping):
        return None
    inp = tu.get("prompt_tokens", tu.get("input_tokens"))
    out = tu.get("completion_tokens", tu.get("output_tokens"))
    cached = None
    det = tu.get("prompt_tokens_details")
    if isinstance(det, Mapping):
        cached = det.get("cached_tokens")
    if cached is None:
        cached = tu.get("cache_read_input_tokens")
    if inp is None and out is None:
        return None
    return inp, out, cached


def token_usage(response: Any) -> tuple[int | None, int | None, int | None] | None:
    """(input, output, cached input) tokens from ``usage_metadata`` on the messages, else ``llm_output``.

    Summed over every generation (a batched LLM call reports one per prompt). None when unreported.
    """
    found = False
    inp = out = cached = 0
    any_cached = False
    for gens in getattr(response, "generations", None) or ():
        for g in gens:
            msg = getattr(g, "message", None)
            um = getattr(msg, "usage_metadata", None) if msg is not None else None
            if um:
                i, o, c = _usage_from_metadata(um)
                found = True
                inp += int(i or 0)
                out += int(o or 0)
                if c is not None:
                    cached += int(c)
                    any_cached = True
    if found:
        return inp, out, (cached if any_cached else None)
    llm_output = getattr(response, "llm_output", None)
    if isinstance(llm_output, Mapping):
        return _usage_from_llm_output(llm_output)
    return None


def response_info(response: Any, out: dict[str, Any]) -> None:
    """Response model, response id and finish reasons of an ``LLMResult`` into ``out``."""
    reasons: list[str] = []
    model = rid = None
    for gens in getattr(response, "generations", None) or ():
        for g in gens:
            info = getattr(g, "generation_info", None) or {}
            msg = getattr(g, "message", None)
            meta = getattr(msg, "response_metadata", None) or {} if msg is not None else {}
            r = (info.get("finish_reason") or meta.get("finish_reason") or meta.get("stop_reason")
                 or meta.get("done_reason") or info.get("stop_reason"))  # fmt: skip
            if r:
                reasons.append(str(r))
            if model is None:
                model = meta.get("model_name") or meta.get("model") or info.get("model")
            if rid is None:
                rid = meta.get("id")
    llm_output = getattr(response, "llm_output", None)
    if isinstance(llm_output, Mapping):
        model = model or llm_output.get("model_name") or llm_output.get("model")
        rid = rid or llm_output.get("id")
    if reasons:
        out[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
    if isinstance(model, str) and model:
        out[semconv.GEN_AI_RESPONSE_MODEL] = model_display_name(model)
    if isinstance(rid, str) and rid:
        out[semconv.GEN_AI_RESPONSE_ID] = rid


# --------------------------------------------------------------------------------------- content


def _cut(s: str) -> str:
    return s if len(s) <= STR_CAP else s[:STR_CAP] + "…[truncated]"


def message(m: Any) -> Any:
    """A chat message inside a captured value, in the GenAI parts schema (``{role, parts}``)."""
    if getattr(m, "type", None) is None or not hasattr(m, "content"):
        return plain(m)
    return to_message(m)


def messages(msgs: Sequence[Any]) -> list[Any]:
    """A list of chat messages, bounded."""
    out = [message(m) for m in msgs[:MAX_ITEMS]]
    if len(msgs) > MAX_ITEMS:
        out.append(f"… {len(msgs) - MAX_ITEMS} more messages")
    return out


def generations(response: Any) -> tuple[list[Any], list[str | None]]:
    """The generations of an ``LLMResult``: (messages or texts, finish reasons), at most MAX_ITEMS."""
    msgs: list[Any] = []
    reasons: list[str | None] = []
    for gens in getattr(response, "generations", None) or ():
        for g in gens:
            msg = getattr(g, "message", None)
            msgs.append(msg if msg is not None else _cut(str(getattr(g, "text", ""))))
            info = getattr(g, "generation_info", None) or {}
            meta = getattr(msg, "response_metadata", None) or {} if msg is not None else {}
            r = info.get("finish_reason") or meta.get("finish_reason") or meta.get("stop_reason")
            reasons.append(str(r) if r else None)
            if len(msgs) >= MAX_ITEMS:
                return msgs, reasons
    return msgs, reasons


_LOCAL_PROVIDERS = ("huggingface", "llamacpp", "llama_cpp", "gpt4all", "mlx", "transformers", "ctransformers")
_REMOTE_PROVIDERS = (
    "openai", "azure.ai.openai", "azure", "anthropic", "aws.bedrock", "gcp.vertex_ai", "gcp.gen_ai", "gcp.gemini",
    "cohere", "mistral_ai", "groq", "deepseek", "perplexity", "x_ai", "ollama", "together", "fireworks",
    "openai_compatible",
)  # fmt: skip
_URL_PARAMS = ("base_url", "openai_api_base", "api_base", "endpoint_url", "azure_endpoint", "host")


def is_remote(serialized: Mapping[str, Any] | None, params: Any, provider: str | None) -> bool:
    """Whether the model answers over the network (an OTel CLIENT span) rather than in this process:
    a known API provider, or a server URL among the invocation parameters."""
    if isinstance(params, Mapping) and any(isinstance(params.get(k), str) and params.get(k) for k in _URL_PARAMS):
        return True
    p = (provider or "").lower()
    if not p or "fake" in p or p in _LOCAL_PROVIDERS:
        return False
    return p in _REMOTE_PROVIDERS


def document(doc: Any) -> dict[str, Any]:
    """A LangChain ``Document`` as plain data (id, content, small metadata)."""
    meta = getattr(doc, "metadata", None) or {}
    return {"id": getattr(doc, "id", None) or meta.get("id"), "content": _cut(str(doc.page_content)),
            "metadata": _small_meta(meta) if meta else None}  # fmt: skip


def documents_for_record(docs: Sequence[Any], content: bool = True) -> list[dict[str, Any]]:
    """Retrieved documents as the dicts :func:`ragtrail.tracing.record_documents` takes.

    With ``content`` off only ids and scores are gathered (record_documents keeps no more).
    """
    out = []
    for d in docs[:1000]:
        meta = getattr(d, "metadata", None) or {}
        score = None
        if meta:
            for k in _SCORE_KEYS:
                if k in meta:
                    score = meta[k]
                    break
        doc_id = getattr(d, "id", None) or meta.get("id") or meta.get("doc_id") or meta.get("source")
        item: dict[str, Any] = {"id": doc_id, "score": score}
        if content:
            item["content"] = getattr(d, "page_content", None)
            if meta:
                item["metadata"] = _small_meta(meta)
        out.append(item)
    return out


_SCORE_KEYS = ("score", "relevance_score", "similarity_score", "_score", "distance")
_FLAT = (str, int, float, bool, type(None))


def _small_meta(meta: Mapping[str, Any]) -> Any:
    """Metadata as-is when it is a small flat dict of short values (the usual case), else bounded."""
    if type(meta) is dict and len(meta) <= MAX_ITEMS:
        for v in meta.values():
            if not isinstance(v, _FLAT) or (type(v) is str and len(v) > 1024):
                return plain(meta, 3)
        return meta
    return plain(meta, 3)


def plain(value: Any, depth: int = 0) -> Any:
    """Bounded JSON-compatible data for ``value``; knows messages, documents and prompt values."""
    t = type(value)
    if t is str:
        return value if len(value) <= STR_CAP else value[:STR_CAP] + "…[truncated]"
    if value is None or t is int or t is float or t is bool:
        return value
    if depth >= MAX_DEPTH:
        return f"<{t.__name__}>"
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for i, (k, v) in enumerate(value.items()):
            if i >= MAX_ITEMS:
                out["…"] = f"{len(value) - MAX_ITEMS} more items"
                break
            out[k if type(k) is str else str(k)] = plain(v, depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        res = [plain(v, depth + 1) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            res.append(f"… {len(value) - MAX_ITEMS} more items")
        return res
    if hasattr(value, "page_content"):
        return document(value)
    if hasattr(value, "content") and hasattr(value, "type"):
        return message(value)
    to_messages = getattr(value, "to_messages", None)
    if callable(to_messages):  # PromptValue
        try:
            return messages(to_messages())
        except Exception:
            pass
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, str):
        return _cut(str(value))
    if isinstance(value, (set, frozenset)):
        return [plain(v, depth + 1) for v in list(value)[:MAX_ITEMS]]
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return plain(dump(), depth + 1)
        except Exception:
            pass
    r = repr(value)
    return r if len(r) <= 512 else r[:512] + "…"


def _encode_object(obj: Any) -> Any:
    """``default`` hook of the fast encoder: LangChain objects become bounded plain data."""
    if hasattr(obj, "page_content"):
        return document(obj)
    if hasattr(obj, "content") and hasattr(obj, "type"):
        return message(obj)
    return plain(obj, 1)


_fast_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=_encode_object).encode
_FAST_MAX = 4 * STR_CAP


def to_text(value: Any) -> str:
    """Captured content as text: a string stays itself, anything else becomes bounded JSON.

    Usual values (a dict, list or LangChain object of modest size) go straight through the C JSON
    encoder, which calls back only for LangChain objects; anything large, odd or cyclic takes the
    bounded :func:`plain` walk.
    """
    t = type(value)
    if t is str:
        return value
    if isinstance(value, str):  # str subclasses (LangChain's TextAccessor)
        return str(value)
    if (t is dict or t is list or t is tuple) and len(value) > MAX_ITEMS:
        return _dumps(plain(value))
    to_messages = getattr(value, "to_messages", None)
    if to_messages is not None and callable(to_messages) and t is not dict:  # a PromptValue
        try:
            value = to_messages()
        except Exception:
            return _dumps(plain(value))
    try:
        text = _fast_dumps(value)
    except (TypeError, ValueError, RecursionError):
        return _dumps(plain(value))
    if len(text) > _FAST_MAX:
        return _dumps(plain(value))
    return text
