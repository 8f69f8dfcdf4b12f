"""PostgreSQL and SQLite under load: 8 processes writing spans and eval results at once, same run.

Two modes, each on both back ends:

* ``traced``: every process calls ``ragtrail.init`` into the shared store, emits N spans through
  ``ragtrail.span`` (traces of 10 spans with attributes) and, at the same time in a second thread,
  runs an ``Evaluation`` of M examples (the same evaluation name in every process, so eight runs
  get their versions concurrently), then ``ragtrail.flush``. Throughput counts the user spans from
  the first process's start to the last one's flush.
* ``direct``: every process calls ``Store.write_spans`` with batches of prebuilt span rows.

Afterwards every count is checked exactly (spans per project, run results, run versions 1..P) and
each process reports its warnings/errors logged by ragtrail and its ``ragtrail.stats()``.

    .venv/bin/python -m benchmarks.store_load            # 8 processes x 10,000 spans + 200 results
    .venv/bin/python -m benchmarks.store_load --quick    # 8 x 2,000 spans + 50 results
    .venv/bin/python -m benchmarks.store_load --pg-url postgresql://postgres@127.0.0.1:5432/test

PostgreSQL: ``--pg-url`` or ``$RAGTRAIL_TEST_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``);
a fresh schema is created for the run and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SPANS_PER_TRACE = 10
EVAL_NAME = "load-eval"


# ------------------------------------------------------------------------------------- workers
class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


def _eval_records(n: int) -> list[dict[str, Any]]:
    return [{"id": f"e{i}", "input": f"question {i}", "reference": f"answer {i}"} for i in range(n)]


def _answer(q: str) -> str:
    import ragtrail

    i = int(q.split()[1])
    with ragtrail.span("generate", kind="LLM", attributes={"gen_ai.request.model": "scripted"}):
        return f"answer {i}" if i % 3 else "something else"


def traced_worker(url: str, idx: int, n_spans: int, n_results: int, barrier: Any, out: Any) -> None:
    """One process: spans through ragtrail.span and an Evaluation, into the shared store."""
    import ragtrail
    from ragtrail.evals import Dataset, Evaluation, scorers

    counter = _Counter()
    logging.getLogger("ragtrail").addHandler(counter)
    project = f"load-{idx}"
    ragtrail.init(project=project, store=url)
    ds = Dataset.from_records(_eval_records(n_results), name="load-qa") if n_results else None
    box: dict[str, Any] = {}

    def evaluate() -> None:
        try:
            assert ds is not None
            ev = Evaluation(EVAL_NAME, ds, _answer, [scorers.exact_match(), scorers.token_f1()], max_concurrency=4,
                            progress=False)  # fmt: skip
            t = time.time()
            run = ev.run()
            box.update(run=run.ref, status=run.status, results_s=time.time() - t)
        except Exception as exc:  # reported, and the check fails
            box["error"] = f"{type(exc).__name__}: {exc}"

    barrier.wait()
    start = time.time()
    th = threading.Thread(target=evaluate) if n_results else None
    if th is not None:
        th.start()
    attrs = {"retrieval.top_k": 5, "app.user": "u-123", "app.note": "x" * 200}
    for t in range(n_spans // SPANS_PER_TRACE):
        with ragtrail.span("request", kind="CHAIN", attributes={"app.request": t}):
            for j in range(SPANS_PER_TRACE - 1):
                with ragtrail.span(f"step {j}", kind="RETRIEVER" if j % 2 else "TOOL", attributes=attrs):
                    pass
    if th is not None:
        th.join()
    flushed = ragtrail.flush(300.0)
    end = time.time()
    out.put({"idx": idx, "start": start, "end": end, "flushed": flushed, "stats": ragtrail.stats(),
             "logged": counter.messages, **box})  # fmt: skip
    ragtrail.shutdown()


# a fixed start: a span written twice is the same span, start time included (PostgreSQL's key is
# (trace_id, span_id, start_time_ns) since migration 11, as every OTel exporter re-sends a span unchanged)
_START_NS = 1_764_547_200 * 10**9  # 2025-12-01 UTC


def _rows(idx: int, n: int) -> list[tuple[Any, ...]]:
    now = _START_NS
    attrs = json.dumps({"ragtrail.span.kind": "RETRIEVER", "retrieval.top_k": 5, "app.note": "x" * 200})
    rows = []
    for i in range(n):
        tid = f"{idx:08x}{i // SPANS_PER_TRACE:024x}"
        root = i % SPANS_PER_TRACE == 0
        sid = f"{idx:04x}{i:012x}"
        parent = None if root else f"{idx:04x}{(i - i % SPANS_PER_TRACE):012x}"
        s = now + i * 1000
        rows.append((tid, sid, parent, "step", "RETRIEVER", s, s + 500_000, 0.5, "OK", None, None, None, None, None,
                     f"direct-{idx}", attrs, None, None))  # fmt: skip
    return rows


def direct_worker(url: str, idx: int, n_spans: int, batch: int, barrier: Any, out: Any) -> None:
    """One process: Store.write_spans with batches of prebuilt rows."""
    from ragtrail.store import open_store

    store = open_store(url)
    rows = _rows(idx, n_spans)
    error = None
    barrier.wait()
    start = time.time()
    try:
        for i in range(0, len(rows), batch):
            store.write_spans(rows[i : i + batch])
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    out.put({"idx": idx, "start": start, "end": time.time(), "error": error})
    store.close()


# ------------------------------------------------------------------------------------- driver
def run_load(url: str, mode: str, procs: int, n_spans: int, n_results: int = 0, batch: int = 512) -> dict[str, Any]:
    """Start ``procs`` spawned processes at once on ``url``; return throughput, reports and checks."""
    from ragtrail.store import open_store

    open_store(url).close()  # migrate once up front (concurrent first opens are also safe; not measured here)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    out = ctx.Queue()
    if mode == "traced":
        targets = [(traced_worker, (url, i, n_spans, n_results, barrier, out)) for i in range(procs)]
    else:
        targets = [(direct_worker, (url, i, n_spans, batch, barrier, out)) for i in range(procs)]
    ps = [ctx.Process(target=f, args=a, name=f"store-load-{i}") for i, (f, a) in enumerate(targets)]
    for p in ps:
        p.start()
    reports = [out.get(timeout=1800) for _ in ps]
    for p in ps:
        p.join(60)
    elapsed = max(r["end"] for r in reports) - min(r["start"] for r in reports)
    store = open_store(url)
    prefix = "load" if mode == "traced" else "direct"
    counts = {i: store.count_spans(f"{prefix}-{i}") for i in range(procs)}
    res: dict[str, Any] = {
        "mode": mode, "procs": procs, "spans_per_proc": n_spans, "elapsed_s": elapsed,
        "spans_per_s": procs * n_spans / elapsed if elapsed > 0 else float("inf"),
        "span_counts": counts, "reports": sorted(reports, key=lambda r: r["idx"]),
        "exit_codes": [p.exitcode for p in ps],
    }  # fmt: skip
    if mode == "traced" and n_results:
        rows = store.query("SELECT run_id, version, status FROM runs WHERE name = ?", (EVAL_NAME,))
        res["run_versions"] = sorted(int(r[1]) for r in rows)
        res["run_statuses"] = sorted({str(r[2]) for r in rows})
        ids = [r[0] for r in rows]
        marks = ", ".join("?" * len(ids))
        res["run_results"] = int(store.query(f"SELECT COUNT(*) FROM run_results WHERE run_id IN ({marks})", ids)[0][0])  # noqa: S608
        res["run_examples"] = int(
            store.query(f"SELECT COUNT(*) FROM run_examples WHERE run_id IN ({marks})", ids)[0][0]  # noqa: S608
        )
        res["ok_results"] = int(
            store.query(f"SELECT COUNT(*) FROM run_results WHERE status = 'ok' AND run_id IN ({marks})", ids)[0][0]  # noqa: S608
        )
    store.close()
    return res


def expected_spans(mode: str, n_spans: int, n_results: int) -> int:
    """Spans of one process: its own, plus two per evaluated example (root + the pipeline's LLM span)."""
    return n_spans + (2 * n_results if mode == "traced" else 0)


def problems(res: dict[str, Any], n_results: int = 0) -> list[str]:
    """Everything that went wrong in a :func:`run_load` result (empty: nothing lost, nothing logged)."""
    out = []
    want = expected_spans(res["mode"], res["spans_per_proc"], n_results)
    for i, c in res["span_counts"].items():
        if c != want:
            out.append(f"process {i}: {c} spans stored, expected {want}")
    if any(code != 0 for code in res["exit_codes"]):
        out.append(f"exit codes {res['exit_codes']}")
    for r in res["reports"]:
        if r.get("error"):
            out.append(f"process {r['idx']}: {r['error']}")
        if r.get("logged"):
            out.append(f"process {r['idx']} logged: {r['logged'][:3]}")
        st = r.get("stats")
        if st and (st["dropped"] or st["failed"] or st["export_errors"]):
            out.append(f"process {r['idx']} stats: {st}")
        if "flushed" in r and not r["flushed"]:
            out.append(f"process {r['idx']}: flush timed out")
    if res["mode"] == "traced" and n_results:
        p = res["procs"]
        if res["run_versions"] != list(range(1, p + 1)):
            out.append(f"run versions {res['run_versions']}, expected 1..{p}")
        if res["run_statuses"] != ["finished"]:
            out.append(f"run statuses {res['run_statuses']}")
        if res["run_examples"] != p * n_results or res["run_results"] != p * n_results * 2:
            out.append(f"{res['run_examples']} run_examples / {res['run_results']} run_results, "
                       f"expected {p * n_results} / {p * n_results * 2}")  # fmt: skip
        if res["ok_results"] != p * n_results * 2:
            out.append(f"only {res['ok_results']} results are ok")
    return out


@contextmanager
def pg_schema(base: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL server at ``base``, dropped afterwards."""
    import psycopg

    schema = "rt_load_" + uuid.uuid4().hex[:10]
    with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 x 2,000 spans + 50 results per process")
    ap.add_argument("--procs", type=int, default=8)
    ap.add_argument("--spans", type=int, default=None, help="spans per process (default 10,000; quick 2,000)")
    ap.add_argument("--results", type=int, default=None, help="eval examples per process (default 200; quick 50)")
    ap.add_argument("--repeat", type=int, default=1, help="repeat everything N times; report medians")
    ap.add_argument("--batch", type=int, default=512, help="rows per write_spans call in the direct mode")
    ap.add_argument(
        "--pg-url", default=os.environ.get("RAGTRAIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    a = ap.parse_args(argv)
    n_spans = a.spans or (2_000 if a.quick else 10_000)
    n_spans -= n_spans % SPANS_PER_TRACE
    n_results = a.results if a.results is not None else (50 if a.quick else 200)
    load = os.getloadavg()
    print(f"store_load: {a.procs} processes x {n_spans:,} spans (+ {n_results} eval examples x 2 scorers each in "
          f"the traced mode); {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")  # fmt: skip
    rates: dict[tuple[str, str], list[float]] = {}
    bad: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeat):
            for mode in ("traced", "direct"):
                for backend in ("sqlite", "postgresql"):
                    db = os.path.join(tmp, f"{mode}-{rep}.db")
                    ctx = pg_schema(a.pg_url) if backend == "postgresql" else _nullctx(db)
                    with ctx as url:
                        res = run_load(url, mode, a.procs, n_spans, n_results if mode == "traced" else 0, a.batch)
                    issues = problems(res, n_results if mode == "traced" else 0)
                    bad += [f"{mode}/{backend}: {p}" for p in issues]
                    rates.setdefault((mode, backend), []).append(res["spans_per_s"])
                    extra = ""
                    if mode == "traced" and n_results:
                        v = res["run_versions"]
                        extra = f"; {res['run_results']:,} eval results in runs v{v[0]}..v{v[-1]}"
                    print(f"  {mode:<7} {backend:<10} {a.procs * n_spans:>9,} spans in {res['elapsed_s']:6.2f} s = "
                          f"{res['spans_per_s']:>9,.0f} spans/s; all stored: {'yes' if not issues else 'NO'}{extra}")  # fmt: skip
    for mode in ("traced", "direct"):
        pg, sq = statistics.median(rates[(mode, "postgresql")]), statistics.median(rates[(mode, "sqlite")])
        what = f"median of {a.repeat}" if a.repeat > 1 else "one run"
        print(
            f"  {mode:<7} PostgreSQL {pg:,.0f} spans/s, SQLite {sq:,.0f} spans/s ({what}): ratio PG/SQLite {pg / sq:.2f}"
        )
    for b in bad:
        print("PROBLEM:", b)
    return 1 if bad else 0


@contextmanager
def _nullctx(value: str) -> Iterator[str]:
    yield value


if __name__ == "__main__":
    sys.exit(main())
