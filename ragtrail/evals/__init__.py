"""Evaluation: versioned datasets, IR-correct metrics, scorers that read traces, versioned runs.

``from ragtrail.evals import Dataset, Evaluation, metrics, scorers``
"""

from ragtrail.evals import metrics, scorers
from ragtrail.evals._compare import Comparison, compare
from ragtrail.evals._concurrency import AdaptiveLimiter
from ragtrail.evals._datasets import Dataset, DatasetDiff, list_datasets, load_dataset
from ragtrail.evals._gates import GateReport, check_gates, load_gates, promote
from ragtrail.evals._harness import CostEstimate, Evaluation, evaluate_traces, rescore, score_items
from ragtrail.evals._judge import Judge
from ragtrail.evals._judge_cache import JudgeCache
from ragtrail.evals._monitor import Alert, AlertEvent, Monitor, MonitorReport
from ragtrail.evals._ray import RayBackend
from ragtrail.evals._report import write_report
from ragtrail.evals._runs import Run, alias_history, list_runs, load_run, runs_df, set_alias
from ragtrail.evals._sweep import current_trial, load_sweep, run_sweep, sweep_cache
from ragtrail.evals._types import Example, Score, Scorer

__all__ = [
    "AdaptiveLimiter",
    "Alert",
    "AlertEvent",
    "Comparison",
    "CostEstimate",
    "Dataset",
    "DatasetDiff",
    "Evaluation",
    "Example",
    "GateReport",
    "Judge",
    "JudgeCache",
    "Monitor",
    "MonitorReport",
    "RayBackend",
    "Run",
    "Score",
    "Scorer",
    "alias_history",
    "check_gates",
    "compare",
    "current_trial",
    "evaluate_traces",
    "list_datasets",
    "list_runs",
    "load_dataset",
    "load_gates",
    "load_run",
    "load_sweep",
    "metrics",
    "promote",
    "rescore",
    "run_sweep",
    "runs_df",
    "score_items",
    "scorers",
    "set_alias",
    "sweep_cache",
    "write_report",
]
