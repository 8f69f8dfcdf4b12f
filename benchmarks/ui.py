"""`ragtrail ui` on a large store: server time of the trace list, of each filter and of a 5,000-span
trace; first paint of that trace's waterfall in headless Chromium; the server's RSS.

A SQLite store is generated (default 1,000,000 spans in 100,000 traces of 10 spans over 7 days, 2% of
traces with an error, 5 models, plus one trace of 5,000 spans), then ``ragtrail ui`` runs in its own
process and every page is fetched over loopback ``--repeat`` times (the time is the whole HTTP
round trip on 127.0.0.1: an upper bound of the server time). In the same run it compares the first
page with the previous design's query (``Client.traces_df``-style ``GROUP BY`` over every span) and a
deep keyset page with the same page by ``OFFSET``, and prints the ratios.

    .venv/bin/python -m benchmarks.ui                       # 1,000,000 spans
    .venv/bin/python -m benchmarks.ui --traces 20000        # a smaller store (200,000 spans)
    .venv/bin/python -m benchmarks.ui --store /tmp/big.db   # reuse a store generated before
    .venv/bin/python -m benchmarks.ui --pg postgresql://postgres@127.0.0.1:5432/test --traces 20000

Goals (issue 14): list p95 < 150 ms, filters < 300 ms, the 5,000-span trace painted < 1 s, RSS < 300 MB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

MODELS = ["gpt-4o", "gpt-4o-mini", "claude-3-5-sonnet", "llama-3.1-8b", "mistral-small"]
KINDS = ["CHAIN", "RETRIEVER", "EMBEDDING", "RERANKER", "LLM", "TOOL", "CHAIN", "LLM", "EVALUATOR", "AGENT"]
BIG_TRACE = "b" * 32
DAY_NS = 86_400_000_000_000


def generate(path: str, n_traces: int, spans_per_trace: int = 10, big: int = 5000, seed: int = 0) -> int:
    """Write the synthetic store; returns the number of spans."""
    from ragtrail.store import open_store

    rng = random.Random(seed)
    store = open_store(path)
    end_ns = time.time_ns()
    start_ns = end_ns - 7 * DAY_NS
    step = (end_ns - start_ns) // max(1, n_traces)
    rows: list[tuple[Any, ...]] = []
    n = 0

    def flush() -> None:
        nonlocal rows
        store.write_spans(rows)
        rows = []

    for t in range(n_traces):
        tid = f"{t:032x}"
        t0 = start_ns + t * step
        project = "bench" if t % 10 else "other"
        error_at = rng.randrange(1, spans_per_trace) if rng.random() < 0.02 else -1
        word = "zebra" if t % 1000 == 0 else "topic"
        total = rng.randint(200, 4000) * 1_000_000
        for s in range(spans_per_trace):
            kind = KINDS[s % len(KINDS)]
            sid = f"{t:08x}{s:08x}"
            st = t0 + (0 if s == 0 else s * total // (spans_per_trace + 1))
            en = t0 + total if s == 0 else st + total // (spans_per_trace + 2)
            model = MODELS[t % len(MODELS)] if kind == "LLM" else None
            it = 300 + t % 500 if model else None
            ot = 40 + t % 60 if model else None
            cost = (it * 2.5e-6 + ot * 1e-5) if model else None  # type: ignore[operator]
            attrs: dict[str, Any] = {
                "ragtrail.span.kind": kind,
                "ragtrail.input.value": f"question {t} about {word} {t % 97}",
            }
            if model:
                attrs.update({"gen_ai.request.model": model, "gen_ai.usage.input_tokens": it,
                              "gen_ai.usage.output_tokens": ot, "ragtrail.cost.usd": cost})  # fmt: skip
            status = "ERROR" if s == error_at else "OK"
            rows.append((
                tid, sid, None if s == 0 else f"{t:08x}{0:08x}", f"rag-step-{s}" if s else "rag", kind, st, en,
                (en - st) / 1e6, status, "failed" if status == "ERROR" else None, model, it, ot, cost, project,
                json.dumps(attrs), None, None,
            ))  # fmt: skip
            n += 1
        if len(rows) >= 50_000:
            flush()
    t0 = end_ns - 60_000_000_000
    for s in range(big):  # one deep, wide trace: a chain of 50 levels, the rest fanned out under them
        parent = None if s == 0 else f"{0xBB:08x}{(s - 1 if s < 50 else s % 50):08x}"
        st = t0 + s * 1_000_000
        rows.append((
            BIG_TRACE, f"{0xBB:08x}{s:08x}", parent, f"step-{s}", KINDS[s % len(KINDS)], st, st + 900_000 + (big - s) * 1000,
            0.9, "OK", None, None, None, None, None, "bench", json.dumps({"ragtrail.input.value": f"big {s}"}), None, None,
        ))  # fmt: skip
        n += 1
    flush()
    if store.kind == "postgresql":
        store.execute("ANALYZE spans")  # what autovacuum would do shortly after a bulk load
    store.close()
    return n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        r.read()
        assert r.status == 200, url
    return (time.perf_counter() - t) * 1000


def _stats(ms: list[float]) -> tuple[float, float]:
    s = sorted(ms)
    return statistics.median(s), s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]


def _sql_ms(store: Any, sql: str, params: tuple[Any, ...] = (), repeat: int = 3) -> float:
    best = []
    for _ in range(repeat):
        t = time.perf_counter()
        store.query(sql, params)
        best.append((time.perf_counter() - t) * 1000)
    return statistics.median(best)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", type=int, default=100_000, help="traces of 10 spans to generate")
    ap.add_argument("--store", default=None, help="use (or create) this SQLite file")
    ap.add_argument("--repeat", type=int, default=20, help="requests per page")
    ap.add_argument("--pg", metavar="URL", default=None, help="benchmark PostgreSQL at URL (a fresh schema)")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="ragtrail-ui-bench-")
    path = args.pg or args.store or os.path.join(tmp, "ui.db")
    args.fresh_schema = bool(args.pg)
    from ragtrail.store import open_store

    is_url = "://" in path
    if is_url and args.fresh_schema:  # PostgreSQL: a schema of its own, dropped afterwards
        import psycopg

        schema = "rt_uibench_" + os.urandom(4).hex()
        with psycopg.connect(path, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        base_url, path = path, path + ("&" if "?" in path else "?") + f"options=-csearch_path%3D{schema}"
    if is_url and args.fresh_schema or not is_url and not os.path.exists(path):
        t = time.perf_counter()
        n = generate(path, args.traces)
        print(f"generated {n:,} spans ({args.traces:,} traces + one of 5,000 spans) in {time.perf_counter() - t:.0f} s")
    store = open_store(path)
    n_spans = store.count_spans()
    size = "" if is_url else f", {os.path.getsize(path) / 1e6:.0f} MB"
    print(f"store: {store.url}  {n_spans:,} spans{size};  load: {os.getloadavg()}")

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]))
    server = subprocess.Popen(
        [sys.executable, "-c", "from ragtrail.cli import main; main()", "ui", "--store", path, "--port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                _get(base + "/api/traces?project=none")
                break
            except OSError:
                if time.time() > deadline or server.poll() is not None:
                    raise RuntimeError("the ui server did not start") from None
                time.sleep(0.2)
        first = json.loads(urllib.request.urlopen(base + "/api/traces").read())
        cursor = first["next"]
        pages = {
            "trace list, first page (JSON)": "/api/traces",
            "trace list, first page (HTML)": "/traces",
            "trace list, page 2": f"/api/traces?after={cursor}",
            "filter project=bench": "/api/traces?project=bench",
            "filter last 24 h": f"/api/traces?start={time.time_ns() - DAY_NS}",
            "filter kind=TOOL": "/api/traces?kind=TOOL",
            "filter errors only": "/api/traces?errors=1",
            "filter model=llama-3.1-8b": "/api/traces?model=llama-3.1-8b",
            "filter name=rag-step-5": "/api/traces?name=rag-step-5",
            "filter min latency 3 s": "/api/traces?min_ms=3000",
            "filter min cost $0.002": "/api/traces?min_cost=0.002",
            "filter text 'zebra' (0.1%)": "/api/traces?q=zebra",
            "sort by duration": "/api/traces?sort=duration",
            "sort by cost": "/api/traces?sort=cost",
            "5,000-span trace (JSON)": f"/api/traces/{BIG_TRACE}",
            "5,000-span trace (HTML)": f"/traces/{BIG_TRACE}",
            "overview (14 days)": "/api/overview",
        }
        print(f"\n{'page':34} {'p50 ms':>9} {'p95 ms':>9}   ({args.repeat} requests each, loopback round trip)")
        results = {}
        for label, p in pages.items():
            _get(base + p)  # warm
            reps = args.repeat if "sort by" not in label and "overview" not in label else max(3, args.repeat // 5)
            ms = [_get(base + p) for _ in range(reps)]
            results[label] = _stats(ms)
            print(f"{label:34} {results[label][0]:9.1f} {results[label][1]:9.1f}")

        paint = None
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium:
            from playwright.sync_api import sync_playwright

            with sync_playwright() as pw:
                b = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
                times, complete = [], []
                for _ in range(5):
                    page = b.new_page(viewport={"width": 1400, "height": 900})
                    page.goto(f"{base}/traces/{BIG_TRACE}")
                    page.wait_for_selector("#waterfall.complete", timeout=60_000)  # (wait_for_function: CSP)
                    times.append(float(page.evaluate("window.ragtrailWaterfallPainted")))
                    complete.append(float(page.evaluate("window.ragtrailWaterfallComplete")))
                    assert page.locator(".wf-row").count() == 5000
                    page.close()
                b.close()
            paint = statistics.median(times)
            print(f"\n5,000-span waterfall painted (navigation start -> frame after the first bars are placed): "
                  f"median {paint:.0f} ms of 5 (min {min(times):.0f}, max {max(times):.0f}); all 5,000 rows in "
                  f"place: median {statistics.median(complete):.0f} ms")  # fmt: skip
        try:
            import psutil

            rss = psutil.Process(server.pid).memory_info().rss / 1e6
        except ImportError:  # pragma: no cover
            rss = float("nan")
        print(f"server RSS after all pages: {rss:.0f} MB")

        # the same run: the previous design's query and OFFSET paging
        gb = _sql_ms(store, "SELECT trace_id, MIN(start_time_ns), COUNT(*), SUM(cost_usd) FROM spans "
                            "GROUP BY trace_id ORDER BY MIN(start_time_ns) DESC LIMIT 50")  # fmt: skip
        from ragtrail.store import _queries as q

        t = time.perf_counter()
        q.list_traces(store)
        ks_first = (time.perf_counter() - t) * 1000
        n_roots = int(store.query("SELECT COUNT(*) FROM spans WHERE parent_span_id IS NULL")[0][0])
        deep = max(1, min(1000, n_roots // 50 - 1))  # the page to compare (page 1,000 on the default store)
        order = "ORDER BY start_time_ns DESC, trace_id DESC"
        s0, tid = store.query(
            f"SELECT start_time_ns, trace_id FROM spans WHERE parent_span_id IS NULL {order} LIMIT 1 OFFSET ?",  # noqa: S608
            (deep * 50 - 1,),
        )[0]
        ks = _sql_ms(store, "SELECT trace_id FROM spans WHERE parent_span_id IS NULL AND (start_time_ns, trace_id) "  # noqa: S608
                            f"< (?, ?) {order} LIMIT 50", (s0, tid))  # fmt: skip
        off = _sql_ms(
            store, f"SELECT trace_id FROM spans WHERE parent_span_id IS NULL {order} LIMIT 50 OFFSET {deep * 50}"
        )  # noqa: S608
        print(f"\nfirst page: keyset on root spans {ks_first:.1f} ms (whole page with aggregates) vs the previous "
              f"design's GROUP BY over all spans {gb:.0f} ms -> {gb / ks_first:.0f}x faster")  # fmt: skip
        print(f"page {deep + 1} (ids only): keyset {ks:.2f} ms vs OFFSET {off:.2f} ms -> {off / ks:.0f}x faster")

        lp95 = results["trace list, first page (JSON)"][1]
        fp95 = max(v[1] for k, v in results.items() if k.startswith("filter"))
        print("\ngoals: list p95 < 150 ms: {} ({:.0f}); filters p95 < 300 ms: {} (worst {:.0f}); "
              "5,000-span trace painted < 1 s: {} ({}); RSS < 300 MB: {} ({:.0f})".format(
                  "met" if lp95 < 150 else "MISSED", lp95, "met" if fp95 < 300 else "MISSED", fp95,
                  "met" if paint is not None and paint < 1000 else "MISSED", f"{paint:.0f}" if paint else "n/a",
                  "met" if rss < 300 else "MISSED", rss))  # fmt: skip
        print(f"load after: {os.getloadavg()}")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)  # the generated store, unless --store named one elsewhere
        if args.pg:
            import psycopg

            store.close()
            with psycopg.connect(base_url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
