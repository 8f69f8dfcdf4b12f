"""Evaluation: versioned datasets, IR-correct metrics, scorers that read traces, versioned runs."""

from ragtrail.evals._types import Example, Score, Scorer

__all__ = ["Example", "Score", "Scorer"]
