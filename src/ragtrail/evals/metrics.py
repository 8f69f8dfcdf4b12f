"""Retrieval and answer metrics as pure functions with trec_eval's semantics (see :mod:`ragtrail.evals._metrics`)."""

from ragtrail.evals._metrics import (
    average_precision,
    bleu,
    exact_match,
    hit_rate,
    ndcg_at_k,
    normalize_answer,
    num_relevant,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
    rouge_l,
    token_f1,
    trec_eval_order,
)

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
