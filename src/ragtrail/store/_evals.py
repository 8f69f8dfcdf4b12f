"""The eval repository: every statement on runs, run examples, run results, datasets, dataset
examples and the judge cache (aliases: :mod:`ragtrail.store._aliases`).

Functions take a :class:`~ragtrail.store.Store` first and return plain values (dicts, tuples,
strings); the value types with behaviour (``Run``, ``Dataset``) live in :mod:`ragtrail.evals` and are
built from these. JSON columns are decoded here (``config``, ``lineage``, ``summary``, ``details``)
except the two that callers decode their own way (an example's ``output`` and a dataset example's
``data``).
"""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ragtrail._exceptions import ConfigError, EvalError, StoreError
from ragtrail.store._aliases import alias_target, aliases_of
from ragtrail.store._store import Store, span_columns_sql

RUN_FIELDS: tuple[str, ...] = (
    "run_id", "name", "version", "created_at", "finished_at", "status", "dataset_name", "dataset_version",
    "config", "config_hash", "lineage", "summary", "source_run_id", "sweep_id",
)  # fmt: skip
"""The columns of ``runs``, in the order of the dicts :func:`get_run` returns."""

EXAMPLE_FIELDS: tuple[str, ...] = (
    "example_id", "status", "output", "error", "trace_id", "latency_ms", "input_tokens", "output_tokens", "cost_usd",
)  # fmt: skip
"""The columns of ``run_examples`` that :func:`example_rows` returns (``output`` is raw JSON text)."""

_RUN_COLS = ", ".join(RUN_FIELDS)
_REF = re.compile(r"^(?P<name>[^:]+):(?P<tag>[^:]+)$")
_VERSION = re.compile(r"^v(\d+)$")
_CHUNK = 500


def dumps(obj: Any) -> str:
    """Canonical JSON as stored (sorted keys, compact, non-JSON values as ``str``)."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _loads(text: Any) -> dict[str, Any]:
    if not text:
        return {}
    if isinstance(text, dict):
        return text
    try:
        v = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return v if isinstance(v, dict) else {}


def _run_dict(row: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip(RUN_FIELDS, row, strict=True))
    for k in ("config", "lineage", "summary"):
        d[k] = _loads(d[k])
    d["version"] = int(d["version"])
    d["created_at"] = float(d["created_at"] or 0.0)
    d["finished_at"] = None if d["finished_at"] is None else float(d["finished_at"])
    return d


def _chunks(ids: Sequence[str]) -> Iterable[list[str]]:
    ids = list(dict.fromkeys(ids))
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


# ------------------------------------------------------------------------------------------ runs
def get_run(store: Store, run_id: str) -> dict[str, Any] | None:
    """The run ``run_id`` as a dict (:data:`RUN_FIELDS`), None when absent."""
    rows = store.query(f"SELECT {_RUN_COLS} FROM runs WHERE run_id = ?", (run_id,))  # noqa: S608 - fixed columns
    return _run_dict(rows[0]) if rows else None


def list_runs(store: Store, name: str | None = None, *, limit: int | None = None) -> list[dict[str, Any]]:
    """Stored runs (of one evaluation or all), newest first."""
    sql = f"SELECT {_RUN_COLS} FROM runs"  # noqa: S608 - fixed columns
    params: tuple[Any, ...] = ()
    if name:
        sql += " WHERE name = ?"
        params = (name,)
    sql += " ORDER BY created_at DESC, version DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [_run_dict(r) for r in store.query(sql, params)]


def latest_run_id(store: Store, name: str) -> str | None:
    """The id of the newest run of evaluation ``name`` (None when it has none)."""
    rows = store.query("SELECT run_id FROM runs WHERE name = ? ORDER BY version DESC LIMIT 1", (name,))
    return str(rows[0][0]) if rows else None


def resolve_run_id(store: Store, ref: Any) -> str:
    """The run id of ``ref``: anything with a ``run_id`` (a ``Run``), ``name:vN``, ``name:latest``,
    ``name:<alias>``, a run id, or a bare evaluation name (its latest run). The one resolver: every
    place that names a run resolves it here, with the same messages."""
    rid = getattr(ref, "run_id", None)
    if rid is not None:
        return str(rid)
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"a run reference must be 'name:vN', 'name:alias' or a run id, not {ref!r}")
    ref = ref.strip()
    if store.query("SELECT 1 FROM runs WHERE run_id = ?", (ref,)):
        return ref
    m = _REF.match(ref)
    if m:
        name, tag = m.group("name"), m.group("tag")
        vm = _VERSION.match(tag)
        hit: str | None
        if vm:
            rows = store.query("SELECT run_id FROM runs WHERE name = ? AND version = ?", (name, int(vm.group(1))))
            hit = str(rows[0][0]) if rows else None
        elif tag == "latest":
            hit = latest_run_id(store, name)
        else:
            hit = alias_target(store, name, tag)
        if hit is not None:
            return hit
        versions = [
            f"v{r[0]}" for r in store.query("SELECT version FROM runs WHERE name = ? ORDER BY version", (name,))
        ]
        if not versions:
            raise EvalError(f"no runs named {name!r} in the store {store.url}; `ragtrail runs list` shows the runs")
        aliases = list(aliases_of(store, name))
        raise EvalError(
            f"no run {ref!r}: {name} has versions {', '.join(versions)} and aliases {', '.join(['latest', *aliases])}"
        )
    hit = latest_run_id(store, ref)
    if hit is not None:
        return hit
    raise EvalError(f"no run {ref!r} in the store {store.url}; give 'name:vN', 'name:alias' or a run id")


def new_run_id() -> str:
    return "run_" + uuid.uuid4().hex[:16]


def insert_run(
    store: Store,
    name: str,
    *,
    dataset_name: str | None,
    dataset_version: str | None,
    config: Mapping[str, Any],
    config_hash: str,
    lineage: Mapping[str, Any],
    source_run_id: str | None = None,
    sweep_id: str | None = None,
    status: str = "running",
) -> str:
    """Insert a run with the next version of ``name`` (safe against concurrent creators); its id."""
    if not name or ":" in name:
        raise ConfigError(f"evaluation name {name!r} must be non-empty and contain no ':'")
    run_id = new_run_id()
    now = time.time()
    values = [run_id, name, 0, now, None, status, dataset_name, dataset_version, dumps(dict(config)), config_hash,
              dumps(lineage), None, source_run_id, sweep_id]  # fmt: skip
    for attempt in range(20):
        try:
            with store.transaction() as cur:
                cur.execute("SELECT MAX(version) FROM runs WHERE name = ?", (name,))
                row = cur.fetchone()
                values[2] = int(row[0] or 0) + 1 if row else 1
                cur.execute(
                    f"INSERT INTO runs ({_RUN_COLS}) VALUES ({', '.join('?' * len(RUN_FIELDS))})",  # noqa: S608
                    values,
                )
            break
        except StoreError:
            if attempt == 19:
                raise
            time.sleep(0.01 * (attempt + 1))
    return run_id


def finish_run(store: Store, run_id: str, status: str, summary: Mapping[str, Any]) -> None:
    """Record the run's final status, finish time and summary."""
    store.execute(
        "UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ?",
        (status, time.time(), dumps(summary), run_id),
    )


def reopen_run(store: Store, run_id: str, lineage: Mapping[str, Any], *, clear_examples: Iterable[str] = ()) -> None:
    """Mark a run running again (resume) with new lineage; the rows of ``clear_examples`` are deleted
    in the same transaction (examples that run again from scratch)."""
    with store.transaction() as cur:
        cur.execute(
            "UPDATE runs SET status = 'running', finished_at = NULL, lineage = ? WHERE run_id = ?",
            (dumps(lineage), run_id),
        )
        for ex_id in clear_examples:
            cur.execute("DELETE FROM run_examples WHERE run_id = ? AND example_id = ?", (run_id, ex_id))
            cur.execute("DELETE FROM run_results WHERE run_id = ? AND example_id = ?", (run_id, ex_id))


def _quantile(sorted_vals: Sequence[float], q: float) -> float | None:
    if not sorted_vals:
        return None
    pos = (len(sorted_vals) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return float(sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo))


def run_summary(store: Store, run_id: str) -> dict[str, Any]:
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


def mean_example_cost(store: Store, run_id: str) -> tuple[float | None, int]:
    """Mean pipeline cost per example of a run and how many examples recorded one."""
    rows = store.query(
        "SELECT AVG(cost_usd), COUNT(cost_usd) FROM run_examples WHERE run_id = ? AND cost_usd IS NOT NULL", (run_id,)
    )
    if not rows or not rows[0][1]:
        return None, 0
    return float(rows[0][0]), int(rows[0][1])


# ----------------------------------------------------------------------------- examples and results
ResultRow = tuple[str, str, Any, str, Any, Any, Any]
"""``(example_id, scorer, score, status, reason, details (dict or None), trace_id)``."""


def _result_params(run_id: str, rows: Iterable[ResultRow], now: float) -> list[tuple[Any, ...]]:
    return [(run_id, e, n, v, st, r, dumps(d) if d else None, tid, now) for e, n, v, st, r, d, tid in rows]


_INSERT_RESULT = (
    "INSERT INTO run_results (run_id, example_id, scorer, score, status, reason, details, trace_id, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_RESULT = "DELETE FROM run_results WHERE run_id = ? AND example_id = ? AND scorer = ?"


def commit_example(
    store: Store,
    run_id: str,
    example_id: str,
    example: Sequence[Any] | None,
    results: Sequence[ResultRow],
    *,
    replace_example: bool = False,
) -> None:
    """Write one example's row and its results in one transaction (a resumed run finds all or none).

    ``example`` is ``(status, output_json, error, trace_id, latency_ms, input_tokens, output_tokens,
    cost_usd)`` or None (results only); ``replace_example`` first deletes the example's old rows.
    A result replaces an earlier result of the same scorer."""
    now = time.time()
    with store.transaction() as cur:
        if example is not None:
            if replace_example:
                cur.execute("DELETE FROM run_examples WHERE run_id = ? AND example_id = ?", (run_id, example_id))
                cur.execute("DELETE FROM run_results WHERE run_id = ? AND example_id = ?", (run_id, example_id))
            cur.execute(
                "INSERT INTO run_examples (run_id, example_id, status, output, error, trace_id, latency_ms, "
                "input_tokens, output_tokens, cost_usd, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, example_id, *example, now),
            )
        for params in _result_params(run_id, results, now):
            cur.execute(_DELETE_RESULT, params[:3])
            cur.execute(_INSERT_RESULT, params)


def commit_results(store: Store, run_id: str, results: Sequence[ResultRow]) -> None:
    """Write many results (of any examples) in one transaction, each replacing its scorer's earlier one."""
    params = _result_params(run_id, results, time.time())
    with store.transaction() as cur:
        cur.executemany(_DELETE_RESULT, [p[:3] for p in params])
        cur.executemany(_INSERT_RESULT, params)


def example_statuses(store: Store, run_id: str) -> dict[str, str]:
    """``{example_id: status}`` of a run's recorded examples."""
    return {r[0]: r[1] for r in store.query("SELECT example_id, status FROM run_examples WHERE run_id = ?", (run_id,))}


def result_statuses(store: Store, run_id: str) -> list[tuple[str, str, str]]:
    """``(example_id, scorer, status)`` of every stored result of a run."""
    rows = store.query("SELECT example_id, scorer, status FROM run_results WHERE run_id = ?", (run_id,))
    return [(r[0], r[1], r[2]) for r in rows]


def example_rows(store: Store, run_id: str, example_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """A run's example rows (:data:`EXAMPLE_FIELDS`; ``output`` raw JSON text), in recording order;
    only ``example_ids`` when given."""
    cols = ", ".join(EXAMPLE_FIELDS)
    if example_ids is None:
        rows = store.query(
            f"SELECT {cols} FROM run_examples WHERE run_id = ? ORDER BY created_at, example_id",  # noqa: S608
            (run_id,),
        )
    else:
        rows = []
        for chunk in _chunks(example_ids):
            rows += store.query(
                f"SELECT {cols} FROM run_examples WHERE run_id = ? "  # noqa: S608 - fixed columns
                f"AND example_id IN ({', '.join('?' * len(chunk))}) ORDER BY created_at, example_id",
                (run_id, *chunk),
            )
    return [dict(zip(EXAMPLE_FIELDS, r, strict=True)) for r in rows]


def example_trace_id(store: Store, run_id: str, example_id: str) -> str | None:
    """The trace id recorded for one example of a run (None when none)."""
    rows = store.query("SELECT trace_id FROM run_examples WHERE run_id = ? AND example_id = ?", (run_id, example_id))
    return str(rows[0][0]) if rows and rows[0][0] else None


def result_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """One dict per example x scorer, ordered by example and scorer: example_id, scorer, score, status,
    reason, trace_id, details (dict), and the example's latency_ms, cost_usd, example_status, example_error."""
    rows = store.query(
        "SELECT r.example_id, r.scorer, r.score, r.status, r.reason, r.trace_id, r.details, "
        "e.latency_ms, e.cost_usd, e.status, e.error FROM run_results r LEFT JOIN run_examples e "
        "ON e.run_id = r.run_id AND e.example_id = r.example_id WHERE r.run_id = ? "
        "ORDER BY r.example_id, r.scorer",
        (run_id,),
    )
    return [
        {
            "example_id": r[0],
            "scorer": r[1],
            "score": None if r[2] is None else float(r[2]),
            "status": r[3],
            "reason": r[4],
            "trace_id": r[5],
            "details": _loads(r[6]),
            "latency_ms": r[7],
            "cost_usd": r[8],
            "example_status": r[9],
            "example_error": r[10],
        }
        for r in rows
    ]


# ------------------------------------------------------------------------------- spans of an eval
def trace_span_rows(store: Store, trace_ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """The stored span rows (:data:`~ragtrail.store.SPAN_COLUMNS` order) of these traces, by start time."""
    out: list[tuple[Any, ...]] = []
    for chunk in _chunks([t for t in trace_ids if t]):
        out += store.query(
            f"SELECT {span_columns_sql(store)} FROM spans WHERE trace_id IN ({', '.join('?' * len(chunk))}) "  # noqa: S608
            "ORDER BY start_time_ns",
            chunk,
        )
    return out


# ------------------------------------------------------------------------------------- datasets
def dataset_exists(store: Store, name: str, version: str) -> bool:
    return bool(store.query("SELECT 1 FROM datasets WHERE name = ? AND version = ?", (name, version)))


def insert_dataset(
    store: Store,
    name: str,
    version: str,
    *,
    description: str | None,
    meta: str | None,
    examples: Sequence[tuple[str, str]],
) -> bool:
    """Store a dataset version with its ``(example_id, data_json)`` examples in one transaction; False
    when that version was already stored (also by a concurrent writer): a version never changes."""
    if dataset_exists(store, name, version):
        return False
    rows = [(name, version, ex_id, i, data) for i, (ex_id, data) in enumerate(examples)]
    try:
        with store.transaction() as cur:
            cur.execute("SELECT 1 FROM datasets WHERE name = ? AND version = ?", (name, version))
            if cur.fetchone():
                return False
            cur.execute(
                "INSERT INTO datasets (name, version, created_at, n_examples, description, meta) VALUES (?, ?, ?, ?, ?, ?)",
                (name, version, time.time(), len(rows), description, meta),
            )
            cur.executemany(
                "INSERT INTO dataset_examples (dataset, version, example_id, position, data) VALUES (?, ?, ?, ?, ?)",
                rows,
            )
    except StoreError:
        if dataset_exists(store, name, version):
            return False  # another process pushed the same content at the same time
        raise
    return True


def latest_dataset_version(store: Store, name: str) -> str | None:
    rows = store.query("SELECT version FROM datasets WHERE name = ? ORDER BY created_at DESC LIMIT 1", (name,))
    return str(rows[0][0]) if rows else None


def dataset_names(store: Store) -> list[str]:
    return [r[0] for r in store.query("SELECT DISTINCT name FROM datasets ORDER BY name")]


def dataset_versions(store: Store, name: str) -> list[str]:
    """Versions of dataset ``name``, oldest first."""
    return [r[0] for r in store.query("SELECT version FROM datasets WHERE name = ? ORDER BY created_at", (name,))]


def dataset_meta(store: Store, name: str, version: str) -> tuple[str | None, str | None] | None:
    """``(description, meta_json)`` of a dataset version (None when absent)."""
    rows = store.query("SELECT description, meta FROM datasets WHERE name = ? AND version = ?", (name, version))
    return (rows[0][0], rows[0][1]) if rows else None


def dataset_example_data(
    store: Store, name: str, version: str, example_ids: Sequence[str] | None = None
) -> list[tuple[str, str]]:
    """``(example_id, data_json)`` of a dataset version in position order (only ``example_ids`` when given)."""
    if example_ids is None:
        rows = store.query(
            "SELECT example_id, data FROM dataset_examples WHERE dataset = ? AND version = ? ORDER BY position",
            (name, version),
        )
        return [(r[0], r[1]) for r in rows]
    out: list[tuple[str, str]] = []
    for chunk in _chunks(example_ids):
        out += store.query(
            "SELECT example_id, data FROM dataset_examples WHERE dataset = ? AND version = ? "  # noqa: S608
            f"AND example_id IN ({', '.join('?' * len(chunk))}) ORDER BY position",
            (name, version, *chunk),
        )
    return out


def list_datasets(store: Store, name: str | None = None) -> list[dict[str, Any]]:
    """Stored dataset versions, newest first: name, version, created_at, n_examples, description."""
    sql = "SELECT name, version, created_at, n_examples, description FROM datasets"
    params: tuple[Any, ...] = ()
    if name:
        sql += " WHERE name = ?"
        params = (name,)
    rows = store.query(sql + " ORDER BY created_at DESC", params)
    return [dict(zip(("name", "version", "created_at", "n_examples", "description"), r, strict=True)) for r in rows]


# ------------------------------------------------------------------------------------ judge cache
def judge_cache_get(store: Store, key: str) -> str | None:
    """The cached verdict's JSON text under ``key`` (None on a miss)."""
    rows = store.query("SELECT value FROM judge_cache WHERE key = ?", (key,))
    return str(rows[0][0]) if rows else None


def judge_cache_has(store: Store, key: str) -> bool:
    return bool(store.query("SELECT 1 FROM judge_cache WHERE key = ?", (key,)))


def judge_cache_put(store: Store, key: str, value: str) -> None:
    """Store ``value`` under ``key``; the first writer wins, later writers are no-ops."""
    store.execute(
        "INSERT INTO judge_cache (key, value, created_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
        (key, value, time.time()),
    )


def judge_cache_count(store: Store) -> int:
    return int(store.query("SELECT COUNT(*) FROM judge_cache")[0][0])


def judge_cache_clear(store: Store) -> int:
    """Delete every cached verdict; how many were deleted."""
    return store.execute("DELETE FROM judge_cache")
