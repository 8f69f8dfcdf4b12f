"""The price table: model prices by provider and model, $/GPU-hour by GPU type, and the cost of a call.

Cost rules (see :mod:`ragtrail.tracing._usage`, which records it on spans): API models cost
``tokens × price`` from a dated table (``ragtrail/data/prices.json``), overridable by file or dict, matched
by provider + model (exact name, else a known name followed by a snapshot suffix); an unknown model has
no cost, never 0. Self-hosted models cost ``gpu_seconds × $/GPU-hour / 3600``.

This module reads the running configuration only through what ``ragtrail.init()`` pushes
(:func:`ragtrail.tracing._content.active_config`), so the exporter's classifier can price spans without
importing the tracing setup.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ragtrail._exceptions import ConfigError
from ragtrail.tracing._content import active_config


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


def current_table() -> PriceTable:
    """The price table of the running ``ragtrail.init()`` (its ``prices=`` and ``gpu_prices=``), else the
    built-in one with ``$RAGTRAIL_PRICES`` / ``$RAGTRAIL_GPU_PRICES`` (read again on every call)."""
    cfg = active_config()
    if cfg is not None:
        if cfg.prices is None:
            cfg.prices = load_prices()
        if cfg.gpu_prices and not getattr(cfg.prices, "_gpu_applied", False):
            cfg.prices.gpu_hourly.update(cfg.gpu_prices)
            cfg.prices._gpu_applied = True
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
    table = table or current_table()
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
    rate = (table or current_table()).gpu_rate(gpu_type)
    if rate is None:
        return None
    return float(gpu_seconds) * rate / 3600.0


__all__ = ["Price", "PriceTable", "compute_cost", "current_table", "gpu_cost", "load_prices"]
