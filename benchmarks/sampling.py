"""What a sampled-out trace costs: ragtrail at 0% against the bare OpenTelemetry non-recording span.

Two workloads, each as blocks alternated round by round (machine noise hits every block alike), CPU time
of all threads per operation (``time.process_time``, each block ending with a flush):

``span``: one trace = a root and two children, made with

* ``otel-drop``       the SDK's ``start_as_current_span`` on a provider whose sampler is the SDK's
                      ``ParentBased(TraceIdRatioBased(0))``: the non-recording floor;
* ``rt-0%``           ``ragtrail.span`` at ``sample_rate=0, keep_errors=False`` (goal: < 1.2× the floor);
* ``rt-0%-errors``    ``ragtrail.span`` at ``sample_rate=0`` with errors kept (spans recorded into the
                      per-trace buffer, discarded at the root's end): what the error rule costs;
* ``rt-100%``         ``ragtrail.span`` at 100% into a SQLite store, for scale.

``langchain``: one call of a 5-run chain (retriever → prompt → fake chat model → parser; the model's
*answers* are fake, ``FakeListChatModel``):

* ``none``            no callbacks;
* ``otel-drop``       a minimal handler that starts and ends one non-recording SDK span per run: the floor;
* ``rt-0%`` / ``rt-0%-errors`` / ``rt-100%``  ragtrail's ``CallbackHandler`` (content capture on, GenAI
                      metrics on: the chain's one LLM call is counted even when sampled out);
* ``rt-0%-nometrics`` the handler at 0% with ``metrics=False``: the difference is what the metrics cost.

Reported: µs per operation, the added cost over ``none`` for the chain, and each ragtrail block as a
multiple of the floor (total and, for the chain, added cost)::

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.sampling            # ~1 min
    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.sampling --quick
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("LANGCHAIN_TRACING_V2", "false")
os.environ.pop("LANGSMITH_TRACING", None)


def _cpu_us(fn: Callable[[], None], n: int, flush: Callable[[], Any]) -> float:
    gc.collect()
    t0 = time.process_time()
    for _ in range(n):
        fn()
    flush()
    return (time.process_time() - t0) / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    ap.add_argument("--rounds", type=int, default=0)
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    n_span = 2_000 if args.quick else 5_000
    n_chain = 300 if args.quick else 800

    from langchain_core.callbacks import BaseCallbackHandler
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    import ragtrail
    from benchmarks.langchain_overhead import QUESTION, build_chain
    from ragtrail.connectors.langchain import CallbackHandler
    from ragtrail.tracing import make_sampler

    tmp = tempfile.mkdtemp(prefix="rt-sampling-")
    drop_tracer = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0))).get_tracer("floor")
    rt_provider = TracerProvider(sampler=make_sampler())

    def configure(rate: float, keep_errors: bool, metrics: bool = True) -> None:
        ragtrail.init(project="bench", store=os.path.join(tmp, "bench.db"), tracer_provider=rt_provider,
                      sample_rate=rate, keep_errors=keep_errors, metrics=metrics)  # fmt: skip

    def otel_trace() -> None:
        with drop_tracer.start_as_current_span("root"):
            with drop_tracer.start_as_current_span("a"):
                pass
            with drop_tracer.start_as_current_span("b"):
                pass

    span = ragtrail.span

    def rt_trace() -> None:
        with span("root"):
            with span("a"):
                pass
            with span("b"):
                pass

    class DropHandler(BaseCallbackHandler):
        """The floor: one non-recording SDK span per LangChain run, parented by run id."""

        run_inline = True

        def __init__(self) -> None:
            self.spans: dict[Any, Any] = {}

        def _start(self, run_id: Any, parent_run_id: Any) -> None:
            from opentelemetry import trace

            parent = self.spans.get(parent_run_id)
            ctx = trace.set_span_in_context(parent) if parent is not None else None
            self.spans[run_id] = drop_tracer.start_span("run", context=ctx)

        def _end(self, run_id: Any) -> None:
            s = self.spans.pop(run_id, None)
            if s is not None:
                s.end()

        def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: Any, parent_run_id: Any = None,
                           **kw: Any) -> None:  # fmt: skip
            self._start(run_id, parent_run_id)

        def on_chain_end(self, outputs: Any, *, run_id: Any, **kw: Any) -> None:
            self._end(run_id)

        def on_retriever_start(self, serialized: Any, query: Any, *, run_id: Any, parent_run_id: Any = None,
                               **kw: Any) -> None:  # fmt: skip
            self._start(run_id, parent_run_id)

        def on_retriever_end(self, documents: Any, *, run_id: Any, **kw: Any) -> None:
            self._end(run_id)

        def on_chat_model_start(self, serialized: Any, messages: Any, *, run_id: Any, parent_run_id: Any = None,
                                **kw: Any) -> None:  # fmt: skip
            self._start(run_id, parent_run_id)

        def on_llm_end(self, response: Any, *, run_id: Any, **kw: Any) -> None:
            self._end(run_id)

    chain = build_chain()
    handler = CallbackHandler()
    drop_handler = DropHandler()
    nothing = lambda: None  # noqa: E731
    flush = lambda: ragtrail.flush(30)  # noqa: E731

    def with_handler(h: Any) -> Callable[[], None]:
        return lambda: chain.invoke(QUESTION, config={"callbacks": [h]})

    # (workload, block, setup, op, n, flush)
    blocks: list[tuple[str, str, Callable[[], None], Callable[[], None], int, Callable[[], Any]]] = [
        ("span", "otel-drop", nothing, otel_trace, n_span, nothing),
        ("span", "rt-0%", lambda: configure(0.0, False), rt_trace, n_span, flush),
        ("span", "rt-0%-errors", lambda: configure(0.0, True), rt_trace, n_span, flush),
        ("span", "rt-100%", lambda: configure(1.0, False), rt_trace, n_span, flush),
        ("langchain", "none", nothing, lambda: chain.invoke(QUESTION), n_chain, nothing),
        ("langchain", "otel-drop", nothing, with_handler(drop_handler), n_chain, nothing),
        ("langchain", "rt-0%", lambda: configure(0.0, False), with_handler(handler), n_chain, flush),
        ("langchain", "rt-0%-nometrics", lambda: configure(0.0, False, False), with_handler(handler), n_chain, flush),
        ("langchain", "rt-0%-errors", lambda: configure(0.0, True), with_handler(handler), n_chain, flush),
        ("langchain", "rt-100%", lambda: configure(1.0, False), with_handler(handler), n_chain, flush),
    ]
    import warnings

    warnings.simplefilter("ignore")  # init() again warns by design
    results: dict[tuple[str, str], list[float]] = {}
    for b in blocks:  # warm-up
        b[2]()
        for _ in range(50):
            b[3]()
        b[5]()
    for _ in range(rounds):
        for wl, name, setup, op, n, fl in blocks:
            setup()
            results.setdefault((wl, name), []).append(_cpu_us(op, n, fl))
    ragtrail.shutdown()

    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"uptime: {os.getloadavg()}  rounds: {rounds}")
    floor_span = med[("span", "otel-drop")]
    print("\nspan workload (µs per 3-span trace, CPU):")
    for (wl, name), v in med.items():
        if wl == "span":
            print(f"  {name:14s} {v:8.2f} µs   {v / floor_span:5.2f}× the non-recording floor")
    none = med[("langchain", "none")]
    floor_add = med[("langchain", "otel-drop")] - none
    print("\nlangchain workload (µs per 5-run chain call, CPU; added = over no callbacks):")
    for (wl, name), v in med.items():
        if wl == "langchain":
            add = v - none
            ratio = "" if name == "none" else f"   total {v / med[('langchain', 'otel-drop')]:5.2f}× floor"
            ratio += "" if name in ("none", "otel-drop") else f", added {add / floor_add:5.2f}× floor's added"
            print(f"  {name:16s} {v:8.1f} µs   added {add:7.1f} µs{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
