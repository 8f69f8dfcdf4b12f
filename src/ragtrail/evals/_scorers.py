"""Built-in scorers, user scorers from functions, and the scorer registry.

A scorer is called as ``scorer(example, output, trace)``. Built-ins:

* retrieval — ``recall_at_k``, ``precision_at_k``, ``ndcg_at_k``, ``hit_rate``, ``reciprocal_rank``
  (``mrr``), ``average_precision`` (``map``): ranked ids from the pipeline output's ``contexts`` when it
  returned ``{"answer": …, "contexts": […]}``, else from the trace's RETRIEVER spans; each document's
  id goes through the ``doc_id`` rule (default: ``metadata["doc_id"]`` when present, else ``id``), so
  chunk ids map to the document ids the relevance judgements use. An example whose judgements hold
  no relevant document is ``undefined`` (left out of means) unless ``empty_qrels="zero"``, which
  scores it 0 as trec_eval does. They live in :mod:`ragtrail.evals._retrieval_scorers`.
* answers — ``exact_match``, ``token_f1`` (SQuAD), ``rouge_l``, ``bleu``, ``semantic_similarity``
  (sentence-transformers, batched across examples). They live in :mod:`ragtrail.evals._text_scorers`.
* from spans — ``latency`` (ms of the example's root span), ``tokens``, ``cost``: defined here, with
  :class:`FunctionScorer` and the ``@scorer`` decorator for user scorers.

This module re-exports the two modules above, so every built-in is importable from here (the public
face is :mod:`ragtrail.evals.scorers`). Names map to scorers through the registry
(:mod:`ragtrail.evals._registry`), which reads the ``ragtrail.scorers`` entry-point group: the
built-ins are registered there the same way as any third-party scorer.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ragtrail.evals._aio import run_sync
from ragtrail.evals._retrieval_scorers import (
    DocIdRule,
    RetrievalScorer,
    average_precision,
    hit_rate,
    map,  # noqa: A004
    mrr,
    ndcg_at_k,
    precision_at_k,
    ranked_docs,
    ranked_ids,
    recall_at_k,
    reciprocal_rank,
)
from ragtrail.evals._text_scorers import (
    SemanticSimilarity,
    TextScorer,
    answer_of,
    bleu,
    exact_match,
    load_sentence_model,
    rouge_l,
    semantic_similarity,
    token_f1,
)
from ragtrail.evals._types import Example, Score, Scorer

if TYPE_CHECKING:
    from ragtrail.tracing._model import Trace

__all__ = [
    "DocIdRule",
    "FunctionScorer",
    "RetrievalScorer",
    "Scorer",
    "SemanticSimilarity",
    "TextScorer",
    "answer_of",
    "average_precision",
    "bleu",
    "cost",
    "exact_match",
    "hit_rate",
    "latency",
    "load_sentence_model",
    "map",
    "mrr",
    "ndcg_at_k",
    "precision_at_k",
    "ranked_docs",
    "ranked_ids",
    "recall_at_k",
    "reciprocal_rank",
    "rouge_l",
    "scorer",
    "semantic_similarity",
    "token_f1",
    "tokens",
]


# ------------------------------------------------------------------------------------- spans
class _SpanScorer(Scorer):
    def __init__(self, name: str, fn: Callable[[Trace], Score]) -> None:
        self.name = name
        self._fn = fn

    def score(self, example: Example, output: Any, trace: Trace) -> Score:
        if trace is None or not len(trace):
            return Score.undefined("no trace was recorded for this example")
        return self._fn(trace)


def _latency(trace: Trace) -> Score:
    root = trace.root
    return Score(root.duration_ms if root is not None else trace.duration_ms)


def _tokens(trace: Trace) -> Score:
    calls = [s for s in trace.llm_calls() if s.input_tokens is not None or s.output_tokens is not None]
    if not calls:
        return Score.undefined("no LLM span with token counts in the trace")
    i, o = trace.input_tokens, trace.output_tokens
    return Score.ok(i + o, input_tokens=i, output_tokens=o)


def _cost(trace: Trace) -> Score:
    c = trace.cost_usd
    if c is None:
        return Score.undefined("no span in the trace has a known cost")
    return Score(c)


def latency() -> Scorer:
    """Milliseconds of the example's root span (the pipeline call)."""
    return _SpanScorer("latency_ms", _latency)


def tokens() -> Scorer:
    """Input + output tokens of the trace's LLM spans (details split them)."""
    return _SpanScorer("tokens", _tokens)


def cost() -> Scorer:
    """USD cost of the trace's spans (undefined when no price is known, never 0)."""
    return _SpanScorer("cost_usd", _cost)


# ------------------------------------------------------------------------------------- user scorers
_ARG_NAMES = ("example", "output", "trace")


class FunctionScorer(Scorer):
    """Wraps a plain function (sync or async, per example or batched) as a scorer.

    Per-example functions take any of ``example``, ``output``, ``trace`` by name (or the three
    positionally); batched ones take a list of ``(example, output, trace)`` tuples and return a list.
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None, version: str = "1",
                 batched: bool = False, params: Mapping[str, Any] | None = None) -> None:  # fmt: skip
        self.fn = fn
        self.name = str(name or getattr(fn, "__name__", None) or "scorer")
        self.version = version
        self.batched = batched
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
        self._params = dict(params or {})
        try:
            sig = inspect.signature(fn)
            names = [p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        except (TypeError, ValueError):
            names = []
        if not batched and names and set(names) <= set(_ARG_NAMES):
            self._by_name: list[str] | None = names
        else:
            self._by_name = None

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._params)

    def _args(self, example: Example, output: Any, trace: Trace) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if self._by_name is not None:
            vals = {"example": example, "output": output, "trace": trace}
            return (), {n: vals[n] for n in self._by_name}
        return (example, output, trace), {}

    def score(self, example: Example, output: Any, trace: Trace) -> Any:
        if self.batched:
            return self.score_batch([(example, output, trace)])[0]
        a, kw = self._args(example, output, trace)
        res = self.fn(*a, **kw)
        if inspect.isawaitable(res):
            return run_sync(res)
        return res

    async def ascore(self, example: Example, output: Any, trace: Trace) -> Any:
        if self.batched:
            return self.score_batch([(example, output, trace)])[0]
        a, kw = self._args(example, output, trace)
        res = self.fn(*a, **kw)
        if inspect.isawaitable(res):
            res = await res
        return res

    def score_batch(self, items: Sequence[tuple[Example, Any, Trace]]) -> list[Any]:
        if not self.batched:
            return [self.score(e, o, t) for e, o, t in items]
        res = self.fn(list(items))
        if inspect.isawaitable(res):
            res = run_sync(res)
        res = list(res)
        if len(res) != len(items):
            raise ValueError(f"batched scorer {self.name!r} returned {len(res)} scores for {len(items)} examples")
        return res

    def describe(self) -> Mapping[str, Any]:
        d = dict(super().describe())
        d["function"] = f"{getattr(self.fn, '__module__', '?')}:{getattr(self.fn, '__qualname__', '?')}"
        return d


def scorer(fn: Callable[..., Any] | None = None, *, name: str | None = None, version: str = "1",
           batched: bool = False) -> Any:  # fmt: skip
    """Decorator: ``@scorer`` / ``@scorer(name="faithful", batched=True)`` turns a function into a Scorer."""

    def wrap(f: Callable[..., Any]) -> FunctionScorer:
        return FunctionScorer(f, name=name, version=version, batched=batched)

    return wrap(fn) if fn is not None else wrap
