"""Retrieval and text metrics as pure functions, with trec_eval's semantics.

Conventions (the same as trec_eval / pytrec_eval):

* ``ranked_ids`` is best first. Duplicates are removed *before* the cutoff, keeping the first
  occurrence (a retriever returning the same chunk twice cannot earn it twice).
* ``qrels`` is ``{doc_id: grade}``. A document is relevant when ``grade >= threshold`` (trec_eval's
  ``relevance_level``, default 1). Documents absent from ``qrels`` are not relevant.
* ``precision_at_k`` divides by ``k`` even when fewer than ``k`` documents were retrieved.
* ``average_precision`` divides by the number of *all* relevant documents, retrieved or not.
* ``ndcg_at_k`` uses the grade itself as the gain (linear, trec_eval's ``ndcg_cut``) unless
  ``gain="exponential"`` (``2**grade - 1``); the discount is ``log2(rank + 1)``; the ideal ranking
  is built from every judged document with a positive grade.
* A query with no relevant document has no defined value: every retrieval metric returns ``None``
  for it (the scorers report it as ``undefined`` and it is excluded from means). trec_eval instead
  reports 0 for such a query (one that has judgements, none of them relevant) and averages that 0;
  the retrieval scorers' ``empty_qrels="zero"`` does the same, for reproducing published tables.
* Ties: every retrieval metric takes an optional ``scores=`` (a sequence aligned with
  ``ranked_ids``, or a mapping ``{doc_id: score}``). With scores, the documents are ranked as
  trec_eval ranks a run (``form_res_rels.c``): by score, highest first, and documents with equal
  scores by document id in *descending* byte order (``strcmp``; Python's string order on code
  points is the same order as UTF-8 bytes), so ``"d9"`` comes before ``"d10"`` and ``"b"`` before
  ``"a"``. The position in ``ranked_ids`` then plays no part. See :func:`trec_eval_order`.

Text metrics: ``exact_match`` and ``token_f1`` use SQuAD's answer normalisation (lower case, strip
punctuation and the articles a/an/the, collapse whitespace).
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

Qrels = Mapping[str, float]
Scores = Sequence[float] | Mapping[str, float]
Gain = Literal["linear", "exponential"]

__all__ = [
    "average_precision",
    "bleu",
    "exact_match",
    "hit_rate",
    "ndcg_at_k",
    "normalize_answer",
    "num_relevant",
    "precision_at_k",
    "recall_at_k",
    "reciprocal_rank",
    "rouge_l",
    "token_f1",
    "trec_eval_order",
]


def trec_eval_order(ranked_ids: Sequence[str], scores: Scores) -> list[str]:
    """``ranked_ids`` in the order trec_eval ranks them: by score, highest first; equal scores by
    document id in descending byte order (trec_eval's ``comp_sim_docno``: ``strcmp(b, a)``).

    ``scores`` is a sequence aligned with ``ranked_ids`` (``scores[i]`` is the score of
    ``ranked_ids[i]``) or a mapping ``{doc_id: score}`` holding every id of ``ranked_ids``. An id
    given twice keeps its highest score (trec_eval refuses a run with a duplicate document; the
    metrics here keep the first occurrence, which after this ordering is the best-scored one).

    >>> trec_eval_order(["a", "b", "c", "d10", "d9"], [0.5, 0.9, 0.5, 0.7, 0.7])
    ['b', 'd9', 'd10', 'c', 'a']
    """
    ids = list(ranked_ids)
    if isinstance(scores, Mapping):
        missing = [d for d in ids if d not in scores]
        if missing:
            raise ValueError(
                f"scores: no score for document id {missing[0]!r} ({len(missing)} of {len(ids)} ids have none); "
                "give a score for every id of ranked_ids, or pass scores as a list aligned with ranked_ids"
            )
        values = [scores[d] for d in ids]
    elif isinstance(scores, (str, bytes)) or not isinstance(scores, Sequence):
        raise TypeError(
            f"scores must be a sequence of numbers aligned with ranked_ids or a mapping {{doc_id: score}}, "
            f"not {type(scores).__name__}"
        )
    else:
        values = list(scores)
        if len(values) != len(ids):
            raise ValueError(
                f"scores has {len(values)} values but ranked_ids has {len(ids)}; they must be aligned "
                "(scores[i] is the score of ranked_ids[i])"
            )
    pairs: list[tuple[str, float]] = []
    for i, (d, v) in enumerate(zip(ids, values, strict=True)):
        if isinstance(v, bool) or not hasattr(v, "__float__"):
            raise TypeError(f"scores: the score of {d!r} (position {i}) must be a number, not {type(v).__name__}")
        f = float(v)
        if math.isnan(f):
            raise ValueError(f"scores: the score of {d!r} (position {i}) is NaN; NaN has no rank order")
        pairs.append((str(d), f))
    # Two stable sorts: by id descending, then by score descending (equal scores keep the id order).
    pairs.sort(key=lambda p: p[0], reverse=True)
    pairs.sort(key=lambda p: p[1], reverse=True)
    return [d for d, _ in pairs]


def _ordered(ranked_ids: Sequence[str], scores: Scores | None) -> Sequence[str]:
    return ranked_ids if scores is None else trec_eval_order(ranked_ids, scores)


def _dedup(ranked_ids: Iterable[str], k: int | None = None) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for d in ranked_ids:
        if d in seen:
            continue
        seen.add(d)
        out.append(d)
        if k is not None and len(out) >= k:
            break
    return out


def _check_k(k: int | None, name: str) -> None:
    if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
        raise ValueError(f"{name}: k must be a positive integer, got {k!r}")


def num_relevant(qrels: Qrels, threshold: float = 1) -> int:
    """How many documents of ``qrels`` are relevant at ``threshold``."""
    return sum(1 for g in qrels.values() if g >= threshold)


def _hits(ranked_ids: Sequence[str], qrels: Qrels, k: int | None, threshold: float) -> list[bool]:
    get = qrels.get
    return [(get(d) is not None and get(d) >= threshold) for d in _dedup(ranked_ids, k)]  # type: ignore[operator]


def precision_at_k(
    ranked_ids: Sequence[str], qrels: Qrels, k: int, *, threshold: float = 1, scores: Scores | None = None
) -> float | None:
    """Relevant documents among the first ``k`` (after de-duplication), divided by ``k``.

    ``scores``: rank by score as trec_eval does, ties by descending document id (:func:`trec_eval_order`).
    """
    _check_k(k, "precision_at_k")
    ranked_ids = _ordered(ranked_ids, scores)
    if num_relevant(qrels, threshold) == 0:
        return None
    return sum(_hits(ranked_ids, qrels, k, threshold)) / k


def recall_at_k(
    ranked_ids: Sequence[str], qrels: Qrels, k: int, *, threshold: float = 1, scores: Scores | None = None
) -> float | None:
    """Relevant documents among the first ``k``, divided by all relevant documents.

    ``scores``: rank by score as trec_eval does, ties by descending document id (:func:`trec_eval_order`).
    """
    _check_k(k, "recall_at_k")
    ranked_ids = _ordered(ranked_ids, scores)
    n_rel = num_relevant(qrels, threshold)
    if n_rel == 0:
        return None
    return sum(_hits(ranked_ids, qrels, k, threshold)) / n_rel


def hit_rate(
    ranked_ids: Sequence[str], qrels: Qrels, k: int, *, threshold: float = 1, scores: Scores | None = None
) -> float | None:
    """1.0 when at least one relevant document is among the first ``k``, else 0.0 (trec_eval ``success_k``).

    ``scores``: rank by score as trec_eval does, ties by descending document id (:func:`trec_eval_order`).
    """
    _check_k(k, "hit_rate")
    ranked_ids = _ordered(ranked_ids, scores)
    if num_relevant(qrels, threshold) == 0:
        return None
    return 1.0 if any(_hits(ranked_ids, qrels, k, threshold)) else 0.0


def reciprocal_rank(
    ranked_ids: Sequence[str],
    qrels: Qrels,
    k: int | None = None,
    *,
    threshold: float = 1,
    scores: Scores | None = None,
) -> float | None:
    """1 / rank of the first relevant document (within the first ``k`` when given), 0.0 when none.

    ``scores``: rank by score as trec_eval does, ties by descending document id (:func:`trec_eval_order`).
    """
    _check_k(k, "reciprocal_rank")
    ranked_ids = _ordered(ranked_ids, scores)
    if num_relevant(qrels, threshold) == 0:
        return None
    for i, hit in enumerate(_hits(ranked_ids, qrels, k, threshold)):
        if hit:
            return 1.0 / (i + 1)
    return 0.0


def average_precision(
    ranked_ids: Sequence[str],
    qrels: Qrels,
    k: int | None = None,
    *,
    threshold: float = 1,
    scores: Scores | None = None,
) -> float | None:
    """Mean of precision at each relevant rank (within ``k``), over *all* relevant documents.

    ``scores``: rank by score as trec_eval does, ties by descending document id (:func:`trec_eval_order`).
    """
    _check_k(k, "average_precision")
    ranked_ids = _ordered(ranked_ids, scores)
    n_rel = num_relevant(qrels, threshold)
    if n_rel == 0:
        return None
    found = 0
    total = 0.0
    for i, hit in enumerate(_hits(ranked_ids, qrels, k, threshold)):
        if hit:
            found += 1
            total += found / (i + 1)
    return total / n_rel


def _gain(grade: float, gain: Gain) -> float:
    if gain == "linear":
        return float(grade)
    if gain == "exponential":
        return 2.0**grade - 1.0
    raise ValueError(f"ndcg_at_k: gain must be 'linear' or 'exponential', not {gain!r}")


def ndcg_at_k(
    ranked_ids: Sequence[str],
    qrels: Qrels,
    k: int,
    *,
    gain: Gain = "linear",
    scores: Scores | None = None,
) -> float | None:
    """Normalised discounted cumulative gain over the first ``k`` documents.

    Gains are the grades (``gain="exponential"``: ``2**grade - 1``); documents with a grade <= 0 add
    nothing. As in trec_eval, the gains come from the grades, not from a relevance threshold.
    ``None`` when no judged document has a positive grade. ``scores``: rank by score as trec_eval
    does, ties by descending document id (:func:`trec_eval_order`).
    """
    _check_k(k, "ndcg_at_k")
    ranked_ids = _ordered(ranked_ids, scores)
    dcg = 0.0
    for i, d in enumerate(_dedup(ranked_ids, k)):
        g = qrels.get(d)
        if g is not None and g > 0:
            dcg += _gain(g, gain) / math.log2(i + 2)
    ideal = sorted((g for g in qrels.values() if g > 0), reverse=True)[:k]
    idcg = sum(_gain(g, gain) / math.log2(i + 2) for i, g in enumerate(ideal))
    if idcg <= 0:
        return None
    return dcg / idcg


# ------------------------------------------------------------------------------------------ text
_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT_TABLE = str.maketrans("", "", string.punctuation)


@functools.lru_cache(maxsize=65_536)
def _normalize(text: str) -> str:
    text = text.lower().translate(_PUNCT_TABLE)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces (memoised:
    exact match and F1 normalise the same answer)."""
    return _normalize(str(text))


def exact_match(prediction: str, reference: str | Sequence[str]) -> float:
    """1.0 when the normalised prediction equals the (any, for a list) normalised reference."""
    refs = [reference] if isinstance(reference, str) else list(reference)
    if not refs:
        raise ValueError("exact_match: the reference list is empty")
    p = normalize_answer(prediction)
    return 1.0 if any(p == normalize_answer(r) for r in refs) else 0.0


def _f1(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    if not pred_tokens or not ref_tokens:
        return 1.0 if pred_tokens == ref_tokens else 0.0
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, reference: str | Sequence[str]) -> float:
    """SQuAD token-level F1 (the best over references, for a list)."""
    refs = [reference] if isinstance(reference, str) else list(reference)
    if not refs:
        raise ValueError("token_f1: the reference list is empty")
    p = normalize_answer(prediction).split()
    return max(_f1(p, normalize_answer(r).split()) for r in refs)


_rouge_tokenizer: Any = None
_bleu: Any = None


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel, Allison-Dix/Hyyrö:
    one big-integer step per token of ``b`` instead of a len(a) x len(b) table)."""
    if not a or not b:
        return 0
    masks: dict[str, int] = {}
    for i, tok in enumerate(a):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(a)) - 1
    v = full
    for tok in b:
        m = masks.get(tok)
        if m is None:
            continue
        u = v & m
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def _make_rouge_tokenizer() -> Any:
    """rouge-score's tokenizer with its Porter stemmer (``use_stemmer=True``); stems are memoised,
    which leaves every token unchanged."""
    try:
        from nltk.stem.porter import PorterStemmer  # what rouge-score itself stems with
        from rouge_score import rouge_scorer, tokenize, tokenizers
    except ImportError as exc:
        from ragtrail._exceptions import MissingDependencyError

        raise MissingDependencyError("rouge_l needs rouge-score: pip install 'ragtrail[evals]'") from exc

    class _Stemmer:
        def __init__(self) -> None:
            self.stem = functools.lru_cache(maxsize=200_000)(PorterStemmer().stem)

    class _Tokenizer(tokenizers.Tokenizer):  # type: ignore[misc]
        def __init__(self) -> None:
            self._stemmer = _Stemmer()

        def tokenize(self, text: str) -> list[str]:
            return tokenize.tokenize(text, self._stemmer)  # type: ignore[no-any-return]

    rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())  # fails early if the API moved
    return _Tokenizer()


def _rouge_l_one(pred_tokens: list[str], ref_tokens: list[str]) -> float:
    # rouge-score's _score_lcs: P = lcs/len(pred), R = lcs/len(ref), F = 2PR/(P+R); 0 when either is empty
    if not pred_tokens or not ref_tokens:
        return 0.0
    lcs = lcs_length(ref_tokens, pred_tokens)
    if lcs == 0:
        return 0.0
    precision = lcs / len(pred_tokens)
    recall = lcs / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str | Sequence[str]) -> float:
    """ROUGE-L F-measure as ``rouge-score`` computes it (its tokenizer and Porter stemmer; the LCS
    by a bit-parallel algorithm, equal to rouge-score's table); the best over references."""
    global _rouge_tokenizer
    if _rouge_tokenizer is None:
        _rouge_tokenizer = _make_rouge_tokenizer()
    tok = _rouge_tokenizer.tokenize
    refs = [reference] if isinstance(reference, str) else list(reference)
    p = tok(prediction)
    return max(_rouge_l_one(p, tok(r)) for r in refs)


def _fast_13a(tok: Any) -> Any:
    """sacrebleu's 13a tokenizer with its first regex (spaces around single punctuation characters,
    one template expansion per match) done as one ``str.translate``; the character set and the other
    regexes are read from sacrebleu's own tokenizer, so the tokens are the same. Falls back to
    sacrebleu's tokenizer when its internals are not as expected."""
    try:
        post = tok._post_tokenizer
        (first, repl), rest = post._re[0], list(post._re[1:])
        if repl != r" \1 " or first.groups != 1:
            return tok
        chars = [chr(c) for c in range(128) if first.fullmatch(chr(c))]
        if any(first.search(chr(c)) for c in range(128, 0x3000)):  # the class must be ASCII-only
            return tok
    except Exception:
        return tok
    table = str.maketrans({c: f" {c} " for c in chars})

    @functools.lru_cache(maxsize=2**16)
    def tokenize(line: str) -> str:
        line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
        if "&" in line:
            line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
        line = f" {line} ".translate(table)
        for rx, rp in rest:
            line = rx.sub(rp, line)
        return " ".join(line.split())

    return tokenize


def bleu(prediction: str, reference: str | Sequence[str]) -> float:
    """Sentence BLEU through ``sacrebleu`` (its ``sentence_bleu`` settings: exponential smoothing,
    effective order) on a 0..1 scale (sacrebleu reports 0..100)."""
    global _bleu
    if _bleu is None:
        try:
            from sacrebleu.metrics import BLEU
        except ImportError as exc:
            from ragtrail._exceptions import MissingDependencyError

            raise MissingDependencyError("bleu needs sacrebleu: pip install 'ragtrail[evals]'") from exc
        b = BLEU(effective_order=True)
        if type(b.tokenizer).__name__ == "Tokenizer13a":
            b.tokenizer = _fast_13a(b.tokenizer)
        _bleu = b
    refs = [reference] if isinstance(reference, str) else list(reference)
    return float(_bleu.sentence_score(prediction, refs).score) / 100.0
