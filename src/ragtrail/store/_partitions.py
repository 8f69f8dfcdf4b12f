"""PostgreSQL: ``spans`` partitioned by start time, partitions made ahead and on demand, old ones dropped.

All its SQL. SQLite has no declarative partitioning; there none of this runs (migration 11 is recorded
as a no-op).

Layout (migration 11)
---------------------
``spans`` is ``PARTITION BY RANGE (start_time_ns)``; one partition per interval (``daily`` by default,
``weekly`` from Monday, or ``monthly``, all in UTC), named after its first instant (``spans_p20261205``),
plus ``spans_default``, which takes any row whose interval has no partition (yet). The interval is
chosen when the migration runs (``RAGTRAIL_PG_PARTITION_INTERVAL``) and recorded in
``ragtrail_partitioning``; :func:`set_partition_interval` changes it for partitions made later
(existing ones keep their bounds; a new one is clipped so that it never overlaps them).

Idempotent writes
-----------------
PostgreSQL requires every unique constraint of a partitioned table to contain the partition key, so the
primary key is ``(trace_id, span_id, start_time_ns)`` and the writers use ``ON CONFLICT DO NOTHING``. A
span's start time is fixed when the span starts and travels with every copy of it (a retried OTLP
export, a second receiver, a replayed spool), so a re-sent span has the same three values and is still
stored once. Only a *different* span with the same ids and another start time (not something an OTel
SDK produces) would now be stored twice instead of being dropped.

Partitions ahead and on demand
------------------------------
Opening the store makes the partitions from the current interval to ``RAGTRAIL_PG_PARTITIONS_AHEAD``
days ahead (default 7). The writer checks each batch's start times against the partitions it knows
and, for a time that none covers (a late or a far-future span), makes the missing one before it inserts.
Every creation runs in its own short transaction under an advisory lock (so two writers, in any
processes, never race on the same ``CREATE``), re-reads the catalogue under it and locks ``spans``
(``SHARE ROW EXCLUSIVE``, then ``CREATE … PARTITION OF`` takes ``ACCESS EXCLUSIVE``: writers and readers
wait for the few milliseconds it takes, at most ``lock_timeout``, 10 s). A long-lived writer makes the
days ahead again once an hour, so live traffic rarely needs a creation. If
``spans_default`` already holds rows of the new range (written while no partition covered it),
``CREATE … PARTITION OF`` would fail, so those rows are moved into the new partition in the same
transaction. A creation that fails (a lock not obtained in ``lock_timeout``, a permission) is logged and
the rows go to ``spans_default``: nothing is lost, and the next creation for that range (or the next
open of the store, or the hourly pass of a long-lived writer) moves them.

Retention
---------
:func:`drop_old_partitions` detaches and drops a partition whose whole range is older than the cutoff,
when no trace in it is referenced (eval runs, datasets, feedback, as :mod:`._retention` defines) and
none continues after the cutoff; the feedback of its traces goes with it. Everything else (the
boundary partition, ``spans_default``, partitions holding a kept trace) is left to the row-by-row
prune, which applies the same rules.
"""

from __future__ import annotations

import calendar
import datetime as _dt
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from ragtrail._exceptions import ConfigError, StoreError
from ragtrail._log import logger, warn_once

__all__ = [
    "INTERVALS",
    "Partitions",
    "drop_old_partitions",
    "interval_bounds",
    "is_partitioned",
    "list_partitions",
    "migrate_spans_to_partitions",
    "partition_name",
    "set_partition_interval",
]

INTERVALS = ("daily", "weekly", "monthly")
DEFAULT_PARTITION = "spans_default"
_NS = 10**9
_DAY_NS = 86400 * _NS
_LOCK_KEY = 727272  # pg_advisory_xact_lock key serialising partition DDL (727271 is the migrations')
_BOUND = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")
_START = 5  # SPAN_COLUMNS.index("start_time_ns")
_MAX_NEW = 64  # partitions one batch may make (spans with wildly scattered clocks go to spans_default)


def _interval_from_env() -> str:
    value = (os.environ.get("RAGTRAIL_PG_PARTITION_INTERVAL") or "daily").strip().lower()
    if value not in INTERVALS:
        raise ConfigError(f"RAGTRAIL_PG_PARTITION_INTERVAL={value!r}: use one of {', '.join(INTERVALS)}")
    return value


def _ahead_days() -> int:
    raw = os.environ.get("RAGTRAIL_PG_PARTITIONS_AHEAD") or "7"
    try:
        return max(0, int(raw))
    except ValueError:
        raise ConfigError(f"RAGTRAIL_PG_PARTITIONS_AHEAD={raw!r}: give a whole number of days") from None


def interval_bounds(ts_ns: int, interval: str) -> tuple[int, int]:
    """``[lo, hi)`` in ns of the UTC day, week (from Monday) or month holding ``ts_ns``."""
    day = ts_ns // _DAY_NS
    if interval == "daily":
        return day * _DAY_NS, (day + 1) * _DAY_NS
    if interval == "weekly":
        monday = day - (day + 3) % 7  # 1970-01-01 was a Thursday
        return monday * _DAY_NS, (monday + 7) * _DAY_NS
    if interval == "monthly":
        d = _dt.date(1970, 1, 1) + _dt.timedelta(days=day)
        nxt = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        lo = calendar.timegm((d.year, d.month, 1, 0, 0, 0)) * _NS
        return lo, calendar.timegm((*nxt, 1, 0, 0, 0)) * _NS
    raise ConfigError(f"partition interval {interval!r}: use one of {', '.join(INTERVALS)}")


def partition_name(lo_ns: int) -> str:
    """``spans_pYYYYMMDD`` (``_HHMMSS`` appended when the range does not start at midnight UTC)."""
    t = _dt.datetime(1970, 1, 1) + _dt.timedelta(microseconds=lo_ns // 1000)
    name = f"spans_p{t.year:04d}{t.month:02d}{t.day:02d}"
    if (t.hour, t.minute, t.second, t.microsecond) != (0, 0, 0, 0) or lo_ns % 1000:
        name += f"_{t.hour:02d}{t.minute:02d}{t.second:02d}"
        if t.microsecond or lo_ns % 1000:
            name += f"_{lo_ns % _NS:09d}"
    return name


# -------------------------------------------------------------------------------------- catalogue
def _relkind(cur: Any) -> str | None:
    cur.execute("SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('spans')")
    row = cur.fetchone()
    return None if row is None else str(row[0])


def _bounds(cur: Any) -> tuple[list[tuple[int, int, str]], bool]:
    """The partitions of ``spans`` as ``(lo, hi, name)`` sorted by ``lo``, and whether a default exists."""
    cur.execute(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass('spans')"
    )
    out, default = [], False
    for name, bound in cur.fetchall():
        m = _BOUND.search(bound or "")
        if m:
            out.append((int(m.group(1)), int(m.group(2)), str(name)))
        elif "DEFAULT" in (bound or ""):
            default = True
    out.sort()
    return out, default


class _QueryCursor:
    """``cur.execute`` / ``fetchall`` / ``fetchone`` over a store's read queries."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._rows = self._store.query(sql, params)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None


def is_partitioned(store: Any) -> bool:
    """Whether ``store`` is PostgreSQL with ``spans`` partitioned (migration 11 applied)."""
    return getattr(store, "kind", "") == "postgresql" and _relkind(_QueryCursor(store)) == "p"


def list_partitions(store: Any) -> list[dict[str, Any]]:
    """The partitions of ``spans``: ``name``, ``lo_ns``, ``hi_ns`` (``None`` for ``spans_default``), oldest first."""
    if not is_partitioned(store):
        return []
    bounds, default = _bounds(_QueryCursor(store))
    out = [{"name": n, "lo_ns": lo, "hi_ns": hi} for lo, hi, n in bounds]
    if default:
        out.append({"name": DEFAULT_PARTITION, "lo_ns": None, "hi_ns": None})
    return out


def _clip(lo: int, hi: int, ts: int, bounds: Iterable[tuple[int, int, str]]) -> tuple[int, int] | None:
    """``[lo, hi)`` shrunk to avoid the existing ranges, keeping ``ts``; None when one already covers ``ts``."""
    for a, b, _ in bounds:
        if a <= ts < b:
            return None
        if b <= ts:
            lo = max(lo, b)
        elif a > ts:
            hi = min(hi, a)
    return lo, hi


def _create(cur: Any, ts_list: Iterable[int], interval: str, lock_timeout_ms: int = 10_000) -> list[str]:
    """Make the partitions holding ``ts_list`` that do not exist, inside the caller's transaction; returns
    the names made. Moves rows of a new range out of ``spans_default`` first (see the module docstring)."""
    cur.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
    cur.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK_KEY,))
    bounds, default = _bounds(cur)
    made: list[str] = []
    locked = False
    for ts in sorted(set(ts_list)):
        want = _clip(*interval_bounds(ts, interval), ts, bounds)
        if want is None:
            continue
        lo, hi = want
        name = partition_name(lo)
        if not locked:  # writers wait (ms) from here, readers from the CREATE on
            cur.execute("LOCK TABLE spans IN SHARE ROW EXCLUSIVE MODE")
            locked = True
        moving = False
        if default:
            cur.execute(
                f"SELECT 1 FROM {DEFAULT_PARTITION} WHERE start_time_ns >= ? AND start_time_ns < ? LIMIT 1",  # noqa: S608 - fixed name
                (lo, hi),
            )
            moving = cur.fetchone() is not None
        if moving:
            cur.execute(
                "CREATE TEMP TABLE ragtrail_moving ON COMMIT DROP AS WITH d AS ("  # noqa: S608 - fixed name
                f"DELETE FROM {DEFAULT_PARTITION} WHERE start_time_ns >= ? AND start_time_ns < ? RETURNING *"
                ") SELECT * FROM d",
                (lo, hi),
            )
        cur.execute(f"CREATE TABLE {name} PARTITION OF spans FOR VALUES FROM ({int(lo)}) TO ({int(hi)})")
        if moving:
            cur.execute("INSERT INTO spans SELECT * FROM ragtrail_moving ON CONFLICT DO NOTHING")
            cur.execute("DROP TABLE ragtrail_moving")
        bounds.append((lo, hi, name))
        bounds.sort()
        made.append(name)
    return made


def _now_ahead(now_ns: int, ahead_days: int) -> list[int]:
    return [now_ns + d * _DAY_NS for d in range(ahead_days + 1)]


# -------------------------------------------------------------------------------------- migration 11
def migrate_spans_to_partitions(cur: Any) -> None:
    """Migration 11 on PostgreSQL, inside the migrations' transaction: rename the plain ``spans``, make
    the partitioned one (key ``(trace_id, span_id, start_time_ns)``), a partition per interval that has
    rows plus the current one and ``RAGTRAIL_PG_PARTITIONS_AHEAD`` days ahead, and ``spans_default``;
    copy every row; drop the old table; build its indexes again on the new one."""
    interval = _interval_from_env()
    cur.execute("CREATE TABLE IF NOT EXISTS ragtrail_partitioning (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    cur.execute(
        "INSERT INTO ragtrail_partitioning (key, value) VALUES ('interval', ?) ON CONFLICT DO NOTHING", (interval,)
    )
    if _relkind(cur) == "p":
        return
    cur.execute("LOCK TABLE spans IN ACCESS EXCLUSIVE MODE")
    cur.execute(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = to_regclass('spans') "
        "AND NOT i.indisprimary ORDER BY i.indexrelid"
    )
    indexdefs = [str(r[0]) for r in cur.fetchall()]
    cur.execute("SELECT conname FROM pg_constraint WHERE conrelid = to_regclass('spans') AND contype = 'p'")
    pk = cur.fetchone()
    cur.execute("ALTER TABLE spans RENAME TO spans_unpartitioned")
    if pk is not None:
        cur.execute(f'ALTER TABLE spans_unpartitioned RENAME CONSTRAINT "{pk[0]}" TO spans_unpartitioned_pkey')
    cur.execute(
        "CREATE TABLE spans (LIKE spans_unpartitioned INCLUDING DEFAULTS, "
        "CONSTRAINT spans_pkey PRIMARY KEY (trace_id, span_id, start_time_ns)) PARTITION BY RANGE (start_time_ns)"
    )
    cur.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF spans DEFAULT")
    cur.execute("SELECT DISTINCT FLOOR(start_time_ns / 86400000000000.0)::BIGINT FROM spans_unpartitioned")
    days = [int(r[0]) * _DAY_NS for r in cur.fetchall()]
    now_ns = time.time_ns()
    _create(cur, days + _now_ahead(now_ns, _ahead_days()), interval, lock_timeout_ms=0)
    cur.execute("INSERT INTO spans SELECT * FROM spans_unpartitioned")
    cur.execute("DROP TABLE spans_unpartitioned")
    for sql in indexdefs:
        cur.execute(sql)


def set_partition_interval(store: Any, interval: str) -> None:
    """Change the interval of partitions made from now on (existing partitions keep their ranges)."""
    if interval not in INTERVALS:
        raise ConfigError(f"partition interval {interval!r}: use one of {', '.join(INTERVALS)}")
    if not is_partitioned(store):
        raise StoreError(f"the store {store.url} has no partitioned spans table (PostgreSQL only)")
    store.execute(
        "INSERT INTO ragtrail_partitioning (key, value) VALUES ('interval', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (interval,),
    )
    parts = getattr(store, "_partitions", None)
    if parts is not None:
        parts.interval = interval


# -------------------------------------------------------------------------------------- the writer's side
class Partitions:
    """One PostgreSQL store's knowledge of its partitions: makes the ones ahead at open and the missing
    ones for a batch before it is written. Never raises into the writer: a failure is logged and the rows
    go to ``spans_default``."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.enabled = is_partitioned(store)
        self.interval = "daily"
        self._known: list[tuple[int, int, str]] = []
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self.lock_timeout_ms = 10_000
        self._ahead_due = time.monotonic() + 3600.0  # a long-lived writer keeps the days ahead made
        if self.enabled:
            rows = store.query("SELECT value FROM ragtrail_partitioning WHERE key = 'interval'")
            if rows and rows[0][0] in INTERVALS:
                self.interval = str(rows[0][0])
            self._known = _bounds(_QueryCursor(store))[0]

    def _covered(self, ts: int) -> bool:
        return any(a <= ts < b for a, b, _ in self._known)

    def ensure(self, ts_list: Iterable[int]) -> list[str]:
        """Make the partitions that hold ``ts_list`` (ns) if missing; returns the names made."""
        if not self.enabled:
            return []
        # every interval (and every clipped range) starts and ends at midnight UTC: one check per day
        days = {t // _DAY_NS for t in ts_list if isinstance(t, int) and not isinstance(t, bool)}
        missing = sorted(d * _DAY_NS for d in days if not self._covered(d * _DAY_NS))[:_MAX_NEW]
        if not missing or time.monotonic() < self._retry_at:
            return []
        with self._lock:
            try:
                with self.store.transaction() as cur:
                    made = _create(cur, missing, self.interval, self.lock_timeout_ms)
                    self._known = _bounds(cur)[0]
            except StoreError as exc:
                self._retry_at = time.monotonic() + 30.0
                warn_once(f"partition-create:{self.store.url}", "ragtrail: could not make a spans partition in %s "
                          "(%s); the rows go to spans_default until the next try", self.store.url, exc)  # fmt: skip
                return []
        if made:
            logger.info("ragtrail: made spans partitions %s", ", ".join(made))
        return made

    def ensure_rows(self, rows: Sequence[Sequence[Any]]) -> list[str]:
        """Make the partitions ``rows`` (SPAN_COLUMNS order) need; once an hour also the days ahead."""
        made = self.ensure([r[_START] for r in rows if len(r) > _START])
        if self.enabled and time.monotonic() >= self._ahead_due:
            self._ahead_due = time.monotonic() + 3600.0
            made += self.ensure_ahead()
        return made

    def ensure_ahead(self, now_ns: int | None = None) -> list[str]:
        """The partitions from the current interval to ``RAGTRAIL_PG_PARTITIONS_AHEAD`` days ahead, and
        those of rows left in ``spans_default`` by a creation that failed (they move in)."""
        if not self.enabled:
            return []
        now_ns = time.time_ns() if now_ns is None else now_ns
        stranded: list[int] = []
        try:  # normally empty: a cheap scan
            stranded = [int(r[0]) * _DAY_NS for r in self.store.query(
                f"SELECT DISTINCT FLOOR(start_time_ns / 86400000000000.0)::BIGINT FROM {DEFAULT_PARTITION} LIMIT ?",  # noqa: S608
                (_MAX_NEW,))]  # fmt: skip
        except StoreError:
            pass
        return self.ensure(_now_ahead(now_ns, _ahead_days()) + stranded)

    def forget(self) -> None:
        """Read the catalogue again on next use (after partitions were dropped)."""
        with self._lock:
            self._known = _bounds(_QueryCursor(self.store))[0] if self.enabled else []


# -------------------------------------------------------------------------------------- retention
def drop_old_partitions(
    store: Any,
    cutoff_ns: int,
    *,
    protect: set[str],
    project: str | None,
    has_feedback: bool,
    dry_run: bool,
    lock_timeout_ms: int = 5_000,
) -> dict[str, Any]:
    """Detach and drop the partitions entirely older than ``cutoff_ns`` that hold no protected trace, no
    trace that goes on after the cutoff, and (with ``project``) only that project's spans. Returns
    ``{"partitions": [names], "spans": n, "traces": n, "feedback": n, "skipped": [names], "notes": [...],
    "trace_ids": {ids in the dropped partitions}, "longest_s": s}``;
    rows of skipped partitions are left to the row-by-row prune."""
    seen: set[str] = set()
    out: dict[str, Any] = {"partitions": [], "spans": 0, "traces": 0, "feedback": 0, "skipped": [], "notes": [],
                           "trace_ids": seen, "longest_s": 0.0}  # fmt: skip
    if not is_partitioned(store):
        return out
    bounds, _ = _bounds(_QueryCursor(store))
    for _lo, hi, name in bounds:
        if hi > cutoff_ns:
            break
        if project is not None and store.query(
            f"SELECT 1 FROM {name} WHERE project IS DISTINCT FROM ? LIMIT 1",  # noqa: S608 - catalogue name
            (project,),
        ):
            out["skipped"].append(name)
            continue
        ids = {str(r[0]) for r in store.query(f"SELECT DISTINCT trace_id FROM {name}")}  # noqa: S608
        if ids & protect or store.query(
            f"SELECT 1 FROM spans s WHERE s.start_time_ns >= ? AND s.trace_id IN "  # noqa: S608 - catalogue name
            f"(SELECT trace_id FROM {name}) LIMIT 1",
            (cutoff_ns,),
        ):
            out["skipped"].append(name)
            continue
        n = int(store.query(f"SELECT COUNT(*) FROM {name}")[0][0])  # noqa: S608
        if dry_run:
            out["spans"] += n
            out["traces"] += len(ids - seen)
            seen |= ids
            out["partitions"].append(name)
            continue
        t0 = time.monotonic()
        try:
            with store.transaction() as cur:
                cur.execute(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
                if has_feedback:
                    cur.execute(f"DELETE FROM feedback WHERE trace_id IN (SELECT trace_id FROM {name})")  # noqa: S608
                    out["feedback"] += cur.rowcount
                cur.execute(f"ALTER TABLE spans DETACH PARTITION {name}")
                cur.execute(f"DROP TABLE {name}")
        except StoreError as exc:
            out["notes"].append(f"partition {name} not dropped ({exc}); its rows are deleted row by row")
            out["skipped"].append(name)
            continue
        out["longest_s"] = max(out["longest_s"], time.monotonic() - t0)
        out["spans"] += n
        out["traces"] += len(ids - seen)
        seen |= ids
        out["partitions"].append(name)
    parts = getattr(store, "_partitions", None)
    if out["partitions"] and not dry_run and parts is not None:
        parts.forget()
    return out
