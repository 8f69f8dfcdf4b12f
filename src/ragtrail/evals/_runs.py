"""Versioned eval runs: creation, per-example results, summaries, references and aliases.

A run is ``name:vN`` (N counts up per evaluation name), has an id (``run_…``), lineage (dataset
name+version, config and its hash, git commit and dirty flag, package versions, scorers, judge
models) and a summary. ``name:latest`` is always the newest run; other aliases (``production``…)
live in the ``aliases`` table and move atomically with a history row.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragtrail._deps import require
from ragtrail._exceptions import ConfigError, DatasetError, EvalError, StoreError
from ragtrail._store_of import store_of
from ragtrail.evals._types import Score
from ragtrail.store import _aliases
from ragtrail.store import _evals as repo
from ragtrail.tracing._content import mask_value

if TYPE_CHECKING:
    import pandas as pd

    from ragtrail.evals._datasets import Dataset
    from ragtrail.store import Store
    from ragtrail.tracing._model import Trace

__all__ = [
    "Run",
    "alias_history",
    "config_hash",
    "list_runs",
    "load_run",
    "resolve_run_id",
    "runs_df",
    "set_alias",
]

RESERVED_ALIASES = _aliases.RESERVED_ALIASES
_json = repo.dumps


def config_hash(config: Mapping[str, Any] | None) -> str:
    """Hash of a config's canonical JSON (key order does not matter)."""
    return hashlib.sha256(_json(config or {}).encode()).hexdigest()[:16]


_store = store_of


# ------------------------------------------------------------------------------------- lineage
def git_info(path: str | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout at ``path`` (cwd); Nones outside a checkout."""
    cwd = path or os.getcwd()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10)  # fmt: skip
        return {
            "commit": commit.stdout.strip(),
            "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None,
        }
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


_PACKAGES = ("ragtrail", "opentelemetry-sdk", "langchain-core", "langchain", "llama-index-core", "chromadb",
             "sentence-transformers", "transformers", "torch", "vllm", "openai", "pydantic")  # fmt: skip


def package_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for p in (*_PACKAGES, *extra):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            continue
    return out


# ------------------------------------------------------------------------------------- summaries
def compute_summary(store: Store, run_id: str) -> dict[str, Any]:
    """Per-metric mean over ok scores with counts of ok/undefined/error; latency p50/p95, tokens, cost."""
    return repo.run_summary(store, run_id)


# ------------------------------------------------------------------------------------- Run
@dataclass
class Run:
    """A versioned eval run as stored. ``run.summary``, ``run.results_df()``, ``run.examples_df()``."""

    run_id: str
    name: str
    version: int
    created_at: float
    status: str
    dataset_name: str | None = None
    dataset_version: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    config_hash: str | None = None
    lineage: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    finished_at: float | None = None
    source_run_id: str | None = None
    sweep_id: str | None = None
    store: Any = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    @property
    def id(self) -> str:
        return self.run_id

    def __str__(self) -> str:
        return self.ref

    def __repr__(self) -> str:
        m = " ".join(f"{k}={v:.4g}" if v is not None else f"{k}=undefined" for k, v in self.metrics.items())
        n = self.summary.get("n_examples")
        size = f" {n} examples" if n is not None else ""
        return f"<Run {self.ref} {self.status}{size}" + (f" {m}" if m else "") + ">"

    @classmethod
    def from_record(cls, record: Mapping[str, Any], store: Any = None) -> Run:
        """A Run from a record of :func:`ragtrail.store._evals.get_run` / ``list_runs``."""
        return cls(**{k: record[k] for k in repo.RUN_FIELDS}, store=store)

    def _st(self) -> Store:
        if self.store is None:
            self.store = _store(None)
        return self.store  # type: ignore[no-any-return]

    def refresh(self) -> Run:
        """This run re-read from the store."""
        return load_run(self._st(), self.run_id)

    @property
    def metrics(self) -> dict[str, float | None]:
        """``{scorer: mean}`` from the summary (None when a scorer had no ok score)."""
        return {k: v.get("mean") for k, v in (self.summary.get("metrics") or {}).items()}

    @property
    def scorers(self) -> list[str]:
        return [s.get("name") for s in self.lineage.get("scorers", [])]  # type: ignore[misc]

    def results(self, with_text: bool = False) -> list[dict[str, Any]]:
        """One dict per example x scorer (the rows of :meth:`results_df`); ``with_text=True`` adds the
        example's ``input`` and ``reference`` (from the run's dataset snapshot) and the pipeline's ``output``."""
        rows = [{**r, "run_id": self.run_id} for r in repo.result_rows(self._st(), self.run_id)]
        if with_text:
            texts = self._texts()
            for r in rows:
                r.update(texts.get(r["example_id"], {"input": None, "reference": None, "output": None}))
        return rows

    def _texts(self) -> dict[str, dict[str, Any]]:
        """``{example_id: {input, reference, output}}``; input/reference None when the dataset is gone."""
        out = {e["example_id"]: {"input": None, "reference": None, "output": e["output"]} for e in self.examples()}
        try:
            examples = self.dataset().examples
        except (EvalError, StoreError, ConfigError, DatasetError):
            return out
        for ex in examples:
            out.setdefault(ex.id, {"output": None}).update(input=ex.input, reference=ex.reference)
        return out

    def results_df(self, with_text: bool = False) -> pd.DataFrame:
        """One row per example x scorer: example_id, scorer, score, status, reason, trace_id, details,
        latency_ms, cost_usd, example_status, example_error, run_id. ``score`` is NaN unless status is ok.
        ``with_text=True`` adds ``input``, ``reference`` and ``output`` (see :meth:`results`)."""
        require("pandas", extra="analysis", feature="Run.results_df()")
        import pandas as pd

        cols = ["example_id", "scorer", "score", "status", "reason", "trace_id", "details", "latency_ms",
                "cost_usd", "example_status", "example_error", "run_id"]  # fmt: skip
        if with_text:
            cols += ["input", "reference", "output"]
        rows = self.results(with_text=with_text)
        df = pd.DataFrame(rows, columns=cols)
        df["score"] = pd.to_numeric(df["score"], errors="coerce").astype("float64")
        return df

    def scores(self, scorer: str) -> dict[str, Score]:
        """``{example_id: Score}`` for one scorer."""
        return {
            r["example_id"]: Score(r["score"], r["status"], r["reason"], r["details"])
            for r in self.results() if r["scorer"] == scorer
        }  # fmt: skip

    def examples(self) -> list[dict[str, Any]]:
        """One dict per example: example_id, status, output, error, trace_id, latency_ms, tokens, cost."""
        out = repo.example_rows(self._st(), self.run_id)
        for d in out:
            d["output"] = json.loads(d["output"]) if d["output"] else None
        return out

    def examples_df(self) -> pd.DataFrame:
        """One row per example (the pipeline's side): example_id, status, output, error, trace_id,
        latency_ms, input_tokens, output_tokens, cost_usd. Scores are in :meth:`results_df`."""
        require("pandas", extra="analysis", feature="Run.examples_df()")
        import pandas as pd

        return pd.DataFrame(self.examples(), columns=["example_id", "status", "output", "error", "trace_id",
                                                      "latency_ms", "input_tokens", "output_tokens", "cost_usd"])  # fmt: skip

    def dataset(self) -> Dataset:
        """The exact dataset snapshot this run used."""
        from ragtrail.evals._datasets import load_dataset

        if not self.dataset_name or not self.dataset_version:
            raise EvalError(f"run {self.ref} recorded no dataset")
        return load_dataset(self._st(), f"{self.dataset_name}:{self.dataset_version}")

    def trace(self, example_id: str) -> Trace:
        """The stored trace of one example (needs the spans flushed to the store)."""
        from ragtrail.tracing._model import SpanRecord, Trace

        trace_id = repo.example_trace_id(self._st(), self.run_id, example_id)
        if trace_id is None:
            raise EvalError(f"run {self.ref} has no trace for example {example_id!r}")
        rows = repo.trace_span_rows(self._st(), [trace_id])
        if not rows:
            raise StoreError(
                f"no trace {trace_id!r} in the store {self._st().url}; its spans may not be flushed yet "
                "(ragtrail.flush())"
            )
        return Trace([SpanRecord.from_row(r) for r in rows])

    def aliases(self) -> list[str]:
        return _aliases.aliases_of_target(self._st(), self.run_id)

    def log_artifact(self, artifact: Any, *, aliases: Iterable[str] = (), blobs: Any = None) -> Any:
        """Log a ``ragtrail.Artifact`` as produced by this run (see ``ragtrail.artifacts.log_artifact``)."""
        from ragtrail.artifacts import log_artifact

        return log_artifact(artifact, aliases=aliases, run=self, store=self._st(), blobs=blobs)

    def use_artifact(self, ref: str) -> Any:
        """The artifact version ``ref`` (``name:alias``, ``name:vN``) names now, recorded as used by this run."""
        from ragtrail.artifacts import use_artifact

        return use_artifact(ref, run=self, store=self._st())

    def artifacts(self) -> dict[str, list[str]]:
        """``{"inputs": [...], "outputs": [...]}``: the artifact versions this run used and produced."""
        from ragtrail.artifacts import artifacts_of_run

        return artifacts_of_run(self, store=self._st())

    def _repr_html_(self) -> str:
        from ragtrail.analysis import run_html

        n = self.summary.get("n_examples")
        return run_html(f"{self.ref} ({self.status}{f', {n} examples' if n is not None else ''})", self.summary)


# ------------------------------------------------------------------------------------- creation
new_run_id = repo.new_run_id


def create_run(
    store: Store,
    name: str,
    *,
    dataset_name: str | None,
    dataset_version: str | None,
    config: Mapping[str, Any] | None,
    lineage: Mapping[str, Any],
    source_run_id: str | None = None,
    sweep_id: str | None = None,
    status: str = "running",
) -> Run:
    """Insert a new run with the next version of ``name`` (safe against concurrent creators)."""
    cfg = dict(config or {})
    run_id = repo.insert_run(
        store,
        name,
        dataset_name=dataset_name,
        dataset_version=dataset_version,
        config=mask_value(cfg),
        config_hash=config_hash(cfg),
        lineage=mask_value(dict(lineage)),
        source_run_id=source_run_id,
        sweep_id=sweep_id,
        status=status,
    )
    return load_run(store, run_id)


def finish_run(store: Store, run_id: str, status: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    summary = compute_summary(store, run_id)
    if extra:
        summary.update(extra)
    repo.finish_run(store, run_id, status, summary)
    return summary


# ------------------------------------------------------------------------------------- references
def resolve_run_id(store: Store, ref: Any) -> str:
    """The run id of ``ref``: a Run, ``name:vN``, ``name:latest``, ``name:<alias>``, a run id, or a bare
    evaluation name (its latest run). See :func:`ragtrail.store._evals.resolve_run_id`."""
    return repo.resolve_run_id(store, ref)


def load_run(store: Any, ref: Any) -> Run:
    """A stored run by reference (``name:vN``, ``name:latest``, ``name:<alias>``, run id)."""
    st = _store(store)
    run_id = repo.resolve_run_id(st, ref)
    record = repo.get_run(st, run_id)
    if record is None:
        raise EvalError(f"run {run_id!r} is not in the store {st.url}; `ragtrail runs list` shows the runs")
    run = Run.from_record(record, st)
    if not run.summary or run.status == "running":
        run.summary = compute_summary(st, run_id)
    return run


def list_runs(store: Any, name: str | None = None, *, limit: int | None = None) -> list[Run]:
    st = _store(store)
    return [Run.from_record(r, st) for r in repo.list_runs(st, name, limit=limit)]


def runs_df(store: Any, name: str | None = None) -> pd.DataFrame:
    """One row per run, newest first: run_id, name, version, ref, status, created_at, finished_at,
    dataset, dataset_version, config_hash, n_examples, n_errors, latency_p50_ms, latency_p95_ms,
    cost_usd, aliases, then one column per metric (its mean)."""
    require("pandas", extra="analysis", feature="runs_df()")
    import pandas as pd

    st = _store(store)
    runs = list_runs(st, name)
    aliases = _aliases.alias_map(st)
    base = ["run_id", "name", "version", "ref", "status", "created_at", "finished_at", "dataset", "dataset_version",
            "config_hash", "n_examples", "n_errors", "latency_p50_ms", "latency_p95_ms", "cost_usd", "aliases"]  # fmt: skip
    rows = []
    metric_names: list[str] = []
    for r in runs:
        s = r.summary or (compute_summary(st, r.run_id) if r.status == "running" else {})
        lat = s.get("latency_ms") or {}
        row: dict[str, Any] = {
            "run_id": r.run_id, "name": r.name, "version": r.version, "ref": r.ref, "status": r.status,
            "created_at": pd.Timestamp(r.created_at, unit="s", tz="UTC"),
            "finished_at": pd.Timestamp(r.finished_at, unit="s", tz="UTC") if r.finished_at else pd.NaT,
            "dataset": r.dataset_name, "dataset_version": r.dataset_version, "config_hash": r.config_hash,
            "n_examples": s.get("n_examples"), "n_errors": s.get("n_error"), "latency_p50_ms": lat.get("p50"),
            "latency_p95_ms": lat.get("p95"), "cost_usd": s.get("cost_usd"), "aliases": sorted(aliases.get(r.run_id, [])),
        }  # fmt: skip
        for m, v in (s.get("metrics") or {}).items():
            if m not in metric_names:
                metric_names.append(m)
            row[m] = v.get("mean")
        rows.append(row)
    df = pd.DataFrame(rows, columns=base + [m for m in metric_names if m not in base])
    for c in ("latency_p50_ms", "latency_p95_ms", "cost_usd", *metric_names):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    return df


# ------------------------------------------------------------------------------------- aliases
def set_alias(store: Any, run: Any, alias: str, *, by: str | None = None) -> Run:
    """Point ``alias`` of the run's evaluation at ``run`` in one transaction, with a history row
    (who, when, the previous run). ``latest`` is reserved (always the newest run).

    The move is atomic also between processes on PostgreSQL (an advisory lock per evaluation and
    alias): it is :func:`ragtrail.store._aliases.move_alias` without a compare-and-swap condition.
    """
    st = _store(store)
    _aliases.validate_alias(alias)
    target = load_run(st, run)
    _aliases.move_alias(st, target.name, alias, target.run_id, by=by, label=target.ref)
    return target


def alias_history(store: Any, name: str, alias: str | None = None) -> list[dict[str, Any]]:
    """Alias moves of evaluation ``name`` (one alias or all), oldest first."""
    return _aliases.alias_history(_store(store), name, alias)
