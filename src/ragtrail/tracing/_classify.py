"""One classification step for spans that ragtrail's connectors did not make (issue 21).

Spans from any SDK that follow the OpenTelemetry GenAI conventions (OpenLLMetry, the OTel contrib
``openai`` instrumentation, other languages) or OpenInference (Phoenix's instrumentations) get a
ragtrail kind and, for LLM and embedding calls with a known model, a cost from the same price table as
in-process spans. Both the store exporter (in-process spans from other instrumentations) and the OTLP
receiver call :func:`classify`, so a span is stored the same way whichever path it took.

Rules, first match wins (a span that carries ``ragtrail.span.kind`` is left untouched):

1. ``gen_ai.operation.name``: chat, text_completion, generate_content → LLM; embeddings → EMBEDDING;
   execute_tool → TOOL; invoke_agent, create_agent → AGENT; retrieval → RETRIEVER.
2. ``openinference.span.kind`` when it names a ragtrail kind (LLM, EMBEDDING, RETRIEVER, RERANKER, CHAIN,
   TOOL, AGENT, EVALUATOR).
3. OpenLLMetry's ``llm.request.type`` (chat, completion → LLM; embedding → EMBEDDING; rerank → RERANKER),
   then ``traceloop.span.kind`` (agent → AGENT, tool → TOOL, workflow, task → CHAIN).

Tokens are normalised to ``gen_ai.usage.input_tokens``/``output_tokens`` (and the cached part to
``gen_ai.usage.cache_read.input_tokens``, the store's ``cached_input_tokens`` column) from OpenInference's
``llm.token_count.*`` and from the earlier ``gen_ai.usage.prompt_tokens``/``completion_tokens`` — only on a
span classified LLM or EMBEDDING, so a vLLM server span (earlier names, no operation) never counts the
client's tokens twice. Every key added is listed in ``ragtrail.derived``, so what the sender sent can
always be told apart from what ragtrail derived.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ragtrail import semconv
from ragtrail.tracing._content import active_config
from ragtrail.tracing._prices import compute_cost, current_table, load_prices

_BY_OPERATION = {
    "chat": semconv.LLM,
    "text_completion": semconv.LLM,
    "generate_content": semconv.LLM,
    "embeddings": semconv.EMBEDDING,
    "execute_tool": semconv.TOOL,
    "invoke_agent": semconv.AGENT,
    "create_agent": semconv.AGENT,
    "retrieval": semconv.RETRIEVER,
}
_BY_REQUEST_TYPE = {
    "chat": semconv.LLM,
    "completion": semconv.LLM,
    "embedding": semconv.EMBEDDING,
    "rerank": semconv.RERANKER,
}
_BY_TRACELOOP_KIND = {"agent": semconv.AGENT, "tool": semconv.TOOL, "workflow": semconv.CHAIN, "task": semconv.CHAIN}
_PRICED = (semconv.LLM, semconv.EMBEDDING)

_tables: dict[str, Any] = {}


def derive_kind(attrs: Mapping[str, Any]) -> tuple[str, str] | None:
    """(kind, source) from the conventions a foreign span follows; None when nothing says."""
    op = attrs.get(semconv.GEN_AI_OPERATION_NAME)
    if isinstance(op, str) and op.lower() in _BY_OPERATION:
        return _BY_OPERATION[op.lower()], "gen_ai"
    oi = attrs.get(semconv.OI_SPAN_KIND)
    if isinstance(oi, str) and oi.upper() in semconv.SPAN_KINDS:
        return oi.upper(), "openinference"
    rt = attrs.get(semconv.OPENLLMETRY_REQUEST_TYPE)
    if isinstance(rt, str) and rt.lower() in _BY_REQUEST_TYPE:
        return _BY_REQUEST_TYPE[rt.lower()], "openllmetry"
    tk = attrs.get(semconv.TRACELOOP_SPAN_KIND)
    if isinstance(tk, str) and tk.lower() in _BY_TRACELOOP_KIND:
        return _BY_TRACELOOP_KIND[tk.lower()], "openllmetry"
    return None


def int_or_none(v: Any) -> int | None:
    """``v`` as an int (None for None, booleans and what ``int()`` refuses)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _first(attrs: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        v = attrs.get(k)
        if v is not None and v != "":
            return v
    return None


def _price_table() -> Any:
    if active_config() is not None:
        return current_table()  # the app's prices (init(prices=...)), as record_usage uses
    if "default" not in _tables:
        _tables["default"] = load_prices()  # the receiver: the built-in table and $RAGTRAIL_PRICES
    return _tables["default"]


def classify(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The attributes of a foreign span with ragtrail's kind, tokens and cost added; None when unchanged.

    Never raises (a span that cannot be classified is stored as it came).
    """
    if semconv.SPAN_KIND in attrs:
        return None
    try:
        return _classify(attrs)
    except Exception:
        from ragtrail._log import logger

        logger.debug("ragtrail: could not classify a span", exc_info=True)
        return None


def _classify(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    found = derive_kind(attrs)
    if found is None:
        return None
    kind, source = found
    add: dict[str, Any] = {semconv.SPAN_KIND: kind, semconv.KIND_SOURCE: source}
    if kind in _PRICED:
        inp = int_or_none(
            _first(
                attrs,
                semconv.GEN_AI_USAGE_INPUT_TOKENS,
                semconv.OI_LLM_TOKEN_COUNT_PROMPT,
                semconv.GEN_AI_USAGE_PROMPT_TOKENS,
            )
        )
        out = int_or_none(
            _first(
                attrs,
                semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
                semconv.OI_LLM_TOKEN_COUNT_COMPLETION,
                semconv.GEN_AI_USAGE_COMPLETION_TOKENS,
            )
        )
        cached = int_or_none(
            _first(
                attrs,
                semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS,
                semconv.OI_LLM_TOKEN_COUNT_PROMPT_CACHE_READ,
                semconv.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS_OLD,
            )
        )
        if inp is not None and semconv.GEN_AI_USAGE_INPUT_TOKENS not in attrs:
            add[semconv.GEN_AI_USAGE_INPUT_TOKENS] = inp
        if out is not None and semconv.GEN_AI_USAGE_OUTPUT_TOKENS not in attrs:
            add[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = out
        if cached is not None and semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS not in attrs:
            add[semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS] = cached  # the cached_input_tokens column (issue 19)
        model = _first(
            attrs,
            semconv.GEN_AI_RESPONSE_MODEL,
            semconv.GEN_AI_REQUEST_MODEL,
            semconv.OI_LLM_MODEL_NAME,
            semconv.OI_EMBEDDING_MODEL_NAME,
        )
        if (
            isinstance(model, str)
            and semconv.GEN_AI_REQUEST_MODEL not in attrs
            and (semconv.GEN_AI_RESPONSE_MODEL not in attrs)
        ):
            add[semconv.GEN_AI_REQUEST_MODEL] = model
        provider = _first(attrs, semconv.GEN_AI_PROVIDER_NAME, semconv.GEN_AI_SYSTEM, semconv.OI_LLM_PROVIDER)
        if provider is None:
            provider = attrs.get(semconv.OI_LLM_SYSTEM)
        if semconv.COST_USD not in attrs and isinstance(model, str) and (inp is not None or out is not None):
            res = compute_cost(provider if isinstance(provider, str) else None, model, inp, out, cached, _price_table())
            if res is not None:
                cost, price = res
                add[semconv.COST_USD] = cost
                add[semconv.COST_SOURCE] = "user_prices" if price.date == "user" else "price_table"
                if price.date:
                    add[semconv.COST_PRICE_DATE] = price.date
    merged = dict(attrs)
    merged.update(add)
    merged[semconv.DERIVED] = sorted(add)
    return merged
