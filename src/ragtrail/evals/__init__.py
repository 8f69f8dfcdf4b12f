"""Evaluation: versioned datasets, IR-correct metrics, scorers that read traces, versioned runs.

``from ragtrail.evals import Dataset, Evaluation, metrics, scorers``

Comparisons, gates, reports and sweeps need numpy and scipy (``pip install 'ragtrail[evals]'``); they are
imported when first used, so datasets, evaluations and runs work in a bare install.
"""

from typing import TYPE_CHECKING, Any

from ragtrail.evals import metrics, scorers
from ragtrail.evals._concurrency import AdaptiveLimiter
from ragtrail.evals._datasets import Dataset, DatasetDiff, list_datasets, load_dataset
from ragtrail.evals._harness import CostEstimate, Evaluation, score_items
from ragtrail.evals._judge import Judge
from ragtrail.evals._judge_cache import JudgeCache
from ragtrail.evals._judge_scorers import estimate as estimate_judge_cost
from ragtrail.evals._monitor import Alert, AlertEvent, Monitor, MonitorReport
from ragtrail.evals._offline import evaluate_traces, rescore
from ragtrail.evals._ray import RayBackend
from ragtrail.evals._runs import Run, alias_history, list_runs, load_run, runs_df, set_alias
from ragtrail.evals._types import Example, Score, Scorer

if TYPE_CHECKING:
    from ragtrail.evals._compare import Comparison, compare
    from ragtrail.evals._gates import GateReport, check_gates, load_gates, promote
    from ragtrail.evals._report import write_report
    from ragtrail.evals._sweep import current_trial, load_sweep, planned_configs, run_sweep, sweep_cache, sweep_runs_df

# names whose modules need numpy/scipy: imported on first access (a bare install gets the install hint)
_LAZY = {
    "Comparison": "_compare", "compare": "_compare",
    "GateReport": "_gates", "check_gates": "_gates", "load_gates": "_gates", "promote": "_gates",
    "write_report": "_report",
    "current_trial": "_sweep", "load_sweep": "_sweep", "run_sweep": "_sweep", "sweep_cache": "_sweep",
    "sweep_runs_df": "_sweep", "planned_configs": "_sweep",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f"ragtrail.evals.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ragtrail.evals' has no attribute {name!r}")


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
    "estimate_judge_cost",
    "evaluate_traces",
    "list_datasets",
    "list_runs",
    "load_dataset",
    "load_gates",
    "load_run",
    "load_sweep",
    "metrics",
    "planned_configs",
    "promote",
    "rescore",
    "run_sweep",
    "runs_df",
    "score_items",
    "scorers",
    "set_alias",
    "sweep_cache",
    "sweep_runs_df",
    "write_report",
]
