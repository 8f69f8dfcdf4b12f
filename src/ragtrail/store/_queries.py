"""Read queries of the web UI over the spans table (the trace list, one trace, the overview).

All SQL the UI runs on spans lives here. Lists page by keyset (the sort key and the trace id of the
last row shown), never by ``OFFSET``. A trace is listed by its root span (the span without a parent),
which the partial indices of migration 6 order by time; traces whose root never arrived are not
listed (their spans are still reachable by trace id).

Filters are a registry (:data:`TRACE_FILTERS`): each maps one query-string field to a SQL condition
on the root span ``r``, so that new columns (sessions, users, feedback) add one entry each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragtrail._exceptions import ConfigError
from ragtrail.store._store import Store, span_columns_sql

PAGE_SIZE = 50
"""Traces per page of the trace list."""

_NS_PER_DAY = 86_400_000_000_000


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere, its wildcards escaped (with ``ESCAPE '\\'``)."""
    esc = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{esc}%"


def _has(cond: str) -> str:
    return f"EXISTS (SELECT 1 FROM spans s WHERE s.trace_id = r.trace_id AND {cond})"  # noqa: S608 - fixed text


# the predicate of the partial indices spans_usage_start/_trace (migration 6): spans outside it add
# nothing to a token or cost sum, so restricting a sum to it is exact and reads only the small index
_USAGE = "(model IS NOT NULL OR input_tokens IS NOT NULL OR output_tokens IS NOT NULL OR cost_usd IS NOT NULL)"
_USAGE_S = (
    "(s.model IS NOT NULL OR s.input_tokens IS NOT NULL OR s.output_tokens IS NOT NULL OR s.cost_usd IS NOT NULL)"
)


def _usage_sum(col: str) -> str:
    return f"(SELECT SUM(s.{col}) FROM spans s WHERE s.trace_id = r.trace_id AND {_USAGE_S})"  # noqa: S608


_COST = _usage_sum("cost_usd")

# field -> (SQL condition on root span r with ? placeholders, value converter -> params)
TRACE_FILTERS: dict[str, tuple[str, Callable[[str], list[Any]]]] = {
    "project": ("r.project = ?", lambda v: [v]),
    "start": ("r.start_time_ns >= ?", lambda v: [_time_ns(v)]),
    "end": ("r.start_time_ns < ?", lambda v: [_time_ns(v)]),
    "kind": (_has("s.kind = ?"), lambda v: [v.upper()]),
    "errors": (_has("s.status = 'ERROR'"), lambda v: []),
    "model": (_has("s.model = ?"), lambda v: [v]),
    "name": (_has("s.name = ?"), lambda v: [v]),
    "min_ms": ("(r.end_time_ns - r.start_time_ns) >= ?", lambda v: [int(float(v) * 1e6)]),
    "min_cost": (f"{_COST} >= ?", lambda v: [float(v)]),
    "q": ("LOWER(r.attributes) LIKE ? ESCAPE '\\'", lambda v: [_like(v)]),
    "q_spans": (_has("LOWER(s.attributes) LIKE ? ESCAPE '\\'"), lambda v: [_like(v)]),
    # the production loop (issue 15): session and user are promoted columns; feedback is its own table
    "session": (_has("s.session_id = ?"), lambda v: [v]),
    "user": (_has("s.user_id = ?"), lambda v: [v]),
    "feedback": ("EXISTS (SELECT 1 FROM feedback f WHERE f.trace_id = r.trace_id AND f.name = ?)", lambda v: [v]),
}
"""The trace-list filters by query-string field. ``q`` searches the root span (the trace's input and
output, fast); ``q_spans`` every span of the trace (slower on large stores: it reads every span)."""

# sort field -> SQL expression of the key (per root span r); NULLs sort as -1
TRACE_SORTS: dict[str, str] = {
    "start": "r.start_time_ns",
    "duration": "(r.end_time_ns - r.start_time_ns)",
    "spans": "(SELECT COUNT(*) FROM spans s WHERE s.trace_id = r.trace_id)",
    "errors": "(SELECT COUNT(*) FROM spans s WHERE s.trace_id = r.trace_id AND s.status = 'ERROR')",
    "tokens_in": f"COALESCE({_usage_sum('input_tokens')}, -1)",
    "tokens_out": f"COALESCE({_usage_sum('output_tokens')}, -1)",
    "cost": f"COALESCE({_COST}, -1)",
}
"""The trace-list sort keys."""


def _time_ns(v: str) -> int:
    """Epoch nanoseconds from ISO 8601 text (``2026-12-05T10:00``) or epoch seconds."""
    from datetime import datetime, timezone

    text = v.strip()
    if text.isdigit() and len(text) >= 13:  # epoch nanoseconds, exact
        return int(text)
    try:
        f = float(text)
    except ValueError:
        try:
            dt = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ConfigError(f"cannot read the time {v!r}; use ISO 8601 such as 2026-12-05T10:00") from exc
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        return int(dt.timestamp() * 1e9)
    return int(f * 1e9) if f < 1e12 else int(f)


@dataclass
class TracePage:
    """One page of the trace list: rows (dicts) and the cursor of the next page (None at the end)."""

    rows: list[dict[str, Any]]
    next_cursor: str | None
    sort: str
    order: str
    filters: dict[str, str] = field(default_factory=dict)


def _cursor(key: Any, trace_id: str) -> str:
    return f"{key}~{trace_id}"


def _parse_cursor(text: str, sort: str) -> tuple[Any, str]:
    key, sep, tid = text.rpartition("~")
    if not sep or not tid:
        raise ConfigError(f"bad page cursor {text!r}; follow the 'next page' link instead of editing it")
    try:
        value: Any = (
            int(key) if sort in ("start", "duration", "spans", "errors", "tokens_in", "tokens_out") else float(key)
        )
    except ValueError as exc:
        raise ConfigError(f"bad page cursor {text!r}; follow the 'next page' link instead of editing it") from exc
    return value, tid


def list_traces(
    store: Store,
    filters: dict[str, str] | None = None,
    *,
    sort: str = "start",
    order: str = "desc",
    after: str | None = None,
    limit: int = PAGE_SIZE,
) -> TracePage:
    """One page of traces (newest first by default) matching ``filters`` (fields of :data:`TRACE_FILTERS`;
    empty values are ignored), sorted by ``sort`` (a key of :data:`TRACE_SORTS`), after the cursor ``after``.

    Raises:
        ConfigError: an unknown filter or sort, or a value that cannot be read (a time, a number).
    """
    if sort not in TRACE_SORTS:
        raise ConfigError(f"unknown sort {sort!r}; use one of {', '.join(TRACE_SORTS)}")
    if order not in ("asc", "desc"):
        raise ConfigError(f"order must be 'asc' or 'desc', not {order!r}")
    used = {k: v for k, v in (filters or {}).items() if v not in (None, "")}
    clauses = ["r.parent_span_id IS NULL"]
    params: list[Any] = []
    for k, v in used.items():
        if k not in TRACE_FILTERS:
            raise ConfigError(f"unknown trace filter {k!r}; use one of {', '.join(TRACE_FILTERS)}")
        cond, conv = TRACE_FILTERS[k]
        try:
            p = conv(str(v))
        except ValueError as exc:
            raise ConfigError(f"cannot read the filter {k}={v!r}: {exc}") from exc
        clauses.append(cond)
        params.extend(p)
    key = TRACE_SORTS[sort]
    cmp = "<" if order == "desc" else ">"
    if after:
        kv, tid = _parse_cursor(after, sort)
        clauses.append(f"({key}, r.trace_id) {cmp} (?, ?)")  # a row value: an index range seek, not a scan
        params.extend([kv, tid])
    direction = "DESC" if order == "desc" else "ASC"
    sql = (
        "SELECT r.trace_id, r.name, r.kind, r.start_time_ns, r.end_time_ns, r.status, r.project, "  # noqa: S608 - fixed expressions, values bound
        f"{key} FROM spans r WHERE {' AND '.join(clauses)} "
        f"ORDER BY {key} {direction}, r.trace_id {direction} LIMIT ?"
    )
    rows = store.query(_dialect(store, sql), [*params, int(limit) + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    aggs = trace_aggregates(store, [r[0] for r in rows])
    out = []
    for tid, name, kind, s, e, status, project, _k in rows:
        a = aggs.get(tid, {})
        out.append({
            "trace_id": tid, "name": name, "kind": kind, "start_time_ns": int(s), "end_time_ns": int(e),
            "duration_ms": (int(e) - int(s)) / 1e6, "root_status": status, "project": project, **a,
        })  # fmt: skip
    nxt = _cursor(rows[-1][7], rows[-1][0]) if more and rows else None
    return TracePage(out, nxt, sort, order, used)


def _dialect(store: Store, sql: str) -> str:
    """SQLite's LIKE ignores ASCII case already (LOWER would only cost a pass over the text)."""
    # SQLite: the search covers the compressed content too (issue 24: ragtrail_attributes joins it again)
    return (
        sql.replace("LOWER(r.attributes) LIKE", f"{store.attributes_sql('r.')} LIKE").replace(
            "LOWER(s.attributes) LIKE", f"{store.attributes_sql('s.')} LIKE"
        )
        if store.kind == "sqlite"
        else sql
    )


def trace_aggregates(store: Store, trace_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per trace: spans, errors, input/output tokens and cost (None when no span had one)."""
    if not trace_ids:
        return {}
    marks = ", ".join("?" * len(trace_ids))
    rows = store.query(
        "SELECT trace_id, COUNT(*), SUM(CASE WHEN status = 'ERROR' THEN 1 ELSE 0 END), "  # noqa: S608 - placeholders only
        "SUM(input_tokens), SUM(output_tokens), SUM(cost_usd) "
        f"FROM spans WHERE trace_id IN ({marks}) GROUP BY trace_id",
        list(trace_ids),
    )
    return {
        r[0]: {
            "n_spans": int(r[1]),
            "n_errors": int(r[2] or 0),
            "input_tokens": None if r[3] is None else int(r[3]),
            "output_tokens": None if r[4] is None else int(r[4]),
            "cost_usd": None if r[5] is None else float(r[5]),
        }
        for r in rows
    }


def resolve_trace_id(store: Store, text: str) -> str | None:
    """The full id of a trace given its id or a unique prefix of 8+ hex digits (None: not found).

    Raises:
        ConfigError: the prefix is shorter than 8 digits or matches several traces.
    """
    tid = text.strip().lower()
    if len(tid) >= 32:
        rows = store.query("SELECT trace_id FROM spans WHERE trace_id = ? LIMIT 1", (tid,))
        return rows[0][0] if rows else None
    if len(tid) < 8 or any(c not in "0123456789abcdef" for c in tid):
        raise ConfigError(f"trace id {text!r} is not an id or a prefix of at least 8 hex digits")
    hits = store.query(
        "SELECT DISTINCT trace_id FROM spans WHERE trace_id >= ? AND trace_id < ? LIMIT 2", (tid, tid + "g")
    )
    if len(hits) > 1:
        raise ConfigError(f"trace id prefix {text!r} is ambiguous; give more digits")
    return hits[0][0] if hits else None


def trace_rows(store: Store, trace_id: str) -> list[tuple[Any, ...]]:
    """Every span row of one trace (SPAN_COLUMNS order), by start time."""
    return store.query(
        f"SELECT {span_columns_sql(store)} FROM spans WHERE trace_id = ? ORDER BY start_time_ns, span_id",  # noqa: S608
        (trace_id,),
    )


def newest_root_ns(store: Store, project: str | None = None) -> int | None:
    """Start time of the newest root span (of a project), or None for an empty store."""
    if project:
        rows = store.query(
            "SELECT MAX(start_time_ns) FROM spans WHERE parent_span_id IS NULL AND project = ?", (project,)
        )
    else:
        rows = store.query("SELECT MAX(start_time_ns) FROM spans WHERE parent_span_id IS NULL")
    return None if not rows or rows[0][0] is None else int(rows[0][0])


def projects(store: Store) -> list[str]:
    """Projects with at least one root span, sorted."""
    return [
        r[0] for r in store.query("SELECT DISTINCT project FROM spans WHERE parent_span_id IS NULL ORDER BY 1") if r[0]
    ]


def distinct_values(store: Store, column: str, *, since_ns: int | None = None, limit: int = 200) -> list[str]:
    """Distinct models or span names (for the filter pickers), most recent spans only when ``since_ns``."""
    if column not in ("model", "name"):
        raise ConfigError(f"no picker for column {column!r}")
    where = f"{column} IS NOT NULL" + (" AND start_time_ns >= ?" if since_ns is not None else "")
    params: list[Any] = [] if since_ns is None else [since_ns]
    sql = f"SELECT DISTINCT {column} FROM spans WHERE {where} ORDER BY 1 LIMIT ?"  # noqa: S608 - fixed names
    return [r[0] for r in store.query(sql, [*params, int(limit)])]


# --------------------------------------------------------------------------------------- overview
def overview(store: Store, project: str | None = None, *, days: int = 14, now_ns: int | None = None) -> dict[str, Any]:
    """Per day over the last ``days`` days (ending at the newest trace): requests (root spans), traces
    with an error, root latency p50/p95; tokens and cost per day and model; tokens and cost by span kind
    (over the spans that have a model, tokens or a cost: ``spans`` counts those)."""
    end = now_ns if now_ns is not None else (newest_root_ns(store, project) or time.time_ns())
    start = (end // _NS_PER_DAY - days + 1) * _NS_PER_DAY
    # SQLite: "+project" keeps the planner on the time-ordered partial indices below (the general
    # (project, start) index would read every span of the project from the table)
    proj = (" AND +project = ?" if store.kind == "sqlite" else " AND project = ?") if project else ""
    base: list[Any] = [start] + ([project] if project else [])
    roots = store.query(
        "SELECT start_time_ns, end_time_ns - start_time_ns FROM spans "  # noqa: S608 - fixed text
        f"WHERE parent_span_id IS NULL AND start_time_ns >= ?{proj}",
        base,
    )
    per_day: dict[int, list[int]] = {}
    for s, d in roots:
        per_day.setdefault(int(s) // _NS_PER_DAY, []).append(int(d))
    err = store.query(
        f"SELECT start_time_ns / {_NS_PER_DAY}, COUNT(DISTINCT trace_id) FROM spans "  # noqa: S608 - fixed text
        f"WHERE status = 'ERROR' AND start_time_ns >= ?{proj} GROUP BY start_time_ns / {_NS_PER_DAY}",
        base,
    )
    errors = {int(d): int(n) for d, n in err}
    days_out = []
    for day in sorted(per_day):
        ds = sorted(per_day[day])
        days_out.append({
            "day": day * _NS_PER_DAY, "requests": len(ds), "errors": errors.get(day, 0),
            "error_rate": errors.get(day, 0) / len(ds), "p50_ms": _q(ds, 0.5) / 1e6, "p95_ms": _q(ds, 0.95) / 1e6,
        })  # fmt: skip
    # one pass over the window's spans with a model or usage (index spans_usage_start) for both breakdowns
    groups = store.query(
        f"SELECT start_time_ns / {_NS_PER_DAY}, kind, model, COUNT(*), SUM(input_tokens), SUM(output_tokens), "  # noqa: S608
        f"SUM(cost_usd) FROM spans WHERE {_USAGE} AND start_time_ns >= ?{proj} "
        f"GROUP BY start_time_ns / {_NS_PER_DAY}, kind, model",
        base,
    )
    models: dict[tuple[int, str], list[Any]] = {}
    kinds: dict[str | None, list[Any]] = {}
    for d, k, m, n, i, o, c in groups:
        targets = [kinds.setdefault(k, [0, None, None, None])]
        if m is not None:
            targets.append(models.setdefault((int(d), m), [0, None, None, None]))
        for acc in targets:
            acc[0] += int(n)
            for j, v in ((1, i), (2, o), (3, c)):
                if v is not None:
                    acc[j] = (acc[j] or 0) + v
    by_model = sorted((d, m, *a) for (d, m), a in models.items())
    by_kind = sorted(((k, *a) for k, a in kinds.items()), key=lambda r: -(r[4] or 0.0))
    return {
        "project": project,
        "start_ns": start,
        "end_ns": end,
        "days": days_out,
        "by_model": [
            {
                "day": int(d) * _NS_PER_DAY,
                "model": m,
                "calls": int(n),
                "input_tokens": _int(i),
                "output_tokens": _int(o),
                "cost_usd": None if c is None else float(c),
            }
            for d, m, n, i, o, c in by_model
        ],
        "by_kind": [
            {
                "kind": k,
                "spans": int(n),
                "cost_usd": None if c is None else float(c),
                "input_tokens": _int(i),
                "output_tokens": _int(o),
            }
            for k, n, i, o, c in by_kind
        ],
    }


def _int(v: Any) -> int | None:
    return None if v is None else int(v)


def _q(sorted_vals: Sequence[int], q: float) -> float:
    if not sorted_vals:
        return 0.0
    pos = (len(sorted_vals) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return float(sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo))
