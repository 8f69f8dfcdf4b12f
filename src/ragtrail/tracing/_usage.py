"""Token usage, time to first token and cost: the one helper every connector calls.

Cost rules:
* API models: ``tokens × price`` from a dated price table (``ragtrail/data/prices.json``), overridable
  by file or dict, matched by provider + model (exact name, else the longest known prefix so that
  dated snapshots such as ``gpt-4o-mini-2024-07-18`` match ``gpt-4o-mini``). Unknown model → no cost
  attribute at all, never 0.
* Self-hosted models: ``gpu_seconds × $/GPU-hour / 3600`` with the rate looked up by GPU type.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail._log import logger
from ragtrail.tracing import _setup
from ragtrail.tracing._prices import (  # noqa: F401  (Price, load_prices: re-exported for ragtrail.tracing)
    Price,
    PriceTable,
    compute_cost,
    current_table,
    gpu_cost,
    load_prices,
)


def _table() -> PriceTable:
    return current_table()


def record_usage(
    span: Span,
    *,
    provider: str | None = None,
    model: str | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cached_input_tokens: int | None = None,
    source: str = "provider",
    ttft_s: float | None = None,
    gpu_seconds: float | None = None,
    gpu_type: str | None = None,
    gpu_count: int | None = None,
    operation: str | None = None,
    response_model: str | None = None,
    duration_s: float | None = None,
    error_type: str | None = None,
) -> None:
    """Set token usage (with provenance), time to first token and cost on ``span``, and count the call
    in the GenAI metrics (even when ``span`` is not recording: a sampled-out trace). Never raises.

    Cost comes from GPU time when ``gpu_seconds`` is given (self-hosted models), else from the price
    table; an unknown model gets no cost attribute.

    The metric-only arguments (``operation``, ``response_model``, ``duration_s``, ``error_type``) are
    read from a recording span's attributes and start time when not given; a connector whose span may
    be non-recording passes them. A call reported twice on one span is counted once.
    """
    try:
        cfg = _setup._config
        metrics = cfg.metrics if cfg is not None else None
        recording = span.is_recording()
        if not recording:
            if metrics is not None:
                cost = _cost_only(
                    provider, model, input_tokens, output_tokens, cached_input_tokens, gpu_seconds, gpu_type
                )
                metrics.record(span, operation=operation, provider=provider, request_model=model,
                               response_model=response_model, input_tokens=input_tokens, output_tokens=output_tokens,
                               cost_usd=cost, ttft_s=ttft_s, duration_s=duration_s, error_type=error_type)  # fmt: skip
            return
        if source not in semconv.USAGE_SOURCES:
            logger.debug("ragtrail: unknown usage source %r", source)
        attrs: dict[str, Any] = {}
        if provider:
            attrs[semconv.GEN_AI_PROVIDER_NAME] = provider
        if model:
            attrs[semconv.GEN_AI_REQUEST_MODEL] = model
        if input_tokens is not None:
            attrs[semconv.GEN_AI_USAGE_INPUT_TOKENS] = int(input_tokens)
        if output_tokens is not None:
            attrs[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = int(output_tokens)
        if cached_input_tokens is not None:
            attrs[semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS] = int(cached_input_tokens)
        if input_tokens is not None or output_tokens is not None:
            attrs[semconv.USAGE_TOTAL_TOKENS] = int(input_tokens or 0) + int(output_tokens or 0)
            attrs[semconv.USAGE_SOURCE] = source
        if ttft_s is not None and ttft_s >= 0:
            attrs[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = float(ttft_s)
        if gpu_seconds is not None:
            attrs[semconv.GPU_SECONDS] = float(gpu_seconds)
            if gpu_type:
                attrs[semconv.GPU_TYPE] = gpu_type
            if gpu_count:
                attrs[semconv.GPU_COUNT] = int(gpu_count)
            c = gpu_cost(gpu_seconds, gpu_type)
            if c is not None:
                attrs[semconv.COST_USD] = c
                attrs[semconv.COST_SOURCE] = "gpu_time"
        else:
            res = compute_cost(provider, model, input_tokens, output_tokens, cached_input_tokens)
            if res is not None:
                cost, price = res
                attrs[semconv.COST_USD] = cost
                attrs[semconv.COST_SOURCE] = "user_prices" if price.date == "user" else "price_table"
                if price.date:
                    attrs[semconv.COST_PRICE_DATE] = price.date
        span.set_attributes(attrs)
        if metrics is not None:
            _record_metrics(metrics, span, attrs, operation, response_model, duration_s, error_type)
    except Exception:
        logger.debug("ragtrail: record_usage failed", exc_info=True)


def _cost_only(
    provider: str | None,
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    cached_input_tokens: int | None,
    gpu_seconds: float | None,
    gpu_type: str | None,
) -> float | None:
    if gpu_seconds is not None:
        return gpu_cost(gpu_seconds, gpu_type)
    res = compute_cost(provider, model, input_tokens, output_tokens, cached_input_tokens)
    return res[0] if res is not None else None


def _record_metrics(
    metrics: Any,
    span: Span,
    attrs: Mapping[str, Any],
    operation: str | None,
    response_model: str | None,
    duration_s: float | None,
    error_type: str | None,
) -> None:
    """Count a call on a recording span: what the arguments lack is read from the span."""
    from ragtrail.tracing._metrics import now_minus

    have = getattr(span, "attributes", None) or {}
    metrics.record(
        span,
        operation=operation or have.get(semconv.GEN_AI_OPERATION_NAME),
        provider=attrs.get(semconv.GEN_AI_PROVIDER_NAME) or have.get(semconv.GEN_AI_PROVIDER_NAME),
        request_model=attrs.get(semconv.GEN_AI_REQUEST_MODEL) or have.get(semconv.GEN_AI_REQUEST_MODEL),
        response_model=response_model or have.get(semconv.GEN_AI_RESPONSE_MODEL),
        input_tokens=attrs.get(semconv.GEN_AI_USAGE_INPUT_TOKENS),
        output_tokens=attrs.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
        cost_usd=attrs.get(semconv.COST_USD),
        ttft_s=attrs.get(semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK),
        duration_s=duration_s if duration_s is not None else now_minus(getattr(span, "start_time", None)),
        error_type=error_type or have.get(semconv.ERROR_TYPE),
    )


def record_documents(span: Span, documents: Iterable[Mapping[str, Any]], *, score_kind: str | None = None) -> None:
    """Record retrieved documents on ``span``: id, score, rank (= position), content (capped), metadata.

    Ids (and scores) are always recorded; content and metadata only when content capture is on.
    Never raises.
    """
    try:
        if not span.is_recording():
            return
        from ragtrail.tracing._spans import capture_content, set_content

        docs = []
        ids = []
        content_on = capture_content()
        for rank, d in enumerate(documents):
            doc_id = d.get("id")
            ids.append("" if doc_id is None else str(doc_id))
            item: dict[str, Any] = {"id": None if doc_id is None else str(doc_id), "rank": rank}
            score = d.get("score")
            if score is not None:
                try:
                    item["score"] = float(score)
                except (TypeError, ValueError):
                    item["score"] = None
            if content_on:
                if d.get("content") is not None:
                    c = d["content"]
                    item["content"] = c if isinstance(c, str) else str(c)
                if d.get("metadata"):
                    item["metadata"] = d["metadata"]
            docs.append(item)
        span.set_attribute(semconv.RETRIEVAL_DOCUMENT_IDS, ids)
        if score_kind:
            span.set_attribute(semconv.RETRIEVAL_SCORE_KIND, score_kind)
        if not content_on:
            # ids, ranks and scores are not content: keep them even with content capture off
            docs = [{k: v for k, v in d.items() if k in ("id", "rank", "score")} for d in docs]
        set_content(span, semconv.GEN_AI_RETRIEVAL_DOCUMENTS, _cap_docs(docs), force=True)
    except Exception:
        logger.debug("ragtrail: record_documents failed", exc_info=True)


def _cap_docs(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cap each document's content so one huge document cannot push the others out."""
    cfg = _setup._config
    budget = (cfg.max_attribute_bytes if cfg else 32_768) // max(1, len(docs)) - 200
    budget = max(budget, 200)
    out = []
    for d in docs:
        c = d.get("content")
        if isinstance(c, str) and len(c.encode("utf-8")) > budget:
            d = dict(d)
            d["content"] = c.encode("utf-8")[:budget].decode("utf-8", errors="ignore") + "…[truncated]"
            d["truncated"] = True
        out.append(d)
    return out
