"""Scorers: built-ins, user scorers from functions, and the registry (see :mod:`ragtrail.evals._scorers`)."""

from ragtrail.evals._scorers import (
    FunctionScorer,
    RetrievalScorer,
    SemanticSimilarity,
    TextScorer,
    answer_of,
    as_scorer,
    available,
    average_precision,
    bleu,
    cost,
    exact_match,
    get,
    hit_rate,
    latency,
    map,  # noqa: A004
    mrr,
    ndcg_at_k,
    precision_at_k,
    ranked_ids,
    recall_at_k,
    reciprocal_rank,
    register,
    rouge_l,
    scorer,
    semantic_similarity,
    token_f1,
    tokens,
)
from ragtrail.evals._types import Score, Scorer

__all__ = [
    "FunctionScorer",
    "RetrievalScorer",
    "Score",
    "Scorer",
    "SemanticSimilarity",
    "TextScorer",
    "answer_of",
    "as_scorer",
    "available",
    "average_precision",
    "bleu",
    "cost",
    "exact_match",
    "get",
    "hit_rate",
    "latency",
    "map",
    "mrr",
    "ndcg_at_k",
    "precision_at_k",
    "ranked_ids",
    "recall_at_k",
    "reciprocal_rank",
    "register",
    "rouge_l",
    "scorer",
    "semantic_similarity",
    "token_f1",
    "tokens",
]

# LLM-judge scorers live in ragtrail.evals._judge_scorers (no langchain import until a judge is called).
from ragtrail.evals._judge_scorers import (
    AnswerRelevance,
    ContextRelevance,
    Correctness,
    Faithfulness,
    JudgeScorer,
    Rubric,
    answer_relevance,
    context_relevance,
    correctness,
    faithfulness,
    rubric,
)

__all__ += [
    "AnswerRelevance",
    "ContextRelevance",
    "Correctness",
    "Faithfulness",
    "JudgeScorer",
    "Rubric",
    "answer_relevance",
    "context_relevance",
    "correctness",
    "faithfulness",
    "rubric",
]

# The judge scorers are built-ins too: YAML configs and scorers.get() can name them.
from ragtrail.evals import _scorers as _registry_module  # noqa: E402

_registry_module.BUILTINS.update(
    {
        "faithfulness": faithfulness,
        "answer_relevance": answer_relevance,
        "context_relevance": context_relevance,
        "correctness": correctness,
        "rubric": rubric,
    }
)
