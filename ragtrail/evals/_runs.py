"""Versioned eval runs: creation, per-example results, summaries, references and aliases.

A run is ``name:vN`` (N counts up per evaluation name), has an id (``run_…``), lineage (dataset
name+version, config and its hash, git commit and dirty flag, package versions, scorers, judge
models) and a summary. ``name:latest`` is always the newest run; other aliases (``production``…)
live in the ``aliases`` table and move atomically with a history row.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragtrail._deps import require
from ragtrail._exceptions import ConfigError, DatasetError, EvalError, StoreError
from ragtrail.evals._types import Score

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

_RUN_COLS = ("run_id, name, version, created_at, finished_at, status, dataset_name, dataset_version, "
             "config, config_hash, lineage, summary, source_run_id, sweep_id")  # fmt: skip
_REF = re.compile(r"^(?P<name>[^:]+):(?P<tag>[^:]+)$")
_VERSION = re.compile(r"^v(\d+)$")
RESERVED_ALIASES = ("latest",)


def _json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def config_hash(config: Mapping[str, Any] | None) -> str:
    """Hash of a config's canonical JSON (key order does not matter)."""
    return hashlib.sha256(_json(config or {}).encode()).hexdigest()[:16]


def _store(store: Any) -> Store:
    from ragtrail.evals._datasets import _store as ds_store

    return ds_store(store)


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
def _quantile(sorted_vals: Sequence[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    pos = (len(sorted_vals) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo))


def compute_summary(store: Store, run_id: str) -> dict[str, Any]:
    """Per-metric mean over ok scores with counts of ok/undefined/error; latency p50/p95, tokens, cost."""
    metrics: dict[str, dict[str, Any]] = {}
    for scorer, status, n, total, sq, lo, hi in store.query(
        "SELECT scorer, status, COUNT(*), SUM(score), SUM(score * score), MIN(score), MAX(score) "
        "FROM run_results WHERE run_id = ? GROUP BY scorer, status",
        (run_id,),
    ):
        m = metrics.setdefault(
            scorer, {"mean": None, "std": None, "min": None, "max": None, "n_ok": 0, "n_undefined": 0, "n_error": 0}
        )
        m[f"n_{status}"] = int(n)
        if status == "ok" and n:
            mean = float(total) / n
            m["mean"] = mean
            var = max(0.0, float(sq) / n - mean * mean)
            m["std"] = math.sqrt(var * n / (n - 1)) if n > 1 else 0.0
            m["min"], m["max"] = float(lo), float(hi)
    rows = store.query(
        "SELECT status, latency_ms, input_tokens, output_tokens, cost_usd FROM run_examples WHERE run_id = ?", (run_id,)
    )
    lat = sorted(float(r[1]) for r in rows if r[1] is not None)
    costs = [float(r[4]) for r in rows if r[4] is not None]
    judge_cost = store.query(
        "SELECT details FROM run_results WHERE run_id = ? AND details LIKE '%cost_usd%'", (run_id,)
    )
    jc = 0.0
    for (d,) in judge_cost:
        try:
            v = json.loads(d).get("cost_usd")
            if isinstance(v, (int, float)) and math.isfinite(v):
                jc += float(v)
        except (ValueError, AttributeError):
            continue
    return {
        "n_examples": len(rows),
        "n_ok": sum(1 for r in rows if r[0] == "ok"),
        "n_error": sum(1 for r in rows if r[0] == "error"),
        "metrics": metrics,
        "latency_ms": {
            "p50": _quantile(lat, 0.5),
            "p95": _quantile(lat, 0.95),
            "mean": (sum(lat) / len(lat)) if lat else None,
        },
        "tokens": {"input": sum(int(r[2] or 0) for r in rows), "output": sum(int(r[3] or 0) for r in rows)},
        "cost_usd": (sum(costs) if costs else None),
        "judge_cost_usd": jc if judge_cost else None,
    }


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
    def from_row(cls, row: Sequence[Any], store: Any = None) -> Run:
        return cls(
            run_id=row[0], name=row[1], version=int(row[2]), created_at=float(row[3]),
            finished_at=None if row[4] is None else float(row[4]), status=row[5], dataset_name=row[6],
            dataset_version=row[7], config=json.loads(row[8]) if row[8] else {}, config_hash=row[9],
            lineage=json.loads(row[10]) if row[10] else {}, summary=json.loads(row[11]) if row[11] else {},
            source_run_id=row[12], sweep_id=row[13], store=store,
        )  # fmt: skip

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
        rows = self._results()
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

    def _results(self) -> list[dict[str, Any]]:
        rows = self._st().query(
            "SELECT r.example_id, r.scorer, r.score, r.status, r.reason, r.trace_id, r.details, "
            "e.latency_ms, e.cost_usd, e.status, e.error FROM run_results r LEFT JOIN run_examples e "
            "ON e.run_id = r.run_id AND e.example_id = r.example_id WHERE r.run_id = ? "
            "ORDER BY r.example_id, r.scorer",
            (self.run_id,),
        )
        out = []
        for r in rows:
            out.append({
                "run_id": self.run_id, "example_id": r[0], "scorer": r[1],
                "score": None if r[2] is None else float(r[2]), "status": r[3], "reason": r[4],
                "trace_id": r[5], "details": json.loads(r[6]) if r[6] else {}, "latency_ms": r[7],
                "cost_usd": r[8], "example_status": r[9], "example_error": r[10],
            })  # fmt: skip
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
        rows = self._st().query(
            "SELECT example_id, status, output, error, trace_id, latency_ms, input_tokens, output_tokens, cost_usd "
            "FROM run_examples WHERE run_id = ? ORDER BY created_at, example_id",
            (self.run_id,),
        )
        keys = (
            "example_id",
            "status",
            "output",
            "error",
            "trace_id",
            "latency_ms",
            "input_tokens",
            "output_tokens",
            "cost_usd",
        )
        out = []
        for r in rows:
            d = dict(zip(keys, r, strict=False))
            d["output"] = json.loads(d["output"]) if d["output"] else None
            out.append(d)
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
        from ragtrail._client import Client

        rows = self._st().query(
            "SELECT trace_id FROM run_examples WHERE run_id = ? AND example_id = ?", (self.run_id, example_id)
        )
        if not rows or not rows[0][0]:
            raise EvalError(f"run {self.ref} has no trace for example {example_id!r}")
        return Client(self._st()).trace(rows[0][0])

    def aliases(self) -> list[str]:
        rows = self._st().query("SELECT alias FROM aliases WHERE run_id = ? ORDER BY alias", (self.run_id,))
        return [r[0] for r in rows]

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
def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex[:16]


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
    if not name or ":" in name:
        raise ConfigError(f"evaluation name {name!r} must be non-empty and contain no ':'")
    cfg = dict(config or {})
    chash = config_hash(cfg)
    run_id = new_run_id()
    now = time.time()
    for attempt in range(20):
        try:
            with store.transaction() as cur:
                cur.execute("SELECT MAX(version) FROM runs WHERE name = ?", (name,))
                row = cur.fetchone()
                version = int(row[0] or 0) + 1 if row else 1
                cur.execute(
                    f"INSERT INTO runs ({_RUN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
                    (
                        run_id,
                        name,
                        version,
                        now,
                        None,
                        status,
                        dataset_name,
                        dataset_version,
                        _json(cfg),
                        chash,
                        _json(lineage),
                        None,
                        source_run_id,
                        sweep_id,
                    ),
                )
            break
        except StoreError:
            if attempt == 19:
                raise
            time.sleep(0.01 * (attempt + 1))
    return load_run(store, run_id)


def finish_run(store: Store, run_id: str, status: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    summary = compute_summary(store, run_id)
    if extra:
        summary.update(extra)
    with store.transaction() as cur:
        cur.execute("UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ?",
                    (status, time.time(), _json(summary), run_id))  # fmt: skip
    return summary


# ------------------------------------------------------------------------------------- references
def resolve_run_id(store: Store, ref: Any) -> str:
    """The run id of ``ref``: a Run, ``name:vN``, ``name:latest``, ``name:<alias>``, a run id, or a bare
    evaluation name (its latest run)."""
    if isinstance(ref, Run):
        return ref.run_id
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"a run reference must be 'name:vN', 'name:alias' or a run id, not {ref!r}")
    ref = ref.strip()
    rows = store.query("SELECT run_id FROM runs WHERE run_id = ?", (ref,))
    if rows:
        return str(rows[0][0])
    m = _REF.match(ref)
    if m:
        name, tag = m.group("name"), m.group("tag")
        vm = _VERSION.match(tag)
        if vm:
            rows = store.query("SELECT run_id FROM runs WHERE name = ? AND version = ?", (name, int(vm.group(1))))
        elif tag == "latest":
            rows = store.query("SELECT run_id FROM runs WHERE name = ? ORDER BY version DESC LIMIT 1", (name,))
        else:
            rows = store.query("SELECT run_id FROM aliases WHERE name = ? AND alias = ?", (name, tag))
        if rows:
            return str(rows[0][0])
        versions = [
            f"v{r[0]}" for r in store.query("SELECT version FROM runs WHERE name = ? ORDER BY version", (name,))
        ]
        if not versions:
            raise EvalError(f"no runs named {name!r} in the store {store.url}; `ragtrail runs list` shows the runs")
        aliases = [r[0] for r in store.query("SELECT alias FROM aliases WHERE name = ? ORDER BY alias", (name,))]
        raise EvalError(
            f"no run {ref!r}: {name} has versions {', '.join(versions)} and aliases {', '.join(['latest', *aliases])}"
        )
    rows = store.query("SELECT run_id FROM runs WHERE name = ? ORDER BY version DESC LIMIT 1", (ref,))
    if rows:
        return str(rows[0][0])
    raise EvalError(f"no run {ref!r} in the store {store.url}; give 'name:vN', 'name:alias' or a run id")


def load_run(store: Any, ref: Any) -> Run:
    """A stored run by reference (``name:vN``, ``name:latest``, ``name:<alias>``, run id)."""
    st = _store(store)
    run_id = resolve_run_id(st, ref)
    rows = st.query(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ?", (run_id,))  # noqa: S608
    run = Run.from_row(rows[0], st)
    if not run.summary and run.status != "running":
        run.summary = compute_summary(st, run_id)
    elif run.status == "running":
        run.summary = compute_summary(st, run_id)
    return run


def list_runs(store: Any, name: str | None = None, *, limit: int | None = None) -> list[Run]:
    st = _store(store)
    sql = f"SELECT {_RUN_COLS} FROM runs"  # noqa: S608
    params: tuple[Any, ...] = ()
    if name:
        sql += " WHERE name = ?"
        params = (name,)
    sql += " ORDER BY created_at DESC, version DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [Run.from_row(r, st) for r in st.query(sql, params)]


def runs_df(store: Any, name: str | None = None) -> pd.DataFrame:
    """One row per run, newest first: run_id, name, version, ref, status, created_at, finished_at,
    dataset, dataset_version, config_hash, n_examples, n_errors, latency_p50_ms, latency_p95_ms,
    cost_usd, aliases, then one column per metric (its mean)."""
    require("pandas", extra="analysis", feature="runs_df()")
    import pandas as pd

    st = _store(store)
    runs = list_runs(st, name)
    alias_rows = st.query("SELECT run_id, alias FROM aliases")
    aliases: dict[str, list[str]] = {}
    for rid, a in alias_rows:
        aliases.setdefault(rid, []).append(a)
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
    alias): it is :func:`ragtrail.evals._gates.move_alias` without a compare-and-swap condition.
    """
    from ragtrail.evals._gates import move_alias

    st = _store(store)
    if not alias or ":" in alias or _VERSION.match(alias) or alias in RESERVED_ALIASES:
        raise ConfigError(
            f"alias {alias!r} is not allowed: it must be non-empty, without ':', not 'vN' and not 'latest'"
        )
    target = load_run(st, run)
    move_alias(st, target.run_id, alias, by=by)
    return target


def alias_history(store: Any, name: str, alias: str | None = None) -> list[dict[str, Any]]:
    """Alias moves of evaluation ``name`` (one alias or all), oldest first."""
    st = _store(store)
    sql = "SELECT name, alias, run_id, previous_run_id, set_at, set_by FROM alias_history WHERE name = ?"
    params: list[Any] = [name]
    if alias:
        sql += " AND alias = ?"
        params.append(alias)
    rows = st.query(sql + " ORDER BY set_at", params)
    return [
        dict(zip(("name", "alias", "run_id", "previous_run_id", "set_at", "set_by"), r, strict=False)) for r in rows
    ]
