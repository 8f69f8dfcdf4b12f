"""A busy asyncio app with tracing on: does the exporter keep up? This design against the previous one.

The app (one process per variant, run one after the other on the same machine):

* an asyncio service: 50 tasks calling ``ainvoke`` on a real LangChain chain in a loop (9 runs per
  call: parallel retrieval of 5 documents, ~5 KB in all, formatting, prompt, chat model, parser),
  content capture on, SQLite store; the LLM's answers come from LangChain's fake chat model, so the
  event loop is busy all the time (it uses a full core);
* beside it, in a thread, a producer of ``--rate`` content-bearing spans per second (default 5,000;
  5 KB of content each through ``ragtrail.span`` + ``set_content``).

Variants: ``untraced`` (no ``ragtrail.init``: the app's own latency), ``previous`` (the ragtrail tree
at ``--baseline``, extracted with ``git archive``), ``current`` (this checkout with its default,
``writer="auto"``: a writer process once the load calls for one), ``thread`` (this checkout,
``writer="thread"``: always in-process) and ``process`` (``writer="process"``: always a writer
process). Each reports:
spans produced per second vs written per second during the load, drops, the backlog when the load
ends (% of produced, written by the final flush), chain latency p50/p99 and calls/s, peak and final
RSS, store bytes per span, and how long ``Client.spans_df()`` takes per 100k spans.

    .venv/bin/python -m benchmarks.busy_app                 # 40 s per variant
    .venv/bin/python -m benchmarks.busy_app --seconds 20 --rate 5000 --baseline <git ref>
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# the design before issue 24 (per-thread connections, no spool, the row builder it had)
DEFAULT_BASELINE = "ffbae96"
CONCURRENCY = 50
DOC_BYTES = 1024
N_DOCS = 5
WORDS = "retrieval augmented generation tracing span exporter store latency budget cost context window".split()


def _text(seed: int, nbytes: int) -> str:
    """Readable, varied text (so that compression figures are not flattered by repetition)."""
    out: list[str] = []
    n = 0
    x = seed * 2654435761 % 2**32 or 1
    while n < nbytes:
        x = (x * 1103515245 + 12345) % 2**31
        w = WORDS[x % len(WORDS)] + (str(x % 997) if x % 5 == 0 else "")
        out.append(w)
        n += len(w) + 1
    return " ".join(out)[:nbytes]


# ----------------------------------------------------------------------------------------- child
def _build_chain() -> Any:
    import itertools

    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    corpus = [_text(i, DOC_BYTES) for i in range(997)]

    class Docs(BaseRetriever):
        """Returns 5 documents of ~1 KB (a vector store stand-in that costs the loop nothing)."""

        def _docs(self, query: str) -> list[Document]:
            h = hash(query)
            return [
                Document(page_content=corpus[(h + k) % len(corpus)], metadata={"id": f"d{k}"}) for k in range(N_DOCS)
            ]

        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            return self._docs(query)

        async def _aget_relevant_documents(
            self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
        ) -> list[Document]:
            return self._docs(query)

    def fmt(docs: list[Document]) -> str:
        return "\n\n".join(d.page_content for d in docs)

    prompt = ChatPromptTemplate.from_template("Answer from the context.\n{context}\n\nQuestion: {question}")
    # fake LLM answers (LangChain's own fake chat model); everything else is the real chain
    model = GenericFakeChatModel(messages=itertools.cycle(["The answer is in the second document."]))
    return (
        {"context": Docs() | RunnableLambda(fmt), "question": RunnablePassthrough()}
        | prompt
        | model
        | StrOutputParser()
    )


def child(variant: str, seconds: float, rate: int, store: str) -> dict[str, Any]:
    import asyncio

    import psutil

    import ragtrail
    from ragtrail import semconv
    from ragtrail.tracing import set_content

    proc = psutil.Process()
    traced = variant != "untraced"
    if traced:
        writer = {"writer": variant} if variant in ("process", "thread") else {}
        ragtrail.init(project="busy", store=store, capture_content=True, **writer)
        from ragtrail.connectors.langchain import instrument

        instrument()
    chain = _build_chain()
    contents = [_text(10_000 + i, 5 * 1024) for i in range(64)]
    stop = threading.Event()
    produced = [0]
    rss_peak = [proc.memory_info().rss]

    def producer() -> None:
        tick = 0.01
        per_tick = max(1, int(rate * tick))
        nxt = time.perf_counter()
        i = 0
        while not stop.is_set():
            for _ in range(per_tick):
                with ragtrail.span("produce", kind="RETRIEVER") as s:
                    set_content(s, semconv.INPUT_VALUE, contents[i & 63] + f" #{i}")  # a fresh value, as in an app
                i += 1
            produced[0] = i
            nxt += tick
            delay = nxt - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                nxt = time.perf_counter()  # fell behind by a second: do not try to catch up in a burst

    def sampler() -> None:
        while not stop.wait(0.25):
            rss_peak[0] = max(rss_peak[0], proc.memory_info().rss)

    latencies: list[float] = []

    async def worker(k: int) -> None:
        n = 0
        while not stop.is_set():
            t0 = time.perf_counter()
            await chain.ainvoke(f"question {k}-{n}")
            latencies.append(time.perf_counter() - t0)
            n += 1

    async def app() -> None:
        tasks = [asyncio.create_task(worker(k)) for k in range(CONCURRENCY)]
        await asyncio.sleep(seconds)
        stop.set()
        await asyncio.gather(*tasks)

    threads = [threading.Thread(target=producer, daemon=True), threading.Thread(target=sampler, daemon=True)]
    for t in threads:
        t.start()
    cpu0 = proc.cpu_times()
    t0 = time.perf_counter()
    asyncio.run(app())
    elapsed = time.perf_counter() - t0
    cpu1 = proc.cpu_times()
    for t in threads:
        t.join()
    out: dict[str, Any] = {
        "variant": variant,
        "seconds": elapsed,
        "calls": len(latencies),
        "calls_per_s": len(latencies) / elapsed,
        "producer_spans": produced[0],
        "cpu_cores_used": (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / elapsed,
    }
    lat = sorted(latencies)
    out["p50_ms"] = lat[len(lat) // 2] * 1000
    out["p99_ms"] = lat[int(len(lat) * 0.99)] * 1000
    if traced:
        w = getattr(ragtrail.tracing.get_config().store_exporter, "writer", None)
        child_pid = getattr(w, "child_pid", None)
        child_cpu0 = _cpu_of(child_pid)
        at_end = ragtrail.stats()
        rss_end_load = proc.memory_info().rss
        t1 = time.perf_counter()
        c1 = time.thread_time()
        ok = ragtrail.flush(600)
        # the exporter threads' CPU since init, and the final flush's (it exports on the calling thread)
        exporter_cpu = _exporter_thread_cpu(proc) + time.thread_time() - c1
        flush_s = time.perf_counter() - t1
        child_pid = getattr(w, "child_pid", None) or child_pid
        if child_pid is not None:  # the writer process's CPU: during the load, and in all (load + final flush)
            out["writer_cpu_load"] = child_cpu0 / elapsed
            out["writer_proc_us_per_span"] = _cpu_of(child_pid) * 1e6 / max(1, ragtrail.stats()["exported"])
        final = ragtrail.stats()
        total = final["exported"] + final["dropped"] + final["failed"] + final.get("spooled", 0)
        out.update(
            produced=total,
            produced_per_s=total / elapsed,
            written_during_load=at_end["exported"],
            written_per_s=at_end["exported"] / elapsed,
            dropped=final["dropped"],
            failed=final["failed"],
            backlog_at_end=final["exported"] - at_end["exported"],
            backlog_pct=100.0 * (final["exported"] - at_end["exported"]) / max(1, total),
            final_flush_s=flush_s,
            flush_ok=ok,
            rss_end_load_mb=rss_end_load / 2**20,
            exporter_cpu_us_per_span=exporter_cpu * 1e6 / max(1, final["exported"]),
        )
        out["rss_peak_mb"] = max(rss_peak[0], proc.memory_info().rss) / 2**20  # before reading spans back
        cfg = ragtrail.tracing.get_config()
        st = cfg.store
        n = st.count_spans()
        st.query("PRAGMA wal_checkpoint(TRUNCATE)")
        size = os.path.getsize(store) + (os.path.getsize(store + "-wal") if os.path.exists(store + "-wal") else 0)
        out["spans_in_store"] = n
        out["bytes_per_span"] = size / max(1, n)
        ragtrail.shutdown()
        c = ragtrail.Client(store)
        c.spans_df(limit=1)  # pandas imported and the file opened before the timing
        t2 = time.perf_counter()
        df = c.spans_df(limit=100_000)
        out["spans_df_s_per_100k"] = (time.perf_counter() - t2) * 100_000 / max(1, len(df))
    out.setdefault("rss_peak_mb", max(rss_peak[0], proc.memory_info().rss) / 2**20)
    out["rss_final_mb"] = proc.memory_info().rss / 2**20
    return out


def _cpu_of(pid: int | None) -> float:
    """CPU seconds used so far by process ``pid`` (0 when there is none)."""
    import psutil

    if pid is None:
        return 0.0
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


def _exporter_thread_cpu(proc: Any) -> float:
    """CPU seconds used so far by the exporter threads of this process (the BatchSpanProcessors')."""
    ids = {t.native_id for t in threading.enumerate() if t.name.startswith("OtelBatch")}
    return sum(th.user_time + th.system_time for th in proc.threads() if th.id in ids)


# ---------------------------------------------------------------------------------------- parent
def _baseline_tree(ref: str, dest: str) -> str:
    archive = subprocess.run(["git", "-C", ROOT, "archive", ref, "ragtrail"], check=True, capture_output=True).stdout
    os.makedirs(dest, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    return dest


def _run_child(variant: str, pythonpath: str, seconds: float, rate: int, workdir: str) -> dict[str, Any]:
    store = os.path.join(workdir, f"{variant}.db")
    extra = os.environ.get("PYTHONPATH")
    pythonpath = pythonpath + (os.pathsep + extra if extra else "")
    env = dict(os.environ, PYTHONPATH=pythonpath, RAGTRAIL_SPOOL_DIR=os.path.join(workdir, f"spool-{variant}"))
    cmd = [sys.executable, os.path.abspath(__file__), "--child", variant, "--seconds", str(seconds)]
    cmd += ["--rate", str(rate), "--store", store]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--rate", type=int, default=5000, help="producer spans per second (5 KB each)")
    ap.add_argument("--baseline", default=DEFAULT_BASELINE, help="git ref of the previous design")
    ap.add_argument("--baseline-tree", help="a directory holding the previous design's ragtrail/ (instead of git)")
    ap.add_argument("--variants", default="untraced,previous,thread,current,process")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.seconds, args.rate, args.store)))
        return
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="busy-app-") as tmp:
        trees = {"current": ROOT, "untraced": ROOT, "process": ROOT, "thread": ROOT}
        if args.baseline_tree:
            trees["previous"] = os.path.abspath(args.baseline_tree)
        elif "previous" in args.variants:
            trees["previous"] = _baseline_tree(args.baseline, os.path.join(tmp, "previous-tree"))
        for v in args.variants.split(","):
            print(f"running {v} ({args.seconds:.0f} s)...", file=sys.stderr, flush=True)
            results[v] = _run_child(v, trees[v], args.seconds, args.rate, tmp)
    print(f"load average: {os.getloadavg()}, cpus: {os.cpu_count()}, rate asked: {args.rate}/s")
    rows = [
        ("chain calls/s", "calls_per_s", "{:.0f}"),
        ("chain p50 ms", "p50_ms", "{:.1f}"),
        ("chain p99 ms", "p99_ms", "{:.1f}"),
        ("CPU cores used", "cpu_cores_used", "{:.2f}"),
        ("spans produced/s", "produced_per_s", "{:.0f}"),
        ("spans written/s (load)", "written_per_s", "{:.0f}"),
        ("dropped", "dropped", "{:.0f}"),
        ("failed", "failed", "{:.0f}"),
        ("backlog at end %", "backlog_pct", "{:.1f}"),
        ("final flush s", "final_flush_s", "{:.1f}"),
        ("exporter CPU us/span (app)", "exporter_cpu_us_per_span", "{:.1f}"),
        ("writer process cores (load)", "writer_cpu_load", "{:.2f}"),
        ("writer process CPU us/span", "writer_proc_us_per_span", "{:.1f}"),
        ("RSS at end of load MB", "rss_end_load_mb", "{:.0f}"),
        ("RSS peak (load+flush) MB", "rss_peak_mb", "{:.0f}"),
        ("store bytes/span", "bytes_per_span", "{:.0f}"),
        ("spans_df s/100k", "spans_df_s_per_100k", "{:.2f}"),
    ]
    names = list(results)
    base = results.get("previous", {})
    others = [n for n in ("thread", "current", "process") if n in results]
    head = "".join(f"   {n}/previous" for n in others) if base else ""
    print(f"{'':26}" + "".join(f"{n:>14}" for n in names) + head)
    for label, key, fmt in rows:
        cells = [fmt.format(results[n][key]) if key in results[n] else "-" for n in names]
        ratios = ""
        a = base.get(key)
        for n in others if base else ():
            b = results[n].get(key)
            ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and a
            ratios += f"{(b / a if ok else float('nan')):>{len(n) + 12}.2f}x" if ok else " " * (len(n) + 13)
        print(f"{label:26}" + "".join(f"{c:>14}" for c in cells) + ratios)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
