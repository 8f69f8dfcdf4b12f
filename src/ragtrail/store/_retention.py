"""Retention: prune old traces in small batches, space reporting, size by project and age. All its SQL.

What :func:`prune` deletes, and what it never deletes
----------------------------------------------------
* A trace is old when *every* span of it started before the cutoff (a trace still growing is never cut
  in two); with ``project`` only traces whose spans all belong to that project.
* Traces that something refers to are kept unless ``delete_referenced=True``: eval runs
  (``run_examples`` / ``run_results``), datasets built from traces (``datasets.meta`` ``trace_ids`` and
  examples' ``source_trace_id``) and feedback (the ``feedback`` table). Those tables are checked only
  when they exist. With ``delete_referenced=True``, ``keep_eval_runs=True`` still keeps eval-run traces.
* Deleting a trace deletes its spans and its feedback rows; feedback rows older than the cutoff whose
  trace is gone (orphans) are deleted too. Run results keep their ``trace_id`` (a dangling id is shown
  as "trace pruned"). GenAI metric aggregates are kept: they are small and hold the long-term totals.
* Work is done in batches of ``batch_traces`` traces, one short transaction each, so writers (the
  exporter, ``ragtrail serve``) wait at most one batch; readers never wait (WAL / MVCC).
* PostgreSQL (spans partitioned by time, migration 11): partitions wholly older than the cutoff whose
  traces are all prunable are detached and dropped in one short transaction each instead of deleted row
  by row (:func:`ragtrail.store._partitions.drop_old_partitions`); the rest (the boundary partition,
  ``spans_default``, a partition holding a kept trace) goes through the batches below, same rules.
* ``vacuum=True`` gives the space back to the file system afterwards: SQLite ``VACUUM`` (it holds the
  write lock while it copies the database: run it in a quiet hour) or PostgreSQL ``VACUUM (ANALYZE)``
  (no lock against writers; the space is reused by new rows rather than returned).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ragtrail._exceptions import ConfigError, StoreError
from ragtrail._log import logger
from ragtrail.store._partitions import drop_old_partitions

__all__ = [
    "PruneResult",
    "parse_age",
    "prune",
    "referenced_trace_ids",
    "size_by_project_age",
    "start_retention",
    "store_bytes",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGES = ((86400, "<1d"), (7 * 86400, "1-7d"), (30 * 86400, "7-30d"), (90 * 86400, "30-90d"))


def parse_age(text: str | float | int) -> float:
    """Seconds in an age such as ``30d``, ``12h``, ``90m``, ``2w`` or a number of seconds. Raises ConfigError."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        secs = float(text)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", str(text).lower())
        if m is None:
            raise ConfigError(f"age {text!r}: use a number and a unit, e.g. 30d, 12h, 90m, 2w (or seconds)")
        secs = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    if secs <= 0:
        raise ConfigError(f"age {text!r} must be more than zero")
    return secs


@dataclass
class PruneResult:
    """What a prune did (or, with ``dry_run``, would do)."""

    cutoff_s: float
    dry_run: bool
    traces_deleted: int = 0
    spans_deleted: int = 0
    feedback_deleted: int = 0
    traces_kept_referenced: int = 0
    batches: int = 0
    seconds: float = 0.0
    bytes_before: int | None = None
    bytes_after: int | None = None
    longest_batch_s: float = 0.0
    partitions_dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def spans_per_s(self) -> float:
        return self.spans_deleted / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spans_per_s"] = round(self.spans_per_s, 1)
        return d


def _has_table(store: Any, name: str) -> bool:
    if store.kind == "sqlite":
        rows = store.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    else:
        rows = store.query("SELECT 1 FROM information_schema.tables WHERE table_name = ? "
                           "AND table_schema = ANY (current_schemas(false))", (name,))  # fmt: skip
    return bool(rows)


def referenced_trace_ids(store: Any, *, runs: bool = True, datasets: bool = True, feedback: bool = True) -> set[str]:
    """Trace ids that eval runs, datasets (lineage) or feedback refer to (tables that exist only)."""
    out: set[str] = set()
    if runs:
        for table in ("run_examples", "run_results"):
            if _has_table(store, table):
                sql = f"SELECT DISTINCT trace_id FROM {table} WHERE trace_id IS NOT NULL"  # noqa: S608 - fixed names
                out.update(r[0] for r in store.query(sql))
    if datasets:
        if _has_table(store, "datasets"):
            for (meta,) in store.query("SELECT meta FROM datasets WHERE meta LIKE ?", ("%trace_ids%",)):
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    out.update(str(t) for t in json.loads(meta).get("trace_ids") or ())
        if _has_table(store, "dataset_examples"):
            for (data,) in store.query("SELECT data FROM dataset_examples WHERE data LIKE ?", ("%source_trace_id%",)):
                with contextlib.suppress(ValueError, TypeError, AttributeError):
                    tid = (json.loads(data).get("metadata") or {}).get("source_trace_id")
                    if tid:
                        out.add(str(tid))
    if feedback and _has_table(store, "feedback"):
        out.update(r[0] for r in store.query("SELECT DISTINCT trace_id FROM feedback"))
    return out


def _old_traces(store: Any, cutoff_ns: int, project: str | None, batch: int) -> Iterable[list[tuple[str, int]]]:
    """Batches of ``(trace_id, n_spans)`` of old traces, oldest first.

    Walks the start-time index in windows (sized to hold about 2,000 traces each), then checks each
    batch's traces by primary key: every span before the cutoff, and all in ``project`` when given.
    """
    lo_row = store.query("SELECT MIN(start_time_ns) FROM spans")
    if not lo_row or lo_row[0][0] is None:
        return
    lo = int(lo_row[0][0])
    width = 3600 * 10**9
    while lo < cutoff_ns:
        hi = min(lo + width, cutoff_ns)
        ids = [r[0] for r in store.query(
            "SELECT DISTINCT trace_id FROM spans WHERE start_time_ns >= ? AND start_time_ns < ?", (lo, hi))]  # fmt: skip
        if len(ids) > 4_000:
            width = max(10**9, width // 2)
        elif len(ids) < 1_000:
            width = min(width * 2, 30 * 86400 * 10**9)
        lo = hi
        for chunk in _chunks(ids, batch):
            marks = ", ".join("?" * len(chunk))
            rows = store.query(
                f"SELECT trace_id, COUNT(*), MAX(start_time_ns), MIN(project), MAX(project) FROM spans "  # noqa: S608 - placeholders only
                f"WHERE trace_id IN ({marks}) GROUP BY trace_id",
                list(chunk),
            )
            out = [
                (r[0], int(r[1]))
                for r in rows
                if int(r[2]) < cutoff_ns and (project is None or (r[3] == project and r[4] == project))
            ]
            if out:
                yield out


def _chunks(items: Sequence[str], n: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def store_bytes(store: Any) -> int | None:
    """Bytes the store takes: the SQLite file (+ WAL), or the PostgreSQL database's tables of ragtrail."""
    try:
        if store.kind == "sqlite":
            rows = store.query("SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()")
            return int(rows[0][0])
        rows = store.query(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY (current_schemas(false))"
        )
        return int(rows[0][0])
    except StoreError:
        return None


def _vacuum(store: Any) -> None:
    if store.kind == "sqlite":
        conn = store._conn()  # the store package's own connection: VACUUM cannot run in a transaction
        conn.execute("VACUUM")
        return
    conn = store._psycopg.connect(store._dsn, autocommit=True)  # VACUUM needs autocommit
    try:
        conn.execute("VACUUM (ANALYZE) spans")
        if _has_table(store, "feedback"):
            conn.execute("VACUUM (ANALYZE) feedback")
    finally:
        conn.close()


def prune(
    store: Any,
    older_than: str | float,
    *,
    project: str | None = None,
    delete_referenced: bool = False,
    keep_eval_runs: bool = True,
    dry_run: bool = False,
    vacuum: bool = False,
    batch_traces: int = 100,
    now_s: float | None = None,
    pause_s: float = 0.0,
) -> PruneResult:
    """Delete traces older than ``older_than`` (e.g. ``"30d"``) in batches; see the module docstring.

    Returns a :class:`PruneResult` (counts, seconds, bytes before/after when ``vacuum``). Raises
    ConfigError for a bad age, StoreError when the store fails (batches already committed stay deleted).
    """
    age_s = parse_age(older_than)
    if batch_traces < 1:
        raise ConfigError(f"batch_traces={batch_traces} must be at least 1")
    t0 = time.monotonic()
    cutoff_s = (time.time() if now_s is None else now_s) - age_s
    cutoff_ns = int(cutoff_s * 1e9)
    res = PruneResult(cutoff_s=cutoff_s, dry_run=dry_run)
    if vacuum and not dry_run:
        res.bytes_before = store_bytes(store)
    protect: set[str] = set()
    if not delete_referenced:
        protect = referenced_trace_ids(store)
    elif keep_eval_runs:
        protect = referenced_trace_ids(store, datasets=False, feedback=False)
    has_feedback = _has_table(store, "feedback")
    kept: set[str] = set()
    gone: set[str] = set()  # traces counted with a dropped partition
    if store.kind == "postgresql":
        dropped = drop_old_partitions(store, cutoff_ns, protect=protect, project=project,
                                      has_feedback=has_feedback, dry_run=dry_run)  # fmt: skip
        res.partitions_dropped = dropped["partitions"]
        res.spans_deleted += dropped["spans"]
        res.traces_deleted += dropped["traces"]
        res.feedback_deleted += dropped["feedback"]
        res.notes.extend(dropped["notes"])
        gone = dropped["trace_ids"]
        if dropped["partitions"] and not dry_run:
            res.batches += len(dropped["partitions"])
            res.longest_batch_s = max(res.longest_batch_s, dropped["longest_s"])
    for cands in _old_traces(store, cutoff_ns, project, batch_traces):
        doomed = [(t, n) for t, n in cands if t not in protect and not (dry_run and t in gone)]
        kept.update(t for t, _ in cands if t in protect)
        if not doomed:
            continue
        ids = [t for t, _ in doomed]
        if dry_run:
            res.traces_deleted += len(ids)
            res.spans_deleted += sum(n for _, n in doomed)
            continue
        b0 = time.monotonic()
        marks = ", ".join("?" * len(ids))
        with store.transaction() as cur:
            cur.execute(f"DELETE FROM spans WHERE trace_id IN ({marks})", ids)  # noqa: S608 - placeholders only
            res.spans_deleted += int(cur.rowcount or 0)
            if has_feedback:
                cur.execute(f"DELETE FROM feedback WHERE trace_id IN ({marks})", ids)  # noqa: S608
                res.feedback_deleted += int(cur.rowcount or 0)
        res.longest_batch_s = max(res.longest_batch_s, time.monotonic() - b0)
        res.traces_deleted += len(set(ids) - gone)
        res.batches += 1
        if pause_s:
            time.sleep(pause_s)
    res.traces_kept_referenced = len(kept)
    if has_feedback and delete_referenced and not dry_run and project is None:
        # orphans: feedback older than the cutoff on traces that are gone
        res.feedback_deleted += store.execute(
            "DELETE FROM feedback WHERE created_at < ? AND NOT EXISTS "
            "(SELECT 1 FROM spans WHERE spans.trace_id = feedback.trace_id)",
            (cutoff_s,),
        )
    if vacuum and not dry_run:
        _vacuum(store)
        res.bytes_after = store_bytes(store)
    res.seconds = time.monotonic() - t0
    return res


def size_by_project_age(store: Any, now_s: float | None = None) -> list[dict[str, Any]]:
    """Spans, traces and approximate payload bytes by project and age (<1d, 1-7d, 7-30d, 30-90d, >90d)."""
    now_ns = int((time.time() if now_s is None else now_s) * 1e9)
    case = " ".join(f"WHEN start_time_ns >= {now_ns - int(s * 1e9)} THEN '{label}'" for s, label in _AGES)
    length = "LENGTH" if store.kind == "sqlite" else "OCTET_LENGTH"
    sql = (
        f"SELECT COALESCE(project, ''), CASE {case} ELSE '>90d' END AS age, COUNT(*), COUNT(DISTINCT trace_id), "  # noqa: S608 - numbers only
        f"SUM(COALESCE({length}(attributes), 0) + COALESCE({length}(events), 0) + COALESCE({length}(resource), 0) "
        f"+ COALESCE({length}(content), 0)) "
        "FROM spans GROUP BY 1, 2 ORDER BY 1, 2"
    )
    order = {label: i for i, (_, label) in enumerate(_AGES)} | {">90d": len(_AGES)}
    rows = [
        {"project": r[0], "age": r[1], "spans": int(r[2]), "traces": int(r[3]), "payload_bytes": int(r[4] or 0)}
        for r in store.query(sql)
    ]
    rows.sort(key=lambda d: (d["project"], order[d["age"]]))
    return rows


def start_retention(
    store: Any,
    older_than: str | float,
    *,
    every_s: float = 3600.0,
    project: str | None = None,
    keep_eval_runs: bool = True,
    stop: threading.Event | None = None,
) -> threading.Event:
    """Prune ``store`` every ``every_s`` seconds on a daemon thread (``ragtrail serve --retention 30d``);
    set the returned event (``stop`` when given) to stop it. Referenced traces are always kept. Failures
    are logged, never raised."""
    parse_age(older_than)
    stop = stop if stop is not None else threading.Event()

    def run() -> None:
        while True:
            try:
                r = prune(store, older_than, project=project, keep_eval_runs=keep_eval_runs)
                if r.traces_deleted:
                    logger.info("ragtrail retention: pruned %d traces (%d spans) older than %s",
                                r.traces_deleted, r.spans_deleted, older_than)  # fmt: skip
            except Exception:
                logger.warning("ragtrail retention: a prune failed; retrying at the next interval", exc_info=True)
            if stop.wait(every_s):
                return

    threading.Thread(target=run, name="ragtrail-retention", daemon=True).start()
    return stop
