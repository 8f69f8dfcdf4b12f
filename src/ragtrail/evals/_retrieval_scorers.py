"""Retrieval scorers: rank metrics of the retrieved documents against ``example.relevant``.

``recall_at_k``, ``precision_at_k``, ``ndcg_at_k``, ``hit_rate``, ``reciprocal_rank`` (``mrr``) and
``average_precision`` (``map``) rank the ids from the pipeline output's ``contexts`` when it returned
``{"answer": …, "contexts": […]}``, else from the trace's RETRIEVER spans (:func:`ranked_docs`); each
document's id goes through the ``doc_id`` rule (default: ``metadata["doc_id"]`` when present, else
``id``), so chunk ids map to the document ids the relevance judgements use. An example whose judgements
hold no relevant document is ``undefined`` (left out of means) unless ``empty_qrels="zero"``, which
scores it 0 as trec_eval does. Part of :mod:`ragtrail.evals._scorers`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ragtrail._exceptions import ConfigError
from ragtrail.evals import _metrics as M  # noqa: N812
from ragtrail.evals._types import Example, Score, Scorer

if TYPE_CHECKING:
    from ragtrail.tracing._model import Trace


DocIdRule = str | Callable[[Mapping[str, Any]], Any] | None


# ------------------------------------------------------------------------------------- documents
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
