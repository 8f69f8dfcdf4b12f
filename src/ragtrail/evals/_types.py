"""The shapes every part of the eval harness shares: Example, Score, Scorer.

A scorer is called as ``scorer(example, output, trace)`` and returns a :class:`Score` (or a bare
float/bool, taken as an ``ok`` score). Anything that cannot be scored is a Score with status
``undefined`` (with the reason) or ``error`` (with the reason), never NaN, 0 or -1.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from ragtrail.tracing._model import Trace

Status = Literal["ok", "undefined", "error"]
STATUSES: tuple[str, ...] = ("ok", "undefined", "error")


class Example(BaseModel):
    """One dataset example.

    ``relevant`` holds graded relevance judgements (``{doc_id: grade}``; a grade >= 1 is relevant at the
    default threshold, trec_eval's ``relevance_level``; nDCG gains are the grades themselves);
    ``contexts`` optional reference contexts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    input: Any
    reference: Any = None
    relevant: dict[str, float] | None = None
    contexts: list[str] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


@dataclass
class Score:
    """A scorer's result for one example.

    ``value`` is set only when ``status == "ok"``; ``reason`` says why a score is undefined or an
    error; ``details`` keeps anything else worth seeing (per-document scores, raw judge output…).
    """

    value: float | None
    status: Status = "ok"
    reason: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Score.status must be one of {STATUSES}, not {self.status!r}")
        if self.status == "ok":
            if self.value is None:
                raise ValueError("an ok Score needs a value")
            v = float(self.value)
            if math.isnan(v) or math.isinf(v):
                raise ValueError(f"an ok Score needs a finite value, got {self.value!r}; use Score.undefined(reason)")
            self.value = v
        else:
            self.value = None

    @classmethod
    def ok(cls, value: float, **details: Any) -> Score:
        return cls(float(value), "ok", None, dict(details))

    @classmethod
    def undefined(cls, reason: str, **details: Any) -> Score:
        return cls(None, "undefined", reason, dict(details))

    @classmethod
    def error(cls, reason: str, **details: Any) -> Score:
        return cls(None, "error", reason, dict(details))

    @classmethod
    def coerce(cls, value: Any) -> Score:
        """A Score from what a scorer returned (Score, float, int, bool; None/NaN → undefined)."""
        if isinstance(value, Score):
            return value
        if value is None:
            return cls.undefined("scorer returned None")
        if isinstance(value, bool):
            return cls.ok(1.0 if value else 0.0)
        if isinstance(value, (int, float)):
            if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
                return cls.undefined(f"scorer returned {value!r}")
            return cls.ok(float(value))
        raise TypeError(f"a scorer must return a Score, a number or a bool, not {type(value).__name__}")


class Scorer:
    """Base class of scorers. Subclasses set ``name`` (and ``version`` when their logic changes) and
    implement :meth:`score` (sync) or :meth:`ascore` (async); batched scorers (GPU models) implement
    :meth:`score_batch` and set ``batched = True``.
    """

    name: str = "scorer"
    version: str = "1"
    batched: bool = False
    is_async: bool = False

    @property
    def params(self) -> dict[str, Any]:
        """Parameters recorded in the run's lineage."""
        return {}

    def score(self, example: Example, output: Any, trace: Trace) -> Score | float | bool:
        raise NotImplementedError

    async def ascore(self, example: Example, output: Any, trace: Trace) -> Score | float | bool:
        return self.score(example, output, trace)

    def score_batch(self, items: Sequence[tuple[Example, Any, Trace]]) -> list[Score | float | bool]:
        return [self.score(e, o, t) for e, o, t in items]

    def describe(self) -> Mapping[str, Any]:
        return {"name": self.name, "version": self.version, "params": self.params, "class": type(self).__qualname__}
