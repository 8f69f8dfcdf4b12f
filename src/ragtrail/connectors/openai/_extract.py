"""Small attribute extractors for the OpenAI connector: each yields ``(key, value)`` pairs and is guarded
by :func:`apply`, so one that fails loses its attributes, never the span."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail._log import logger

Pairs = Iterator[tuple[str, Any]]

_OMIT_TYPES = ("NotGiven", "Omit")


def given(v: Any) -> bool:
    """False for None and the SDK's ``NOT_GIVEN`` / ``omit`` sentinels."""
    return v is not None and type(v).__name__ not in _OMIT_TYPES


def get(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute or mapping key ``name`` of ``obj`` (SDK models and plain dicts alike)."""
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def apply(span: Span, extractor: Callable[..., Iterable[tuple[str, Any]]], *args: Any) -> None:
    """Set the attributes ``extractor(*args)`` yields on ``span``; never raises."""
    try:
        attrs = {k: v for k, v in extractor(*args) if v is not None}
        if attrs:
            span.set_attributes(attrs)
    except Exception:
        logger.debug("ragtrail openai: extractor %s failed", getattr(extractor, "__name__", "?"), exc_info=True)


def pairs(extractor: Callable[..., Iterable[tuple[str, Any]]], *args: Any) -> dict[str, Any]:
    """The attributes ``extractor(*args)`` yields, as a dict for ``start_span``; never raises."""
    try:
        return {k: v for k, v in extractor(*args) if v is not None}
    except Exception:
        logger.debug("ragtrail openai: extractor %s failed", getattr(extractor, "__name__", "?"), exc_info=True)
        return {}


# ------------------------------------------------------------------------------------ request
_PARAMS: tuple[tuple[str, str, Any], ...] = (
    ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE, float),
    ("top_p", semconv.GEN_AI_REQUEST_TOP_P, float),
    ("frequency_penalty", semconv.GEN_AI_REQUEST_FREQUENCY_PENALTY, float),
    ("presence_penalty", semconv.GEN_AI_REQUEST_PRESENCE_PENALTY, float),
    ("seed", semconv.GEN_AI_REQUEST_SEED, int),
    ("n", semconv.GEN_AI_REQUEST_CHOICE_COUNT, int),
)


def request_params(kwargs: Mapping[str, Any]) -> Pairs:
    """Model and sampling parameters of the request."""
    if given(kwargs.get("model")):
        yield semconv.GEN_AI_REQUEST_MODEL, str(kwargs["model"])
    for name, key, conv in _PARAMS:
        v: Any = kwargs.get(name)
        if given(v):
            yield key, conv(v)
    mt: Any = kwargs.get("max_completion_tokens")
    if not given(mt):
        mt = kwargs.get("max_tokens")
    if given(mt):
        yield semconv.GEN_AI_REQUEST_MAX_TOKENS, int(mt)
    stop: Any = kwargs.get("stop")
    if given(stop):
        yield semconv.GEN_AI_REQUEST_STOP_SEQUENCES, [stop] if isinstance(stop, str) else [str(s) for s in stop]
    fmt = kwargs.get("encoding_format")
    if given(fmt):
        yield semconv.GEN_AI_REQUEST_ENCODING_FORMATS, [str(fmt)]
    rf = kwargs.get("response_format")
    if given(rf):
        t = get(rf, "type") if not isinstance(rf, type) else "json_schema"  # a pydantic class (parse helpers)
        if t in ("json_object", "json_schema"):
            yield semconv.GEN_AI_OUTPUT_TYPE, "json"
        elif t == "text":
            yield semconv.GEN_AI_OUTPUT_TYPE, "text"


def server(base_url: Any) -> Pairs:
    """server.address / server.port from the client's base URL."""
    host = get(base_url, "host")
    if host:
        yield semconv.SERVER_ADDRESS, str(host)
        port = get(base_url, "port")
        if port is None:
            scheme = str(get(base_url, "scheme") or "")
            port = 443 if scheme == "https" else 80 if scheme == "http" else None
        if port is not None:
            yield semconv.SERVER_PORT, int(port)


def usage_details(usage: Any) -> Pairs:
    """Reasoning output tokens (``completion_tokens_details.reasoning_tokens``; part of the output tokens)."""
    reasoning = get(get(usage, "completion_tokens_details"), "reasoning_tokens")
    if isinstance(reasoning, int) and reasoning > 0:
        yield semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS, reasoning


def provider_for(host: str | None) -> str:
    """openai for api.openai.com, azure.ai.openai for Azure, else openai_compatible."""
    h = (host or "").lower()
    if h == "api.openai.com":
        return "openai"
    if h.endswith(".openai.azure.com") or h.endswith(".azure.com"):
        return "azure.ai.openai"
    return "openai_compatible"


# ----------------------------------------------------------------------------------- response
def response_meta(resp: Any) -> Pairs:
    """Response id, model and system fingerprint."""
    rid = get(resp, "id")
    if rid:
        yield semconv.GEN_AI_RESPONSE_ID, str(rid)
    model = get(resp, "model")
    if model:
        yield semconv.GEN_AI_RESPONSE_MODEL, str(model)
    fp = get(resp, "system_fingerprint")
    if fp:
        yield semconv.GEN_AI_OPENAI_RESPONSE_SYSTEM_FINGERPRINT, str(fp)


def finish_reasons(choices: Iterable[Any]) -> list[str]:
    """Finish reasons, one per choice (choices in index order)."""
    out = []
    for c in sorted(choices, key=lambda c: get(c, "index", 0) or 0):
        fr = get(c, "finish_reason")
        out.append(str(fr) if fr is not None else "")
    return out


def usage_counts(usage: Any) -> tuple[int | None, int | None, int | None]:
    """(prompt, completion, cached prompt) tokens of a usage object."""
    if usage is None:
        return None, None, None
    prompt = get(usage, "prompt_tokens")
    completion = get(usage, "completion_tokens")
    cached = get(get(usage, "prompt_tokens_details"), "cached_tokens")
    return (
        int(prompt) if prompt is not None else None,
        int(completion) if completion is not None else None,
        int(cached) if cached is not None else None,
    )
