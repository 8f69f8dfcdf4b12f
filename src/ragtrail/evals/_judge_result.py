"""What a judge call gives back (:class:`JudgeResult`: the verdict or why there is none, with the
raw text of every attempt, tokens and cost) and what a set of calls would cost (:class:`Estimate`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel


@dataclass
class JudgeResult:
    """One judge call: the validated verdict or the reason it failed, with everything needed to audit it."""

    parsed: BaseModel | None
    error: str | None
    raw: list[str]
    method: str
    model_id: str
    params: dict[str, Any]
    cached: bool = False
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    attempts: int = 1
    key: str = ""
    logprob: float | None = None
    trial: int = 0
    called: bool = True

    @property
    def ok(self) -> bool:
        return self.parsed is not None and self.error is None

    def details(self) -> dict[str, Any]:
        """What a Score keeps in ``details["judge"]``: raw output of every attempt, method, params…"""
        d: dict[str, Any] = {
            "model": self.model_id,
            "method": self.method,
            "params": self.params,
            "raw": self.raw,
            "attempts": self.attempts,
            "cached": self.cached,
            "cache_key": self.key,
        }
        if self.usage:
            d["usage"] = self.usage
        if self.cost_usd is not None:
            d["cost_usd"] = self.cost_usd
        if self.logprob is not None:
            d["logprob"] = self.logprob
        if self.parsed is not None:
            d["verdict"] = self.parsed.model_dump()
        if self.error:
            d["error"] = self.error
        return d


@dataclass
class Estimate:
    """A dry-run estimate of judge work: calls, cache hits, tokens and cost (None when the price is unknown)."""

    calls: int
    cached: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None

    def __str__(self) -> str:
        cost = "unknown price" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        return (
            f"{self.calls} judge calls ({self.cached} cached), ~{self.input_tokens} input + "
            f"≤{self.output_tokens} output tokens, {cost}"
        )


__all__ = ["Estimate", "JudgeResult"]
