"""Retrieval metrics agree with pytrec_eval (trec_eval) to 1e-9 on randomized inputs; text metrics
follow SQuAD's normalisation; ROUGE-L and BLEU agree with rouge-score and sacrebleu."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragtrail.evals import metrics

pytrec_eval = pytest.importorskip("pytrec_eval")

MEASURES = {"P_1", "P_3", "P_5", "P_10", "recall_1", "recall_3", "recall_5", "recall_10", "ndcg_cut_1",
            "ndcg_cut_3", "ndcg_cut_5", "ndcg_cut_10", "map", "map_cut_5", "map_cut_10", "recip_rank",
            "success_1", "success_3", "success_5", "success_10", "ndcg"}  # fmt: skip


def _trec(ranked: list[str], qrels: dict[str, int], level: int = 1) -> dict[str, float]:
    # pytrec_eval takes scores; strictly decreasing scores give our rank order (first occurrence of a
    # duplicate keeps the higher score, which is the same as removing later duplicates).
    run: dict[str, float] = {}
    for i, d in enumerate(ranked):
        run.setdefault(d, float(len(ranked) - i))
    ev = pytrec_eval.RelevanceEvaluator({"q": qrels}, MEASURES, relevance_level=level)
    return ev.evaluate({"q": run})["q"]


def _ours(ranked: list[str], qrels: dict[str, int], level: int = 1) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k in (1, 3, 5, 10):
        out[f"P_{k}"] = metrics.precision_at_k(ranked, qrels, k, threshold=level)
        out[f"recall_{k}"] = metrics.recall_at_k(ranked, qrels, k, threshold=level)
        out[f"ndcg_cut_{k}"] = metrics.ndcg_at_k(ranked, qrels, k)
        out[f"success_{k}"] = metrics.hit_rate(ranked, qrels, k, threshold=level)
    out["map"] = metrics.average_precision(ranked, qrels, threshold=level)
    out["map_cut_5"] = metrics.average_precision(ranked, qrels, 5, threshold=level)
    out["map_cut_10"] = metrics.average_precision(ranked, qrels, 10, threshold=level)
    out["recip_rank"] = metrics.reciprocal_rank(ranked, qrels, threshold=level)
    out["ndcg"] = metrics.ndcg_at_k(ranked, qrels, 10_000)
    return out


def _random_case(rng: random.Random) -> tuple[list[str], dict[str, int], int]:
    pool = [f"d{i}" for i in range(rng.randint(1, 40))]
    qrels = {d: rng.choice([0, 0, 1, 1, 2, 3]) for d in rng.sample(pool, rng.randint(1, len(pool)))}
    ranked = [rng.choice(pool + ["x1", "x2", "x3"]) for _ in range(rng.randint(0, 30))]  # duplicates happen
    return ranked, qrels, rng.choice([1, 1, 2])


def _compare(ranked: list[str], qrels: dict[str, int], level: int) -> None:
    ours = _ours(ranked, qrels, level)
    n_rel = sum(1 for g in qrels.values() if g >= level)
    has_gain = any(g > 0 for g in qrels.values())
    ref = _trec(ranked, qrels, level)
    for m, v in ours.items():
        if m.startswith("ndcg"):
            if not has_gain:
                assert v is None, m
                continue
        elif n_rel == 0:
            assert v is None, f"{m} must be undefined without relevant documents"
            continue
        assert v is not None, m
        assert math.isclose(v, ref[m], rel_tol=0, abs_tol=1e-9), (m, ranked, qrels, level, v, ref[m])


def test_agrees_with_pytrec_eval_on_2000_seeded_random_queries() -> None:
    rng = random.Random(20261129)
    for _ in range(2000):
        _compare(*_random_case(rng))


@settings(max_examples=300, deadline=None)
@given(
    ranked=st.lists(st.sampled_from([f"d{i}" for i in range(12)]), max_size=25),
    qrels=st.dictionaries(st.sampled_from([f"d{i}" for i in range(15)]), st.integers(0, 4), min_size=1, max_size=15),
    level=st.integers(1, 3),
)
def test_agrees_with_pytrec_eval_hypothesis(ranked: list[str], qrels: dict[str, int], level: int) -> None:
    _compare(ranked, qrels, level)


def test_precision_divides_by_k_even_when_fewer_retrieved() -> None:
    assert metrics.precision_at_k(["a"], {"a": 1}, 5) == pytest.approx(0.2)


def test_duplicates_removed_before_cutoff_first_occurrence_kept() -> None:
    # without de-duplication "a" would count twice and "b" would fall outside the cutoff
    assert metrics.precision_at_k(["a", "a", "b"], {"a": 1, "b": 1}, 2) == 1.0
    assert metrics.recall_at_k(["a", "a", "a"], {"a": 1, "b": 1}, 3) == 0.5
    assert metrics.reciprocal_rank(["x", "x", "a"], {"a": 1}) == 0.5


def test_average_precision_denominator_is_all_relevant() -> None:
    # one of two relevant documents retrieved at rank 1: AP = 1/2, not 1
    assert metrics.average_precision(["a", "x"], {"a": 1, "b": 1}) == 0.5


def test_no_relevant_documents_is_undefined_not_zero() -> None:
    for v in (
        metrics.recall_at_k(["a"], {"a": 0}, 3),
        metrics.precision_at_k(["a"], {}, 3),
        metrics.average_precision(["a"], {"b": 0}),
        metrics.reciprocal_rank(["a"], {}),
        metrics.hit_rate(["a"], {}, 1),
        metrics.ndcg_at_k(["a"], {"a": 0}, 3),
    ):
        assert v is None


def test_graded_threshold() -> None:
    q = {"a": 1, "b": 2}
    assert metrics.recall_at_k(["a"], q, 1) == 0.5
    assert metrics.recall_at_k(["a"], q, 1, threshold=2) == 0.0
    assert metrics.recall_at_k(["b"], q, 1, threshold=2) == 1.0


def test_ndcg_linear_default_and_exponential_on_request() -> None:
    q = {"a": 1, "b": 3}
    lin = metrics.ndcg_at_k(["a", "b"], q, 2)
    exp = metrics.ndcg_at_k(["a", "b"], q, 2, gain="exponential")
    d = 1 / math.log2(3)
    assert lin == pytest.approx((1 + 3 * d) / (3 + 1 * d))
    assert exp == pytest.approx((1 + 7 * d) / (7 + 1 * d))
    with pytest.raises(ValueError):
        metrics.ndcg_at_k(["a"], q, 2, gain="cubic")  # type: ignore[arg-type]


def test_bad_k_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="positive integer"):
        metrics.recall_at_k(["a"], {"a": 1}, 0)


@pytest.mark.parametrize(
    ("pred", "ref", "em", "f1"),
    [
        ("The Eiffel Tower!", "eiffel tower", 1.0, 1.0),
        ("an apple", "Apple.", 1.0, 1.0),
        ("Paris, France", "Paris", 0.0, 2 / 3),
        ("", "x", 0.0, 0.0),
        ("blue whale", ["the whale", "Blue   whale"], 1.0, 1.0),
        ("a big red dog", "the red dog barks", 0.0, 2 / 3),  # articles dropped: 3 vs 3 tokens, 2 shared
    ],
)
def test_squad_exact_match_and_f1(pred: str, ref: str | list[str], em: float, f1: float) -> None:
    assert metrics.exact_match(pred, ref) == em
    assert metrics.token_f1(pred, ref) == pytest.approx(f1)


def test_rouge_l_and_bleu_match_their_libraries() -> None:
    import sacrebleu
    from rouge_score import rouge_scorer

    pred, ref = "the cat sat on the mat today", "the cat was sitting on the mat"
    expect = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True).score(ref, pred)["rougeL"].fmeasure
    assert metrics.rouge_l(pred, ref) == pytest.approx(expect)
    assert metrics.bleu(pred, ref) == pytest.approx(sacrebleu.sentence_bleu(pred, [ref]).score / 100)
    assert metrics.bleu(ref, ref) == pytest.approx(1.0)


def test_rouge_l_and_bleu_equal_their_libraries_on_random_text() -> None:
    """ROUGE-L uses rouge-score's tokenizer/stemmer with a bit-parallel LCS: it must equal rouge-score."""
    import sacrebleu
    from rouge_score import rouge_scorer

    ref_scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    rng = random.Random(7)
    vocab = "the a cats dog sitting on mat running fast slowly red blue greens houses models claims, it's 3.5 U.S. é".split()
    for _ in range(1500):
        a = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 70)))  # > 64 tokens crosses a machine word
        b = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 70)))
        assert metrics.rouge_l(a, b) == ref_scorer.score(b, a)["rougeL"].fmeasure
        if b:
            assert metrics.bleu(a, b) == pytest.approx(sacrebleu.sentence_bleu(a, [b]).score / 100, abs=1e-12)
    assert metrics.rouge_l("x y", ["nothing", "x y"]) == 1.0  # best over references


def test_bleu_tokenizer_shortcut_is_sacrebleu_13a() -> None:
    """bleu() swaps sacrebleu's 13a regex pass for str.translate; the tokens must be identical."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    from ragtrail.evals._metrics import _fast_13a

    orig = Tokenizer13a()
    fast = _fast_13a(Tokenizer13a())
    assert fast is not orig
    rng = random.Random(3)
    pieces = [chr(c) for c in range(32, 127)] + ["\n", "-\n", "&amp;", "&quot;", "&lt;", "&gt;", "<skipped>",
                                                  "é", "—", "1.5", "3,000", "2-3", "\t"]  # fmt: skip
    for _ in range(5000):
        s = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        assert fast(s) == orig(s), s


# ------------------------------------------------------------------ ties broken as trec_eval does
def test_tied_scores_rank_by_descending_doc_id_hand_computed() -> None:
    # c, b, a tie at 1.0: trec_eval ranks them c, b, a (descending doc id), then d at 0.5
    ranked, scores, q = ["a", "b", "c", "d"], [1.0, 1.0, 1.0, 0.5], {"a": 1}
    assert metrics.trec_eval_order(ranked, scores) == ["c", "b", "a", "d"]
    assert metrics.reciprocal_rank(ranked, q) == 1.0  # without scores: the given order
    assert metrics.reciprocal_rank(ranked, q, scores=scores) == pytest.approx(1 / 3)
    assert metrics.precision_at_k(ranked, q, 1, scores=scores) == 0.0
    assert metrics.precision_at_k(ranked, q, 3, scores=scores) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(ranked, q, 2, scores=scores) == 0.0
    assert metrics.recall_at_k(ranked, q, 3, scores=scores) == 1.0
    assert metrics.hit_rate(ranked, q, 2, scores=scores) == 0.0
    assert metrics.average_precision(ranked, q, scores=scores) == pytest.approx(1 / 3)
    assert metrics.ndcg_at_k(ranked, q, 3, scores=scores) == pytest.approx(1 / math.log2(4))  # = 0.5


def test_tie_break_is_byte_order_not_numeric_and_mapping_scores() -> None:
    # "d9" > "d10" in byte order ('9' > '1'), so d9 ranks first among equal scores
    assert metrics.reciprocal_rank(["d10", "d9"], {"d10": 1}, scores=[2.0, 2.0]) == 0.5
    # graded, scores as a mapping: y and z tie at 0.7 -> z, y; then x, w
    run = {"x": 0.3, "y": 0.7, "z": 0.7, "w": 0.1}
    q = {"y": 2, "w": 1, "z": 0}
    assert metrics.trec_eval_order(list(run), run) == ["z", "y", "x", "w"]
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 + 1 / math.log2(3)
    assert metrics.ndcg_at_k(list(run), q, 4, scores=run) == pytest.approx(dcg / idcg)
    assert metrics.average_precision(list(run), q, scores=run) == pytest.approx((1 / 2 + 2 / 4) / 2)
    # 0.0 and -0.0 are equal scores: the id decides
    assert metrics.trec_eval_order(["a", "b"], [0.0, -0.0]) == ["b", "a"]


def test_duplicate_id_keeps_its_best_score() -> None:
    # "a" appears at 0.1 and 0.9: it ranks at 0.9, before b (0.5); without scores b is first
    ranked, scores, q = ["b", "a", "a"], [0.5, 0.1, 0.9], {"b": 1}
    assert metrics.reciprocal_rank(ranked, q) == 1.0
    assert metrics.reciprocal_rank(ranked, q, scores=scores) == 0.5
    assert metrics.precision_at_k(ranked, q, 2, scores=scores) == 0.5  # a counted once


def test_bad_scores_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="3 values but ranked_ids has 2"):
        metrics.ndcg_at_k(["a", "b"], {"a": 1}, 2, scores=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="no score for document id 'b'"):
        metrics.recall_at_k(["a", "b"], {"a": 1}, 2, scores={"a": 1.0})
    with pytest.raises(ValueError, match="NaN"):
        metrics.average_precision(["a"], {"a": 1}, scores=[float("nan")])
    with pytest.raises(TypeError, match="must be a number"):
        metrics.hit_rate(["a"], {"a": 1}, 1, scores=["high"])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="aligned with ranked_ids"):
        metrics.hit_rate(["a"], {"a": 1}, 1, scores="1")  # type: ignore[arg-type]


def _tied_case(rng: random.Random) -> tuple[dict[str, float], dict[str, int], int]:
    pool = [f"d{i}" for i in range(rng.randint(1, 30))] + ["D1", "a", "é1", "z\u00fc", "10", "9"]
    run = {d: rng.choice([0.1, 0.2, 0.2, 0.3, -1.0, 0.0]) for d in rng.sample(pool, rng.randint(0, len(pool)))}
    qrels = {d: rng.choice([0, 1, 1, 2, 3]) for d in rng.sample(pool, rng.randint(1, len(pool)))}
    return run, qrels, rng.choice([1, 1, 2])


def test_scores_agree_with_pytrec_eval_on_tied_runs() -> None:
    """pytrec_eval is the C trec_eval: given the same scored run (mostly ties), every metric with
    ``scores=`` equals it; the ids are handed over in a shuffled order, so the order cannot help."""
    rng = random.Random(20261205)
    for _ in range(1500):
        run, qrels, level = _tied_case(rng)
        ids = list(run)
        rng.shuffle(ids)
        scores = [run[d] for d in ids]
        ev = pytrec_eval.RelevanceEvaluator({"q": qrels}, MEASURES, relevance_level=level)
        ref = ev.evaluate({"q": run})["q"] if run else None
        n_rel = sum(1 for g in qrels.values() if g >= level)
        has_gain = any(g > 0 for g in qrels.values())
        ours: dict[str, float | None] = {}
        for k in (1, 3, 5, 10):
            ours[f"P_{k}"] = metrics.precision_at_k(ids, qrels, k, threshold=level, scores=scores)
            ours[f"recall_{k}"] = metrics.recall_at_k(ids, qrels, k, threshold=level, scores=run)
            ours[f"ndcg_cut_{k}"] = metrics.ndcg_at_k(ids, qrels, k, scores=scores)
            ours[f"success_{k}"] = metrics.hit_rate(ids, qrels, k, threshold=level, scores=run)
        ours["map"] = metrics.average_precision(ids, qrels, threshold=level, scores=scores)
        ours["map_cut_5"] = metrics.average_precision(ids, qrels, 5, threshold=level, scores=scores)
        ours["map_cut_10"] = metrics.average_precision(ids, qrels, 10, threshold=level, scores=run)
        ours["recip_rank"] = metrics.reciprocal_rank(ids, qrels, threshold=level, scores=scores)
        ours["ndcg"] = metrics.ndcg_at_k(ids, qrels, 10_000, scores=run)
        for m, v in ours.items():
            defined = has_gain if m.startswith("ndcg") else n_rel > 0
            if not defined:
                assert v is None, m
                continue
            expect = ref[m] if ref is not None else 0.0  # pytrec_eval leaves out a query with an empty run
            assert v is not None and math.isclose(v, expect, abs_tol=1e-9), (m, run, qrels, level, v, expect)
