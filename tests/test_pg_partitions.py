"""PostgreSQL partitioning of spans by time (issue 16, migration 11): the migration of an existing store,
partitions ahead and on demand (also from two processes at once, also over rows already in the default
partition), retention by dropping partitions. The real PostgreSQL server; SQLite only for the no-op."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import ragtrail.store._base as store_mod
import ragtrail.store._postgres as pg_mod
from ragtrail.store import SPAN_COLUMNS, open_store
from ragtrail.store._migrations import LATEST, MIGRATIONS
from ragtrail.store._partitions import interval_bounds, list_partitions, partition_name, set_partition_interval
from ragtrail.store._retention import prune

DAY = 86400
NS = 10**9
TODAY_NOON = (int(time.time()) // DAY) * DAY + DAY / 2


def _rows(trace_id: str, starts_s: list[float], project: str = "app") -> list[tuple[object, ...]]:
    out = []
    for i, s in enumerate(starts_s):
        d = {
            "trace_id": trace_id, "span_id": f"{i + 1:016x}", "parent_span_id": None if i == 0 else f"{1:016x}",
            "name": "root" if i == 0 else "child", "kind": "CHAIN", "start_time_ns": int(s * NS),
            "end_time_ns": int(s * NS) + 1000, "duration_ms": 0.001, "status": "OK", "project": project,
            "attributes": json.dumps({"x": "y" * 50}),
        }  # fmt: skip
        out.append(tuple(d.get(c) for c in SPAN_COLUMNS))
    return out


def _where(store, trace_id: str) -> set[str]:  # type: ignore[no-untyped-def]
    """The partitions holding ``trace_id``'s spans."""
    return {r[0] for r in store.query("SELECT tableoid::regclass::text FROM spans WHERE trace_id = ?", (trace_id,))}


def _expected(start_s: float, interval: str = "daily") -> str:
    return partition_name(interval_bounds(int(start_s * NS), interval)[0])


def _exists(store, name: str) -> bool:  # type: ignore[no-untyped-def]
    return store.query("SELECT to_regclass(?) IS NOT NULL", (name,))[0][0]


def _relkind(store) -> str:  # type: ignore[no-untyped-def]
    return store.query("SELECT relkind FROM pg_class WHERE oid = to_regclass('spans')")[0][0]


# the span columns before migration 13 (cached_input_tokens), which a schema-10 store has
_COLUMNS_10 = SPAN_COLUMNS[: SPAN_COLUMNS.index("cached_input_tokens")]


def test_migration_11_moves_an_existing_unpartitioned_store(pg_url, monkeypatch):
    # a store written by the release before (schema 10: spans a plain table)
    monkeypatch.setattr(store_mod, "MIGRATIONS", [m for m in MIGRATIONS if m[0] <= 10])
    monkeypatch.setattr(store_mod, "LATEST", 10)
    monkeypatch.setattr(store_mod, "SPAN_COLUMNS", _COLUMNS_10)
    monkeypatch.setattr(pg_mod, "SPAN_COLUMNS", _COLUMNS_10)
    old = open_store(pg_url)
    assert old.schema_version() == 10 and _relkind(old) == "r"
    indexes_before = {r[0] for r in old.query("SELECT indexname FROM pg_indexes WHERE tablename = 'spans'")}
    traces = {}
    for days_ago in (400, 30, 3, 1, 0):
        tid = uuid.uuid4().hex
        starts = [TODAY_NOON - days_ago * DAY + i for i in range(3)]
        old.write_spans([r[: len(_COLUMNS_10)] for r in _rows(tid, starts)])
        traces[tid] = starts[0]
    late_night = uuid.uuid4().hex  # a trace across midnight: its spans land in two partitions
    late = _rows(late_night, [TODAY_NOON - 2 * DAY - DAY / 2 - 1, TODAY_NOON - 2 * DAY - DAY / 2 + 1])
    old.write_spans([r[: len(_COLUMNS_10)] for r in late])
    n_before = old.count_spans()
    old.close()

    monkeypatch.undo()
    store = open_store(pg_url)  # runs migration 11 (and those after it)
    assert store.schema_version() == LATEST and _relkind(store) == "p"
    assert store.count_spans() == n_before == 17
    for tid, start in traces.items():
        assert _where(store, tid) == {_expected(start)}
    assert _where(store, late_night) == {_expected(TODAY_NOON - 3 * DAY), _expected(TODAY_NOON - 2 * DAY)}
    names = [p["name"] for p in list_partitions(store)]
    assert names[-1] == "spans_default"
    for d in range(8):  # today and RAGTRAIL_PG_PARTITIONS_AHEAD (7) days ahead
        assert _expected(TODAY_NOON + d * DAY) in names
    assert not _exists(store, "spans_unpartitioned")
    assert store.query("SELECT COUNT(*) FROM spans_default")[0][0] == 0
    # the same indexes, now on the partitioned table; the key includes the partition key
    indexes_after = {r[0] for r in store.query("SELECT indexname FROM pg_indexes WHERE tablename = 'spans'")}
    assert indexes_after == indexes_before
    key = store.query(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = to_regclass('spans') AND contype = 'p'"
    )[0][0]
    assert key == "PRIMARY KEY (trace_id, span_id, start_time_ns)"
    # re-inserting spans that were migrated is still a no-op (idempotent on trace, span and start time)
    tid = next(iter(traces))
    again = _rows(tid, [traces[tid] + i for i in range(3)])
    assert store.write_spans(again) == 0
    assert store.count_spans() == 17
    # reads (the UI's and Client's queries) go on working over the partitions
    from ragtrail import Client

    client = Client(pg_url)
    assert len(client.spans_df()) == 17
    # a second open does nothing more (the migration is recorded, the table already partitioned)
    store.close()
    assert open_store(pg_url).count_spans() == 17


def test_sqlite_records_migration_11_as_a_no_op(tmp_path):
    store = open_store(str(tmp_path / "s.db"))
    assert store.schema_version() == LATEST
    assert store.query("SELECT name FROM ragtrail_migrations WHERE version = 11") == [("pg_spans_partitioned_by_time",)]
    tid = uuid.uuid4().hex
    store.write_spans(_rows(tid, [TODAY_NOON]))
    assert store.write_spans(_rows(tid, [TODAY_NOON])) == 0 and store.count_spans() == 1


def test_writes_land_in_their_partitions_made_on_demand(pg_url):
    store = open_store(pg_url)
    past, future = 946_684_800.0 + 3600, 4_102_444_800.0 + 7 * DAY  # 2000-01-01, 2100-01-08
    assert not _exists(store, "spans_p20000101") and not _exists(store, "spans_p21000108")
    for start in (past, future, TODAY_NOON):
        tid = uuid.uuid4().hex
        assert store.write_spans(_rows(tid, [start, start + 1])) == 2
        assert _where(store, tid) == {_expected(start)}
    assert _exists(store, "spans_p20000101") and _exists(store, "spans_p21000108")
    assert store.query("SELECT COUNT(*) FROM spans_default")[0][0] == 0
    # a weekly interval from now on: a new partition is a week from Monday, clipped so as not to overlap
    set_partition_interval(store, "weekly")
    tid = uuid.uuid4().hex
    store.write_spans(_rows(tid, [future + DAY]))  # 2100-01-09: the Monday 2100-01-04's week overlaps 01-08
    assert _where(store, tid) == {"spans_p21000109"}
    bounds = {p["name"]: (p["lo_ns"], p["hi_ns"]) for p in list_partitions(store)}
    assert bounds["spans_p21000109"] == (4_103_136_000 * NS, 4_103_308_800 * NS)  # Saturday to Monday


def test_rows_already_in_the_default_partition_move_into_a_new_partition(pg_url):
    store = open_store(pg_url)
    start = 1_500_000_000.0  # 2017-07-14: no partition yet
    early = uuid.uuid4().hex
    cols = ", ".join(SPAN_COLUMNS)
    marks = ", ".join("?" * len(SPAN_COLUMNS))
    # written while no partition covered the range (as a failed creation would leave it)
    store.execute(f"INSERT INTO spans ({cols}) VALUES ({marks})", _rows(early, [start])[0])  # noqa: S608
    assert _where(store, early) == {"spans_default"}
    late = uuid.uuid4().hex
    assert store.write_spans(_rows(late, [start + 60])) == 1  # makes the partition: the default's row moves
    assert _where(store, early) == _where(store, late) == {"spans_p20170714"}
    assert store.query("SELECT COUNT(*) FROM spans_default")[0][0] == 0
    assert store.write_spans(_rows(early, [start])) == 0  # still idempotent after the move


def test_a_creation_that_cannot_get_its_lock_loses_nothing(pg_url):
    import psycopg

    store = open_store(pg_url)
    store._partitions.lock_timeout_ms = 200
    start = 1_600_000_000.0  # 2020-09-13
    blocker = psycopg.connect(pg_url)  # a long read holding spans: the CREATE cannot get its lock
    blocker.execute("SELECT COUNT(*) FROM spans").fetchall()
    try:
        first = uuid.uuid4().hex
        assert store.write_spans(_rows(first, [start, start + 1])) == 2
        assert _where(store, first) == {"spans_default"} and not _exists(store, "spans_p20200913")
    finally:
        blocker.rollback()
        blocker.close()
    second = uuid.uuid4().hex
    assert store.write_spans(_rows(second, [start + 2])) == 1  # within the 30 s before the next try
    assert _where(store, second) == {"spans_default"}
    reopened = open_store(pg_url)  # opening the store moves rows stranded in the default partition
    assert _where(reopened, first) == _where(reopened, second) == {"spans_p20200913"}
    assert reopened.count_spans() == 3 and reopened.query("SELECT COUNT(*) FROM spans_default")[0][0] == 0
    store._partitions._retry_at = 0.0  # the first store's next try: the partition exists now
    third = uuid.uuid4().hex
    assert store.write_spans(_rows(third, [start + 3])) == 1 and _where(store, third) == {"spans_p20200913"}


_WRITER = textwrap.dedent(
    """
    import sys, time, json
    from ragtrail.store import SPAN_COLUMNS, open_store
    url, who, go = sys.argv[1], sys.argv[2], float(sys.argv[3])
    store = open_store(url)
    while time.time() < go:
        time.sleep(0.001)
    n = 0
    for b in range(20):
        rows = []
        for i in range(50):
            d = {"trace_id": f"{who}{b:04d}", "span_id": f"{i:016x}", "name": "s",
                 "start_time_ns": (7_258_118_400 + b * 3600 + i) * 10**9, "end_time_ns": 7_258_118_401 * 10**9}
            rows.append(tuple(d.get(c) for c in SPAN_COLUMNS))
        n += store.write_spans(rows)
    print(json.dumps({"stored": n, "default": store.query("SELECT COUNT(*) FROM spans_default")[0][0]}))
    """
)


def test_two_processes_make_the_same_partitions_at_once(pg_url):
    open_store(pg_url).close()  # migrated once, before the race
    go = time.time() + 4.0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, pg_url, who, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )  # fmt: skip
        for who in ("a", "b")
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
        assert json.loads(out.splitlines()[-1])["stored"] == 1000
    store = open_store(pg_url)
    # 2200-01-01 00:00 + up to 19 h: one day, one partition, made once; nothing left in the default
    assert store.query("SELECT tableoid::regclass::text, COUNT(*) FROM spans GROUP BY 1") == [("spans_p22000101", 2000)]
    assert [p["name"] for p in list_partitions(store)].count("spans_p22000101") == 1
    assert "could not make" not in outs[0][1] + outs[1][1]


def test_retention_drops_whole_partitions_and_deletes_rows_only_at_the_boundary(pg_url):
    store = open_store(pg_url)
    now = TODAY_NOON
    plain = {}
    for days_ago in range(1, 11):  # one trace a day, 4 spans, 10 days back
        tid = uuid.uuid4().hex
        store.write_spans(_rows(tid, [now - days_ago * DAY + i for i in range(4)]))
        plain[days_ago] = tid
    boundary_early = uuid.uuid4().hex  # day -5 before noon: older than the cutoff (noon 5 days ago)
    store.write_spans(_rows(boundary_early, [now - 5 * DAY - 3600]))
    straddle = uuid.uuid4().hex  # starts 8 days ago, goes on today: never cut in two
    store.write_spans(_rows(straddle, [now - 8 * DAY + 10, now]))
    protected = uuid.uuid4().hex  # 7 days ago, with feedback: kept
    store.write_spans(_rows(protected, [now - 7 * DAY + 10]))
    store.execute(
        "INSERT INTO feedback (feedback_id, trace_id, name, value_type, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (uuid.uuid4().hex, protected, "thumbs", "bool", "human", now - 7 * DAY),
    )
    total = store.count_spans()
    assert total == 10 * 4 + 1 + 2 + 1

    dry = prune(store, "5d", now_s=now, dry_run=True)
    assert store.count_spans() == total
    day = {d: _expected(now - d * DAY) for d in range(1, 11)}
    assert all(_exists(store, day[d]) for d in range(1, 11))

    res = prune(store, "5d", now_s=now)
    # days 6, 9, 10: dropped whole; day 8 (the straddling trace) and day 7 (the protected one) are kept
    # as partitions, their other traces deleted row by row; day 5 is the boundary (its early rows deleted)
    assert sorted(res.partitions_dropped) == sorted([day[6], day[9], day[10]])
    for d in (6, 9, 10):
        assert not _exists(store, day[d])
    for d in (1, 2, 3, 4, 5, 7, 8):
        assert _exists(store, day[d])
    gone = [plain[d] for d in range(6, 11)] + [boundary_early]  # day 5's plain trace starts at the cutoff
    assert res.traces_deleted == len(gone) == dry.traces_deleted
    assert res.spans_deleted == 5 * 4 + 1 == dry.spans_deleted
    assert store.count_spans() == total - res.spans_deleted
    for tid in gone:
        assert _where(store, tid) == set()
    for tid in (plain[1], plain[4], plain[5], straddle, protected):
        assert _where(store, tid)
    assert dry.partitions_dropped == res.partitions_dropped
    # pruning again finds nothing; writes still land in today's partition
    again = prune(store, "5d", now_s=now)
    assert again.spans_deleted == 0 and again.partitions_dropped == []
    tid = uuid.uuid4().hex
    assert store.write_spans(_rows(tid, [now])) == 1 and _where(store, tid) == {_expected(now)}


def test_retention_with_a_project_drops_only_partitions_of_that_project(pg_url):
    store = open_store(pg_url)
    now = TODAY_NOON
    a, b, c = uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    store.write_spans(_rows(a, [now - 20 * DAY], project="p1"))
    store.write_spans(_rows(b, [now - 21 * DAY], project="p1"))
    store.write_spans(_rows(c, [now - 21 * DAY + 60], project="p2"))
    res = prune(store, "10d", now_s=now, project="p1")
    assert res.partitions_dropped == [_expected(now - 20 * DAY)]
    assert res.traces_deleted == 2 and _where(store, b) == set() and _where(store, c) == {_expected(now - 21 * DAY)}
