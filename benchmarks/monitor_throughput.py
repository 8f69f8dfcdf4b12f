"""Live scoring throughput: ``Monitor.run_once`` against the offline harness on the same traces and scorers
(goal: the monitor scores at least 90% as many traces per second).

Setup: N stored traces (root span with input and output + 2 child spans) in a SQLite store. Scorers:
two plain-Python scorers (token overlap of the answer with the question, answer length) — the same
objects in both blocks.

* ``monitor``  ``Monitor(name, scorers, settle_s=0).run_once()`` from a fresh cursor: reads ready roots
               behind the cursor, loads the traces, scores, commits feedback + cursor per batch;
* ``offline``  what an offline evaluation of the same traces does: ``Client.traces()`` (load),
               ``Dataset.from_traces`` and ``evaluate_traces`` (dataset push, run, scores, results).

Blocks alternate round by round; wall-clock seconds per block, median over rounds; traces/s and the
ratio monitor/offline are printed.

    .venv/bin/python -m benchmarks.monitor_throughput [--traces 3000 --rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import ragtrail
from ragtrail import semconv


def overlap(example: Any, output: Any, trace: Any) -> float:
    q = set(str(example.input).lower().split())
    a = str(output or "").lower().split()
    return sum(w in q for w in a) / max(1, len(a))


def length(example: Any, output: Any, trace: Any) -> float:
    return float(len(str(output or "")))


def _fill(store: str, n: int) -> None:
    from ragtrail.tracing import set_content

    ragtrail.init(project="bench", store=store, schedule_delay_ms=100)
    for i in range(n):
        with ragtrail.context(session_id=f"s{i % 100}"), ragtrail.span("answer") as root:
            set_content(root, semconv.INPUT_VALUE, f"what does topic {i % 37} say about retrieval number {i}?")
            with ragtrail.span("retrieve", kind="RETRIEVER"):
                pass
            with ragtrail.span("llm", kind="LLM"):
                pass
            set_content(root, semconv.OUTPUT_VALUE, f"topic {i % 37} says retrieval {i} matters a lot")
    assert ragtrail.flush(60)
    ragtrail.shutdown()


def _monitor(store: str, name: str) -> int:
    from ragtrail.evals import Monitor

    rep = Monitor(name, [overlap, length], project="bench", store=store, settle_s=0, batch_size=500).run_once()
    return rep.scored


def _offline(store: str, name: str) -> int:
    from ragtrail.evals import Dataset, evaluate_traces

    traces = ragtrail.Client(store).traces("bench", limit=None)
    ds = Dataset.from_traces(traces, name=name)
    run = evaluate_traces(ds, traces, [overlap, length], name=name, store=store)
    return len(run.results_df()) // 2


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--traces", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        store = os.path.join(d, "bench.db")
        _fill(store, args.traces)
        times: dict[str, list[float]] = {"monitor": [], "offline": []}
        for r in range(args.rounds):
            for kind, fn in (("monitor", _monitor), ("offline", _offline)):
                t0 = time.perf_counter()
                n = fn(store, f"{kind}-{r}")
                times[kind].append(time.perf_counter() - t0)
                assert n == args.traces, (kind, n)
    rate = {k: args.traces / statistics.median(v) for k, v in times.items()}
    print(f"scoring {args.traces:,} stored traces with 2 scorers ({args.rounds} rounds, wall clock, median)")
    for k, v in rate.items():
        print(f"  {k:8} {statistics.median(times[k]):6.2f} s   {v:8,.0f} traces/s")
    ratio = rate["monitor"] / rate["offline"]
    print(f"  monitor / offline: {ratio:.2f}x  (goal >= 0.90: {'met' if ratio >= 0.9 else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
