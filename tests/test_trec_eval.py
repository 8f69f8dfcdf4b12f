"""Reproducing trec_eval through an Evaluation. Queries without a relevant document: ``undefined`` by
default (left out of the means) or 0 with ``empty_qrels="zero"``, which is how trec_eval / pytrec_eval
(and tables such as BEIR's) average. Tied scores: ``rank_by="score"`` ranks the recorded documents as
trec_eval ranks a run.

A real Evaluation over SciFact queries with a real lexical retriever (word overlap over the whole
SciFact corpus; its integer scores tie a lot, so the ranking also depends on trec_eval's tie rule).
The run's means are checked against pytrec_eval (the C trec_eval) on the same scored run. Nothing
is faked: the pipeline has no LLM."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import ragtrail
from ragtrail import semconv
from ragtrail._exceptions import ConfigError
from ragtrail.evals import Dataset, Evaluation, metrics, scorers

pytrec_eval = pytest.importorskip("pytrec_eval")

SCIFACT = Path("/work/shared/data/scifact")
_WORD = re.compile(r"[a-z0-9]+")


@pytest.fixture(scope="module")
def scifact() -> tuple[Dataset, dict[str, frozenset[str]]]:
    if not (SCIFACT / "qrels" / "test.tsv").exists():
        pytest.skip("SciFact not present")
    ds = Dataset.from_beir(SCIFACT, split="test")
    assert ds.corpus is not None
    words = {d: frozenset(_WORD.findall(f"{v['title']} {v['text']}".lower())) for d, v in ds.corpus.items()}
    return ds, words


def test_empty_qrels_undefined_by_default_zero_like_trec_eval(traced, scifact) -> None:  # type: ignore[no-untyped-def]
    ds, words = scifact
    base = list(ds)[:10]
    # two queries whose judgements hold no relevant document (their documents judged 0)
    empty = [ex.model_copy(update={"id": f"{ex.id}-judged-0", "relevant": dict.fromkeys(ex.relevant or {}, 0.0)})
             for ex in list(ds)[10:12]]  # fmt: skip
    examples = [*base, *empty]
    data = Dataset.from_records([ex.model_dump() for ex in examples], name="scifact-12")
    runs: dict[str, dict[str, float]] = {}

    def pipeline(question: str) -> str:
        q = frozenset(_WORD.findall(question.lower()))
        scored = {d: float(len(q & w)) for d, w in words.items()}
        top = metrics.trec_eval_order(list(scored), scored)[:100]
        runs[question] = {d: scored[d] for d in top}
        with ragtrail.span("overlap-search", kind=semconv.RETRIEVER) as s:
            ragtrail.record_documents(s, [{"id": d, "score": scored[d]} for d in top])
        return "no answer"

    def make(empty_qrels: str) -> list[Any]:
        return [scorers.ndcg_at_k(10, empty_qrels=empty_qrels), scorers.recall_at_k(5, empty_qrels=empty_qrels),
                scorers.precision_at_k(5, empty_qrels=empty_qrels), scorers.hit_rate(5, empty_qrels=empty_qrels),
                scorers.mrr(empty_qrels=empty_qrels), scorers.map(empty_qrels=empty_qrels)]  # fmt: skip

    undefined = Evaluation("overlap", data, pipeline, make("undefined"), progress=False).run()
    zero = Evaluation("overlap-trec", data, pipeline, make("zero"), progress=False).run()

    qrels = {ex.id: {d: int(g) for d, g in (ex.relevant or {}).items()} for ex in examples}
    run = {ex.id: runs[ex.input] for ex in examples}
    per_query = pytrec_eval.RelevanceEvaluator(
        qrels, {"ndcg_cut_10", "recall_5", "P_5", "success_5", "recip_rank", "map"}
    ).evaluate(run)
    names = {"ndcg@10": "ndcg_cut_10", "recall@5": "recall_5", "precision@5": "P_5", "hit_rate@5": "success_5",
             "mrr": "recip_rank", "map": "map"}  # fmt: skip
    with_rel = [ex.id for ex in base]
    for ours, trec in names.items():
        trec_mean_all = sum(per_query[q][trec] for q in qrels) / len(qrels)  # trec_eval's "all" line
        trec_mean_rel = sum(per_query[q][trec] for q in with_rel) / len(with_rel)
        z = zero.summary["metrics"][ours]
        u = undefined.summary["metrics"][ours]
        assert z["mean"] == pytest.approx(trec_mean_all, abs=1e-9), ours
        assert (z["n_ok"], z["n_undefined"]) == (12, 0), ours
        assert u["mean"] == pytest.approx(trec_mean_rel, abs=1e-9), ours
        assert (u["n_ok"], u["n_undefined"]) == (10, 2), ours
    assert zero.summary["metrics"]["ndcg@10"]["mean"] < undefined.summary["metrics"]["ndcg@10"]["mean"]

    df = zero.results_df()
    rows = df[df.example_id.str.endswith("-judged-0")]
    assert len(rows) == 12 and (rows.status == "ok").all() and (rows.score == 0.0).all()
    assert rows.reason.str.contains("empty_qrels='zero'").all()
    df = undefined.results_df()
    rows = df[df.example_id.str.endswith("-judged-0")]
    assert (rows.status == "undefined").all() and rows.score.isna().all()
    # the option is in the run's lineage (scorer parameters) only when it is not the default
    assert all("empty_qrels" not in s["params"] for s in undefined.lineage["scorers"])
    assert all(s["params"]["empty_qrels"] == "zero" for s in zero.lineage["scorers"])


def test_empty_qrels_option_is_checked() -> None:
    with pytest.raises(ConfigError, match="empty_qrels must be 'undefined'.*or 'zero'"):
        scorers.ndcg_at_k(10, empty_qrels="0")
    assert scorers.map(empty_qrels="zero").params["empty_qrels"] == "zero"
    assert "empty_qrels" not in scorers.map().params


def test_no_judgements_at_all_stays_undefined_even_with_zero() -> None:
    # trec_eval skips a query that is absent from the qrels; so does empty_qrels="zero"
    from ragtrail.evals import Example

    s = scorers.recall_at_k(3, empty_qrels="zero").score(Example(id="q", input="x"), {"contexts": ["a"]}, None)  # type: ignore[arg-type]
    assert s.status == "undefined"
    s = scorers.recall_at_k(3, empty_qrels="zero").score(
        Example(id="q", input="x", relevant={"a": 0}), {"contexts": ["a"]}, None  # type: ignore[arg-type]
    )
    assert (s.status, s.value) == ("ok", 0.0)


def test_rank_by_score_breaks_ties_like_trec_eval(traced, scifact) -> None:  # type: ignore[no-untyped-def]
    """The retriever records its top documents with tied scores in ascending-id order inside each tie
    (a common sort); trec_eval ranks ties by descending id. ``rank_by="score"`` reproduces
    pytrec_eval's means; the default (the recorded position) does not."""
    ds, words = scifact
    examples = list(ds)[:30]
    data = Dataset.from_records([ex.model_dump() for ex in examples], name="scifact-30")
    runs: dict[str, dict[str, float]] = {}

    def pipeline(question: str) -> str:
        q = frozenset(_WORD.findall(question.lower()))
        scored = {d: float(len(q & w)) for d, w in words.items()}
        top = sorted(scored, key=lambda d: (-scored[d], d))[:100]  # ties by ascending id
        runs[question] = {d: scored[d] for d in top}
        with ragtrail.span("overlap-search", kind=semconv.RETRIEVER) as s:
            ragtrail.record_documents(s, [{"id": d, "score": scored[d]} for d in top])
        return "no answer"

    def make(rank_by: str) -> list[Any]:
        return [scorers.ndcg_at_k(10, rank_by=rank_by, name=f"ndcg@10/{rank_by}"),
                scorers.mrr(rank_by=rank_by, name=f"mrr/{rank_by}"),
                scorers.map(rank_by=rank_by, name=f"map/{rank_by}"),
                scorers.precision_at_k(5, rank_by=rank_by, name=f"precision@5/{rank_by}")]  # fmt: skip

    result = Evaluation("overlap-ties", data, pipeline, [*make("position"), *make("score")], progress=False).run()
    qrels = {ex.id: {d: int(g) for d, g in (ex.relevant or {}).items()} for ex in examples}
    run = {ex.id: runs[ex.input] for ex in examples}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut_10", "recip_rank", "map", "P_5"}).evaluate(run)
    differs = 0
    for ours, trec in {"ndcg@10": "ndcg_cut_10", "mrr": "recip_rank", "map": "map", "precision@5": "P_5"}.items():
        expect = sum(per_query[q][trec] for q in qrels) / len(qrels)
        by_score = result.summary["metrics"][f"{ours}/score"]
        assert by_score["mean"] == pytest.approx(expect, abs=1e-9) and by_score["n_ok"] == 30, ours
        differs += abs(result.summary["metrics"][f"{ours}/position"]["mean"] - expect) > 1e-9
    assert differs >= 1  # the ties matter on this data: the recorded order alone gives other means


def test_rank_by_score_needs_scores_and_is_checked() -> None:
    from ragtrail.evals import Example

    ex = Example(id="q", input="x", relevant={"a": 1})
    s = scorers.mrr(rank_by="score").score(ex, {"contexts": [{"id": "b", "score": 1.0}, {"id": "a"}]}, None)  # type: ignore[arg-type]
    assert s.status == "error" and "1 of 2 have none (first: 'a')" in (s.reason or "")
    out = {"contexts": [{"id": "a", "score": 0.5}, {"id": "b", "score": 0.5}]}
    assert scorers.mrr().score(ex, out, None).value == 1.0  # type: ignore[arg-type]
    assert scorers.mrr(rank_by="score").score(ex, out, None).value == 0.5  # type: ignore[arg-type]  # b before a
    with pytest.raises(ConfigError, match="rank_by must be 'position'"):
        scorers.map(rank_by="scores")
    assert scorers.map(rank_by="score").params["rank_by"] == "score" and "rank_by" not in scorers.map().params
