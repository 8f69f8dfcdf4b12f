"""PostgreSQL retention: DELETE on the plain spans table against DROP of time partitions, in one run.

Two fresh schemas get the same ``--spans`` old spans (traces of 5 spans, spread over ``--days`` days,
40 days ago and older) plus a tenth as many recent ones: one store as before migration 11 (``spans`` a
plain table), one partitioned by day. ``prune(store, "30d")`` then removes every old trace on each while a
writer thread commits 20-span batches (like the store exporter); reported: seconds, spans/s, the writer's
commit latency (median, p99) and the ratio plain/partitioned. A third schema measures migration 11 itself
on the plain store's data (the one-off cost of moving an existing table)::

    PYTHONPATH=$PWD/src .venv/bin/python -m benchmarks.pg_partitions                 # 200k spans
    PYTHONPATH=$PWD/src .venv/bin/python -m benchmarks.pg_partitions --quick         # 50k spans
    ... --pg postgresql://user@host/db                                               # another server
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.retention import _pct, _rows, _writer

DAY = 86400


@contextmanager
def _schema(base: str) -> Iterator[str]:
    import psycopg

    schema = "rt_bench_" + uuid.uuid4().hex[:8]
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in base else "?"
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as c:
            c.execute(f"DROP SCHEMA {schema} CASCADE")


def _open(url: str, partitioned: bool) -> Any:
    import ragtrail.store._store as store_mod
    from ragtrail.store._migrations import MIGRATIONS

    if partitioned:
        return store_mod.open_store(url)
    saved = store_mod.MIGRATIONS, store_mod.LATEST
    store_mod.MIGRATIONS, store_mod.LATEST = MIGRATIONS[:-1], MIGRATIONS[-2][0]  # as the release before
    try:
        return store_mod.open_store(url)
    finally:
        store_mod.MIGRATIONS, store_mod.LATEST = saved


def _fill(store: Any, n_spans: int, days: int) -> None:
    per_day = n_spans // 5 // days  # traces a day, spread evenly over the day
    now = time.time()
    for d in range(days):
        start = now - (40 + d) * DAY
        for i in range(0, per_day, 2000):
            rows = []
            for k in range(i, min(per_day, i + 2000)):
                rows += _rows(1, start + k * (DAY - 10) / per_day)
            store.write_spans(rows)
    store.write_spans(_rows(max(1, n_spans // 50), now - 3600))  # recent: kept


def _prune_with_writer(store: Any) -> tuple[Any, list[float]]:
    from ragtrail.store._retention import prune

    lat: list[float] = []
    stop = threading.Event()
    th = threading.Thread(target=_writer, args=(store, stop, lat))
    th.start()
    try:
        res = prune(store, "30d", batch_traces=500)
    finally:
        stop.set()
        th.join()
    return res, lat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=200_000)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="50k spans")
    ap.add_argument("--pg", default=os.environ.get("RAGTRAIL_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"))
    args = ap.parse_args(argv)
    n = 50_000 if args.quick else args.spans
    try:
        import psycopg

        psycopg.connect(args.pg, connect_timeout=3).close()
    except Exception as exc:
        print(f"pg_partitions: no PostgreSQL at {args.pg} ({exc}); skipped")
        return 0
    print(f"load average before: {os.getloadavg()}")
    results = {}
    for label, partitioned in (("plain table, DELETE", False), ("partitioned, DROP", True)):
        with _schema(args.pg) as url:
            store = _open(url, partitioned)
            t = time.perf_counter()
            _fill(store, n, args.days)
            fill_s = time.perf_counter() - t
            before = store.count_spans()
            res, lat = _prune_with_writer(store)
            results[label] = res
            print(f"\n{label}: {before:,} spans filled in {fill_s:.0f} s")
            print(f"  prune: {res.spans_deleted:,} spans, {res.traces_deleted:,} traces in {res.seconds:.2f} s "
                  f"= {res.spans_per_s:,.0f} spans/s; {len(res.partitions_dropped)} partitions dropped, "
                  f"longest transaction {res.longest_batch_s * 1000:.0f} ms")  # fmt: skip
            if lat:
                print(f"  writer during prune: {len(lat)} commits, median {statistics.median(lat) * 1000:.1f} ms, "
                      f"p99 {_pct(lat, 0.99):.1f} ms, max {max(lat) * 1000:.1f} ms")  # fmt: skip
            store.close()
    plain, part = results["plain table, DELETE"], results["partitioned, DROP"]
    assert plain.spans_deleted == part.spans_deleted, (plain.spans_deleted, part.spans_deleted)
    print(f"\nratio DELETE/DROP: {plain.seconds / max(part.seconds, 1e-9):.1f}× "
          f"({plain.seconds:.2f} s vs {part.seconds:.2f} s for the same {part.spans_deleted:,} spans)")  # fmt: skip
    with _schema(args.pg) as url:
        store = _open(url, False)
        _fill(store, n, args.days)
        store.close()
        t = time.perf_counter()
        migrated = _open(url, True)
        mig_s = time.perf_counter() - t
        print(f"migration 11 of a plain store with {migrated.count_spans():,} spans: {mig_s:.1f} s "
              f"({migrated.count_spans() / mig_s:,.0f} spans/s)")  # fmt: skip
        migrated.close()
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
