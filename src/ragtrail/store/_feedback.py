"""SQL of the production loop: feedback rows, sessions, trace filters by session/user/tags, monitor cursors.

Feedback is history: a row is never updated or deleted; writing a row whose ``feedback_id`` is already
stored is a no-op (the same record can arrive twice: written by the app and received over OTLP).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ragtrail.store._store import Store

FEEDBACK_COLUMNS: tuple[str, ...] = (
    "feedback_id", "trace_id", "span_id", "name", "value_type", "value_num", "value_text", "comment", "source",
    "author", "created_at", "cost_usd", "details",
)  # fmt: skip
"""Columns of the ``feedback`` table, in the order rows are written and read."""

_INSERT = (
    f"INSERT INTO feedback ({', '.join(FEEDBACK_COLUMNS)}) VALUES ({', '.join('?' * len(FEEDBACK_COLUMNS))}) "  # noqa: S608 - fixed names
    "ON CONFLICT (feedback_id) DO NOTHING"
)
_CHUNK = 500


def insert_feedback(store: Store, rows: Sequence[Sequence[Any]], cur: Any = None) -> None:
    """Insert feedback rows (FEEDBACK_COLUMNS order); ids already stored are skipped. With ``cur``, inside
    that open transaction."""
    if not rows:
        return
    if cur is not None:
        cur.executemany(_INSERT, rows)
        return
    with store.transaction() as c:
        c.executemany(_INSERT, rows)


def _in(column: str, values: Sequence[Any]) -> str:
    return f"{column} IN ({', '.join('?' * len(values))})"


def select_feedback(
    store: Store,
    *,
    trace_ids: Sequence[str] | None = None,
    name: str | None = None,
    source: str | None = None,
    since: float | None = None,
    limit: int | None = None,
) -> list[tuple[Any, ...]]:
    """Feedback rows (FEEDBACK_COLUMNS order), oldest first."""
    clauses: list[str] = []
    params: list[Any] = []
    if name is not None:
        clauses.append("name = ?")
        params.append(name)
    if source is not None:
        clauses.append("source = ?")
        params.append(source)
    if since is not None:
        clauses.append("created_at >= ?")
        params.append(float(since))
    base = f"SELECT {', '.join(FEEDBACK_COLUMNS)} FROM feedback"  # noqa: S608 - fixed names
    order = " ORDER BY created_at, feedback_id"
    if trace_ids is None:
        sql = base + ((" WHERE " + " AND ".join(clauses)) if clauses else "") + order
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return store.query(sql, params)
    out: list[tuple[Any, ...]] = []
    ids = list(dict.fromkeys(trace_ids))
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        sql = base + " WHERE " + " AND ".join([_in("trace_id", chunk), *clauses]) + order
        out.extend(store.query(sql, [*chunk, *params]))
    out.sort(key=lambda r: (r[10], r[0]))
    return out[:limit] if limit is not None else out


def any_feedback(store: Store) -> bool:
    """Whether the store holds any feedback at all (skips the feedback lookups of DataFrames when not)."""
    return bool(store.query("SELECT 1 FROM feedback LIMIT 1"))


def root_span_id(store: Store, trace_id: str) -> str | None:
    """The span id of a trace's (first) root span, or None when the trace is not stored."""
    rows = store.query(
        "SELECT span_id FROM spans WHERE trace_id = ? AND parent_span_id IS NULL ORDER BY start_time_ns LIMIT 1",
        (trace_id,),
    )
    return str(rows[0][0]) if rows else None


def scorer_feedback_exists(cur: Any, trace_ids: Sequence[str], names: Sequence[str]) -> set[str]:
    """Trace ids among ``trace_ids`` that already have scorer feedback named one of ``names`` (in ``cur``'s
    transaction)."""
    if not trace_ids or not names:
        return set()
    cur.execute(
        f"SELECT DISTINCT trace_id FROM feedback WHERE {_in('trace_id', trace_ids)} "  # noqa: S608 - placeholders only
        f"AND source = 'scorer' AND {_in('name', names)}",
        [*trace_ids, *names],
    )
    return {r[0] for r in cur.fetchall()}


def scorer_spend(store: Store, names: Sequence[str], since: float) -> float:
    """USD recorded on scorer feedback named one of ``names`` since ``since`` (epoch seconds)."""
    if not names:
        return 0.0
    rows = store.query(
        f"SELECT SUM(cost_usd) FROM feedback WHERE source = 'scorer' AND created_at >= ? AND {_in('name', names)}",  # noqa: S608
        [float(since), *names],
    )
    return float(rows[0][0] or 0.0)


def scorer_max_cost(store: Store, names: Sequence[str]) -> float:
    """The most one trace has cost these scorers so far (the sum over scorers of their costliest record)."""
    if not names:
        return 0.0
    rows = store.query(
        f"SELECT name, MAX(cost_usd) FROM feedback WHERE source = 'scorer' AND {_in('name', names)} GROUP BY name",  # noqa: S608
        list(names),
    )
    return float(sum(r[1] or 0.0 for r in rows))


def recent_scores(store: Store, name: str, limit: int) -> list[float]:
    """The newest ``limit`` numeric scorer values of feedback ``name``, newest first."""
    rows = store.query(
        "SELECT value_num FROM feedback WHERE source = 'scorer' AND name = ? AND value_num IS NOT NULL "
        "ORDER BY created_at DESC LIMIT ?",
        (name, int(limit)),
    )
    return [float(r[0]) for r in rows]


# ------------------------------------------------------------------------------------ trace filters
def trace_filter(
    store: Store,
    project: str | None = None,
    session_id: str | None = None,
    user_id: str | None = None,
    tags: Iterable[str] | None = None,
) -> tuple[str, list[Any]]:
    """A ``trace_id IN (SELECT …)`` clause selecting traces with a span of ``session_id`` / ``user_id``
    carrying every tag in ``tags``; ``("", [])`` when no filter is given."""
    clauses: list[str] = []
    params: list[Any] = []
    if session_id is not None:
        clauses.append("session_id = ?")
        params.append(session_id)
    if user_id is not None:
        clauses.append("user_id = ?")
        params.append(user_id)
    for tag in [tags] if isinstance(tags, str) else (tags or ()):  # one tag may be given as a plain string
        clauses.append("attributes LIKE '%\"ragtrail.tags\"%'")  # cheap pre-filter before parsing JSON
        if store.kind == "postgresql":
            clauses.append("((attributes::jsonb) -> 'ragtrail.tags') @> jsonb_build_array(?::text)")
        else:
            clauses.append("EXISTS (SELECT 1 FROM json_each(spans.attributes, '$.\"ragtrail.tags\"') WHERE value = ?)")
        params.append(str(tag))
    if not clauses:
        return "", []
    if project is not None:
        clauses.insert(0, "project = ?")
        params.insert(0, project)
    return f"trace_id IN (SELECT trace_id FROM spans WHERE {' AND '.join(clauses)})", params  # noqa: S608


def session_rows(
    store: Store, project: str | None = None, user_id: str | None = None, limit: int | None = None
) -> list[tuple[Any, ...]]:
    """Per session: session_id, user_id (one of them), n_traces, n_spans, first start, last end, input tokens,
    output tokens, cost, cost count, project; newest activity first."""
    clauses = ["s.session_id IS NOT NULL"]
    params: list[Any] = []
    if project is not None:
        clauses.append("s.project = ?")
        params.append(project)
    if user_id is not None:
        clauses.append("s.user_id = ?")
        params.append(user_id)
    sql = (
        "SELECT s.session_id, MIN(s.user_id), COUNT(DISTINCT s.trace_id), COUNT(*), MIN(s.start_time_ns), "  # noqa: S608
        "MAX(s.end_time_ns), SUM(s.input_tokens), SUM(s.output_tokens), SUM(s.cost_usd), COUNT(s.cost_usd), "
        "MIN(s.project) FROM spans s WHERE "
        + " AND ".join(clauses)
        + " GROUP BY s.session_id ORDER BY MAX(s.end_time_ns) DESC"
    )
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return store.query(sql, params)


def session_trace_ids(store: Store, session_id: str) -> list[str]:
    """Trace ids of a session, oldest first."""
    rows = store.query(
        "SELECT trace_id FROM spans WHERE session_id = ? GROUP BY trace_id ORDER BY MIN(start_time_ns)", (session_id,)
    )
    return [r[0] for r in rows]


# ------------------------------------------------------------------------------------------ monitor
def monitor_cursor(store: Store, monitor: str) -> tuple[int, str, int] | None:
    """(end_time_ns, trace_id, traces_passed) of a monitor's cursor, or None before its first commit."""
    rows = store.query("SELECT end_time_ns, trace_id, scored FROM monitor_cursors WHERE monitor = ?", (monitor,))
    return (int(rows[0][0]), str(rows[0][1]), int(rows[0][2])) if rows else None


def root_candidates(
    store: Store, project: str | None, after: tuple[int, str] | None, ended_before_ns: int, limit: int
) -> list[tuple[str, int]]:
    """(trace_id, root end_time_ns) of root spans after the cursor ``(end_time_ns, trace_id)`` that ended
    before ``ended_before_ns``, in cursor order."""
    # EVALUATOR roots are judge calls (a monitor's own among them): never production traffic to score
    clauses = ["parent_span_id IS NULL", "end_time_ns <= ?", "(kind IS NULL OR kind <> 'EVALUATOR')"]
    params: list[Any] = [int(ended_before_ns)]
    if project is not None:
        clauses.append("project = ?")
        params.append(project)
    if after is not None:  # (end, trace_id) > cursor, written so the index range starts at the cursor
        clauses.append("end_time_ns >= ? AND (end_time_ns > ? OR trace_id > ?)")
        params.extend([after[0], after[0], after[1]])
    sql = (
        f"SELECT trace_id, end_time_ns FROM spans WHERE {' AND '.join(clauses)} "  # noqa: S608 - placeholders only
        f"ORDER BY end_time_ns, trace_id LIMIT {int(limit)}"
    )
    return [(r[0], int(r[1])) for r in store.query(sql, params)]


def _commit_batch(
    store: Store,
    monitor: str,
    expected: tuple[int, str] | None,
    new: tuple[int, str],
    passed: int,
    rows_by_trace: Mapping[str, Sequence[Sequence[Any]]],
    scorer_names: Sequence[str],
) -> bool:
    with store.transaction() as cur:
        if expected is None:
            cur.execute(
                "INSERT INTO monitor_cursors (monitor, end_time_ns, trace_id, scored, updated_at) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (monitor) DO NOTHING",
                (monitor, new[0], new[1], passed, time.time()),
            )
        else:
            cur.execute(
                "UPDATE monitor_cursors SET end_time_ns = ?, trace_id = ?, scored = scored + ?, updated_at = ? "
                "WHERE monitor = ? AND end_time_ns = ? AND trace_id = ?",
                (new[0], new[1], passed, time.time(), monitor, expected[0], expected[1]),
            )
        if cur.rowcount != 1:
            raise _LostRace
        ids = list(rows_by_trace)
        done: set[str] = set()
        for i in range(0, len(ids), _CHUNK):
            done |= scorer_feedback_exists(cur, ids[i : i + _CHUNK], scorer_names)
        rows = [r for tid, rs in rows_by_trace.items() if tid not in done for r in rs]
        insert_feedback(store, rows, cur)
    return True


def unscored_roots(
    store: Store, project: str | None, lo_ns: int, hi_ns: int, names: Sequence[str]
) -> list[tuple[str, int]]:
    """(trace_id, end_time_ns) of root spans that ended in ``[lo_ns, hi_ns]`` and carry no scorer feedback
    named one of ``names`` (the monitor's look-back for root spans that reached the store late)."""
    clauses = ["s.parent_span_id IS NULL", "s.end_time_ns >= ?", "s.end_time_ns <= ?",
               "(s.kind IS NULL OR s.kind <> 'EVALUATOR')"]  # fmt: skip
    params: list[Any] = [int(lo_ns), int(hi_ns)]
    if project is not None:
        clauses.append("s.project = ?")
        params.append(project)
    sql = (
        f"SELECT s.trace_id, s.end_time_ns FROM spans s WHERE {' AND '.join(clauses)} "  # noqa: S608 - placeholders only
        f"AND NOT EXISTS (SELECT 1 FROM feedback f WHERE f.trace_id = s.trace_id AND f.source = 'scorer' "
        f"AND {_in('f.name', names)}) ORDER BY s.end_time_ns, s.trace_id"
    )
    return [(r[0], int(r[1])) for r in store.query(sql, [*params, *names])]


def commit_late_feedback(
    store: Store, monitor: str, rows_by_trace: Mapping[str, Sequence[Sequence[Any]]], scorer_names: Sequence[str]
) -> int:
    """Write the scores of traces found behind the cursor; returns how many traces were written. The
    cursor row is locked first, so this serialises with every other instance's batch commits."""
    with store.transaction() as cur:
        cur.execute("UPDATE monitor_cursors SET updated_at = ? WHERE monitor = ?", (time.time(), monitor))
        ids = list(rows_by_trace)
        done: set[str] = set()
        for i in range(0, len(ids), _CHUNK):
            done |= scorer_feedback_exists(cur, ids[i : i + _CHUNK], scorer_names)
        rows = [r for tid, rs in rows_by_trace.items() if tid not in done for r in rs]
        insert_feedback(store, rows, cur)
    return len(ids) - len(done)


class _LostRace(Exception):
    """The monitor cursor moved under us: roll back."""


def commit_monitor_batch(
    store: Store,
    monitor: str,
    expected: tuple[int, str] | None,
    new: tuple[int, str],
    passed: int,
    rows_by_trace: Mapping[str, Sequence[Sequence[Any]]],
    scorer_names: Sequence[str],
) -> bool:
    """Write the feedback of one scored batch and move the cursor from ``expected`` to ``new``, in one
    transaction. Returns False (and writes nothing) when the cursor is no longer at ``expected`` (another
    instance of the monitor committed first). Traces that already have feedback of these scorers are
    skipped (never scored twice)."""
    try:
        return _commit_batch(store, monitor, expected, new, passed, rows_by_trace, scorer_names)
    except _LostRace:
        return False


__all__ = [
    "FEEDBACK_COLUMNS",
    "any_feedback",
    "commit_late_feedback",
    "commit_monitor_batch",
    "insert_feedback",
    "monitor_cursor",
    "recent_scores",
    "root_candidates",
    "root_span_id",
    "scorer_feedback_exists",
    "scorer_max_cost",
    "scorer_spend",
    "select_feedback",
    "session_rows",
    "session_trace_ids",
    "trace_filter",
    "unscored_roots",
]
