"""Prune throughput, and what a prune does to a writer's latency, on SQLite and PostgreSQL.

A store is filled with ``--traces`` old traces (5 spans each, 40 days old). A writer thread then commits
one 20-span batch after another (like the store exporter) for a fixed time without a prune, and again
while ``prune(store, "30d")`` deletes every old trace in batches of ``--batch`` traces. Reported: spans
deleted per second, and the writer's commit latency (median, p99, max) without and during the prune::

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.retention                    # SQLite, ~1 min
    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.retention --pg postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
import uuid
from typing import Any

DAY = 86400


def _rows(n_traces: int, start_s: float, spans: int = 5) -> list[tuple[Any, ...]]:
    from ragtrail.store import SPAN_COLUMNS

    out = []
    attrs = '{"ragtrail.input.value": "' + "x" * 400 + '"}'
    for _ in range(n_traces):
        tid = uuid.uuid4().hex
        for i in range(spans):
            d = {
                "trace_id": tid, "span_id": f"{i + 1:016x}", "parent_span_id": None if i == 0 else f"{1:016x}",
                "name": "step", "kind": "CHAIN", "start_time_ns": int((start_s + i) * 1e9),
                "end_time_ns": int((start_s + i) * 1e9) + 1000, "duration_ms": 0.001, "status": "OK",
                "project": "bench", "attributes": attrs,
            }  # fmt: skip
            out.append(tuple(d.get(c) for c in SPAN_COLUMNS))
    return out


def _writer(store: Any, stop: threading.Event, lat: list[float]) -> None:
    while not stop.is_set():
        rows = _rows(4, time.time())
        t0 = time.perf_counter()
        store.write_spans(rows)
        lat.append(time.perf_counter() - t0)
        time.sleep(0.005)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


def run(url: str, n_traces: int, batch: int, quiet_s: float) -> None:
    from ragtrail.store import open_store
    from ragtrail.store._retention import prune

    store = open_store(url)
    old = time.time() - 40 * DAY
    for i in range(0, n_traces, 5000):
        store.write_spans(_rows(min(5000, n_traces - i), old))
    # writer alone
    lat0: list[float] = []
    stop = threading.Event()
    th = threading.Thread(target=_writer, args=(store, stop, lat0))
    th.start()
    time.sleep(quiet_s)
    stop.set()
    th.join()
    # writer during the prune
    lat1: list[float] = []
    stop = threading.Event()
    th = threading.Thread(target=_writer, args=(store, stop, lat1))
    th.start()
    res = prune(store, "30d", batch_traces=batch)
    stop.set()
    th.join()
    print(f"\n{store.kind}: {n_traces} traces × 5 spans, batches of {batch} traces")
    print(f"  prune: {res.spans_deleted} spans in {res.seconds:.2f} s = {res.spans_per_s:,.0f} spans/s "
          f"({res.batches} batches, longest {res.longest_batch_s * 1000:.0f} ms)")  # fmt: skip
    for name, lat in (("writer alone", lat0), ("writer during prune", lat1)):
        print(f"  {name:20s} {len(lat):5d} commits  median {statistics.median(lat) * 1000:6.1f} ms  "
              f"p99 {_pct(lat, 0.99):6.1f} ms  max {max(lat) * 1000:6.1f} ms")  # fmt: skip
    print(f"  p99 ratio during/alone: {_pct(lat1, 0.99) / _pct(lat0, 0.99):.2f}×")
    store.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=40_000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--pg", default=None, help="also run on this PostgreSQL URL (a fresh schema is made and dropped)")
    args = ap.parse_args(argv)
    print(f"uptime: {os.getloadavg()}")
    with tempfile.TemporaryDirectory() as d:
        run(os.path.join(d, "bench.db"), args.traces, args.batch, quiet_s=3.0)
    if args.pg:
        import psycopg

        schema = "rt_bench_" + uuid.uuid4().hex[:8]
        with psycopg.connect(args.pg, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {schema}")
        try:
            sep = "&" if "?" in args.pg else "?"
            run(f"{args.pg}{sep}options=-csearch_path%3D{schema}", args.traces, args.batch, quiet_s=3.0)
        finally:
            with psycopg.connect(args.pg, autocommit=True) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
