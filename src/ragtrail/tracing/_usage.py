"""Token usage, time to first token and cost: the one helper every connector calls.

Cost rules:
* API models: ``tokens × price`` from a dated price table (``ragtrail/data/prices.json``), overridable
  by file or dict, matched by provider + model (exact name, else the longest known prefix so that
  dated snapshots such as ``gpt-4o-mini-2024-07-18`` match ``gpt-4o-mini``). Unknown model → no cost
  attribute at all, never 0.
* Self-hosted models: ``gpu_seconds × $/GPU-hour / 3600`` with the rate looked up by GPU type.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail._exceptions import ConfigError
from ragtrail._log import logger
from ragtrail.tracing import _setup


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None
    date: str | None = None


_PROVIDER_ALIASES = {
    "azure": "openai", "azure_openai": "openai", "azure-openai": "openai", "openai_chat": "openai",
    "anthropic_chat": "anthropic", "google_genai": "google", "google_vertexai": "google", "vertexai": "google",
    "gemini": "google", "mistralai": "mistral", "chatopenai": "openai",
}  # fmt: skip


# What may follow a known model name and still be the same model: a dated or numbered snapshot
# (gpt-4o-mini-2024-07-18, claude-3-5-sonnet-20241022, gemini-1.5-pro-002, mistral-large-2411) or an
# alias of the newest one (-latest). Anything else (o3 vs o3-mini, flash vs flash-lite) is another
# model, whose price is unknown rather than guessed.
_SNAPSHOT = re.compile(r"[-@](?:\d{4}-\d{2}-\d{2}|\d{8}|\d{3,4}|latest)$")


def _norm_provider(p: str | None) -> str:
    p = (p or "").strip().lower()
    return _PROVIDER_ALIASES.get(p, p)


class PriceTable:
    """Model prices by (provider, model) plus $/GPU-hour by GPU type."""

    def __init__(self, rows: Iterable[Mapping[str, Any]], gpu_hourly: Mapping[str, float], date: str | None) -> None:
        self.date = date
        self._by_provider: dict[str, dict[str, Price]] = {}
        self._any: dict[str, Price] = {}
        rows = list(rows)
        # rows come in priority order (user rows first): the first row for a (provider, model) wins.
        # A row without a provider applies to every provider that lists the model, so a user's
        # {"gpt-4o": {...}} overrides the built-in openai/gpt-4o price.
        providers_of: dict[str, set[str]] = {}
        for r in rows:
            if isinstance(r, Mapping) and r.get("provider") and r.get("model"):
                providers_of.setdefault(str(r["model"]).lower(), set()).add(_norm_provider(r.get("provider")))
        for i, r in enumerate(rows):
            try:
                price = Price(
                    float(r["input"]),
                    float(r["output"]),
                    None if r.get("cached_input") is None else float(r["cached_input"]),
                    r.get("date") or date,
                )
                model = str(r["model"]).lower()
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(
                    f"price table row {i}: {exc!s}; each row needs 'model', 'input' and 'output' "
                    "(USD per million tokens), optionally 'provider' and 'cached_input'"
                ) from exc
            if r.get("provider"):
                provs = [_norm_provider(r.get("provider"))]
            else:
                provs = [*sorted(providers_of.get(model, ())), ""]
            for prov in provs:
                self._by_provider.setdefault(prov, {}).setdefault(model, price)
            self._any.setdefault(model, price)
        self.gpu_hourly = {str(k): float(v) for k, v in gpu_hourly.items() if not str(k).startswith("_")}

    def lookup(self, provider: str | None, model: str | None) -> Price | None:
        """The price of ``model`` (exact, else longest prefix); None when unknown."""
        if not model:
            return None
        m = model.lower().rsplit("/", 1)[-1] if "/" in model and not model.lower().startswith("ft:") else model.lower()
        if m.startswith("ft:"):
            m = m[3:].split(":", 1)[0]
        table = self._by_provider.get(_norm_provider(provider)) if provider else None
        # the provider's own rows, then rows that name no provider (they apply to every provider);
        # a provider the table does not know searches every row
        fallback = self._any if not provider or table is None else self._by_provider.get("", {})
        for candidates in ((table or {}), fallback):
            if m in candidates:
                return candidates[m]
            best = None
            for name in candidates:
                if m.startswith(name) and _SNAPSHOT.match(m, len(name)):
                    if best is None or len(name) > len(best):
                        best = name
            if best is not None:
                return candidates[best]
        return None

    def gpu_rate(self, gpu_type: str | None) -> float | None:
        """$/GPU-hour for ``gpu_type`` (exact, then substring match, then 'default')."""
        if gpu_type:
            if gpu_type in self.gpu_hourly:
                return self.gpu_hourly[gpu_type]
            low = gpu_type.lower()
            best = None
            for k in self.gpu_hourly:
                if k.lower() in low and k not in ("default",) and (best is None or len(k) > len(best)):
                    best = k
            if best is not None:
                return self.gpu_hourly[best]
        return self.gpu_hourly.get("default")


def _read_json(path: str | os.PathLike[str]) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError as exc:
        raise ConfigError(f"price file {os.fspath(path)!r} does not exist; pass a JSON file or a dict") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"price file {os.fspath(path)}:{exc.lineno}: invalid JSON ({exc.msg})") from exc


_default_data: dict[str, Any] | None = None


def _builtin() -> dict[str, Any]:
    global _default_data
    if _default_data is None:
        _default_data = json.loads(resources.files("ragtrail.data").joinpath("prices.json").read_text("utf-8"))
    return _default_data


def load_prices(
    overrides: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    gpu_overrides: Mapping[str, float] | None = None,
) -> PriceTable:
    """The built-in table, updated by ``overrides`` (a path, a dict shaped like prices.json, or a
    ``{model: {"input": .., "output": ..}}`` dict) and by ``$RAGTRAIL_PRICES`` / ``$RAGTRAIL_GPU_PRICES``."""
    base = _builtin()
    rows = list(base["models"])
    gpu = dict(base.get("gpu_hourly_usd", {}))
    date = base.get("date")
    sources: list[Any] = []
    if os.environ.get("RAGTRAIL_PRICES"):
        sources.append(os.environ["RAGTRAIL_PRICES"])
    if overrides is not None:
        sources.append(overrides)
    for src in sources:
        data = _read_json(src) if isinstance(src, (str, os.PathLike)) else src
        if not isinstance(data, Mapping):
            raise ConfigError("prices must be a JSON object / dict")
        if "models" in data:
            rows = list(data["models"]) + rows  # user rows first: they win
            gpu.update(data.get("gpu_hourly_usd", {}))
        else:
            for model, p in data.items():
                if not isinstance(p, Mapping):
                    raise ConfigError(
                        f"prices[{model!r}] must be a dict with 'input' and 'output' USD per million tokens"
                    )
                rows.insert(0, {"model": model, "provider": p.get("provider"), **p, "date": p.get("date", "user")})
    if os.environ.get("RAGTRAIL_GPU_PRICES"):
        gpu.update(_read_json(os.environ["RAGTRAIL_GPU_PRICES"]))
    if gpu_overrides:
        gpu.update(gpu_overrides)
    return PriceTable(rows, gpu, date)


def _table() -> PriceTable:
    cfg = _setup._config
    if cfg is not None:
        if cfg.prices is None:
            cfg.prices = load_prices()
        if cfg.gpu_prices and not getattr(cfg.prices, "_gpu_applied", False):
            cfg.prices.gpu_hourly.update(cfg.gpu_prices)
            cfg.prices._gpu_applied = True  # type: ignore[attr-defined]
        return cfg.prices  # type: ignore[no-any-return]
    return load_prices()


def compute_cost(
    provider: str | None,
    model: str | None,
    input_tokens: int | None,
    output_tokens: int | None,
    cached_input_tokens: int | None = None,
    table: PriceTable | None = None,
) -> tuple[float, Price] | None:
    """Cost in USD of a call from the price table, or None when the model's price is unknown."""
    table = table or _table()
    price = table.lookup(provider, model)
    if price is None or (input_tokens is None and output_tokens is None):
        return None
    inp = int(input_tokens or 0)
    cached = int(cached_input_tokens or 0)
    cached = min(cached, inp)
    cached_rate = price.cached_input if price.cached_input is not None else price.input
    cost = ((inp - cached) * price.input + cached * cached_rate + int(output_tokens or 0) * price.output) / 1e6
    return cost, price


def gpu_cost(gpu_seconds: float, gpu_type: str | None = None, table: PriceTable | None = None) -> float | None:
    """USD for ``gpu_seconds`` of GPU time on ``gpu_type`` (None when no rate is configured)."""
    rate = (table or _table()).gpu_rate(gpu_type)
    if rate is None:
        return None
    return float(gpu_seconds) * rate / 3600.0


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
