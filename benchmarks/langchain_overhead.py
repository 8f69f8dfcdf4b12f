"""What tracing a LangChain chain costs: ragtrail's CallbackHandler against its peers, in one process.

Chain (5 LangChain runs per call): a retriever returning 4 documents → ChatPromptTemplate → a fake chat
model (fake *answers* only: ``FakeListChatModel``) → StrOutputParser, all under one RunnableSequence.

Blocks, alternated round by round so that machine noise hits every block alike:

* ``none``            the chain, no tracing;
* ``floor``           the chain plus 5 raw OpenTelemetry SDK spans through a BatchSpanProcessor (the least
                      any OTel-based tracer can cost);
* ``ragtrail``        ragtrail's ``CallbackHandler`` writing to the real store (SQLite), content capture on;
* ``ragtrail-nocontent``  the same with content capture off;
* ``openinference``   OpenInference's ``LangChainInstrumentor``;
* ``langfuse``        Langfuse's ``CallbackHandler`` (dummy keys, spans to a discarding exporter);
* ``openllmetry``     OpenLLMetry's ``LangchainInstrumentor`` (removed by hand between blocks: its
                      ``uninstrument()`` leaves its callback manager patch in place).

Measured: CPU time of *all* threads per call (``time.process_time``), each block ending with a flush, so
work deferred to background export threads counts; wall-clock medians beside it. Reported: µs added per
call over ``none``, per span (5 per call), and as a multiple of the floor.

Peers are imported only when installed; they live in their own venv (see
``benchmarks/requirements-peers-langchain.txt``)::

    .venv-bench-langchain/bin/python -m benchmarks.langchain_overhead          # all blocks
    .venv/bin/python -m benchmarks.langchain_overhead --quick                   # ragtrail + floor only
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LANGCHAIN_TRACING_V2", "false")
os.environ.pop("LANGSMITH_TRACING", None)

SPANS_PER_CALL = 5
QUESTION = "Which topic matters for retrieval?"


# ------------------------------------------------------------------------------------------ chain


def build_chain() -> Any:
    from langchain_core.documents import Document
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever

    docs = [
        Document(
            page_content=f"Document {i}: topic {i} matters for retrieval because of reason {i}. " * 3,
            id=f"doc-{i}",
            metadata={"source": f"corpus/{i}.txt", "score": 1.0 - i / 10},
        )
        for i in range(4)
    ]

    class FourDocs(BaseRetriever):
        """A real LangChain retriever returning 4 documents."""

        def _get_relevant_documents(self, query: str, *, run_manager: Any = None) -> list[Document]:
            return docs

    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer from the context.\n\nContext: {context}"), ("user", "Answer the question.")]
    )
    model = FakeListChatModel(responses=["Topic 1 matters for retrieval, per document 1."])
    return FourDocs() | prompt | model | StrOutputParser()


# ----------------------------------------------------------------------------------------- blocks


@dataclass
class Block:
    name: str
    setup: Callable[[], Any]  # returns the per-call config (or None)
    teardown: Callable[[], None]
    flush: Callable[[], None]
    label: str = ""
    cpu_us: list[float] = field(default_factory=list)
    wall_us: list[float] = field(default_factory=list)


def _discarding_bsp(provider: Any) -> Any:
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    bsp = BatchSpanProcessor(Discard())
    provider.add_span_processor(bsp)
    return bsp


def make_blocks(store_dir: str) -> tuple[list[Block], list[str]]:
    from opentelemetry.sdk.trace import TracerProvider

    blocks: list[Block] = []
    skipped: list[str] = []
    nothing = lambda: None  # noqa: E731

    blocks.append(Block("none", lambda: None, nothing, nothing, "no tracing"))

    # reference: what LangChain's own callback dispatch costs with a handler that does nothing
    from langchain_core.callbacks import BaseCallbackHandler

    class NoopHandler(BaseCallbackHandler):
        run_inline = True

        def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
            pass

    blocks.append(Block("noop-handler", lambda: {"callbacks": [NoopHandler()]}, nothing, nothing,
                        "reference: a LangChain callback handler that does nothing (LangChain's dispatch cost)"))  # fmt: skip

    # the floor: 5 raw SDK spans (1 root + 4 children) per call
    floor_tp = TracerProvider()
    floor_bsp = _discarding_bsp(floor_tp)
    floor_tracer = floor_tp.get_tracer("floor")
    blocks.append(
        Block(
            "floor", lambda: ("floor", floor_tracer), nothing, lambda: floor_bsp.force_flush(), "5 raw OTel spans + BSP"
        )
    )

    # ragtrail, content on and off
    import ragtrail
    from ragtrail.connectors.langchain import CallbackHandler

    def ragtrail_setup(content: bool) -> Callable[[], Any]:
        def setup() -> Any:
            ragtrail.init(project="bench", store=os.path.join(store_dir, f"bench-{content}.db"),
                          capture_content=content, tracer_provider=TracerProvider())  # fmt: skip
            return {"callbacks": [CallbackHandler()]}

        return setup

    def ragtrail_teardown() -> None:
        ragtrail.shutdown()

    blocks.append(Block("ragtrail", ragtrail_setup(True), ragtrail_teardown, lambda: ragtrail.flush(30),
                        "ragtrail CallbackHandler → SQLite store, content on"))  # fmt: skip
    blocks.append(Block("ragtrail-nocontent", ragtrail_setup(False), ragtrail_teardown, lambda: ragtrail.flush(30),
                        "ragtrail CallbackHandler → SQLite store, content off"))  # fmt: skip

    # OpenInference
    try:
        from openinference.instrumentation.langchain import LangChainInstrumentor as OIInstrumentor

        oi_tp = TracerProvider()
        oi_bsp = _discarding_bsp(oi_tp)
        oi = OIInstrumentor()

        def oi_setup() -> Any:
            oi.instrument(tracer_provider=oi_tp)

        blocks.append(Block("openinference", oi_setup, lambda: oi.uninstrument(), lambda: oi_bsp.force_flush(),
                            "OpenInference LangChainInstrumentor"))  # fmt: skip
    except ImportError as exc:
        skipped.append(f"openinference ({exc.name} not installed)")

    # Langfuse
    try:
        block = _langfuse_block()
        blocks.append(block)
    except ImportError as exc:
        skipped.append(f"langfuse ({exc.name} not installed)")

    # OpenLLMetry
    try:
        from opentelemetry.instrumentation.langchain import LangchainInstrumentor as OLInstrumentor

        ol_tp = TracerProvider()
        ol_bsp = _discarding_bsp(ol_tp)

        def ol_setup() -> Any:
            OLInstrumentor().instrument(tracer_provider=ol_tp)

        def ol_teardown() -> None:
            OLInstrumentor().uninstrument()
            _unwrap_openllmetry()

        blocks.append(Block("openllmetry", ol_setup, ol_teardown, lambda: ol_bsp.force_flush(),
                            "OpenLLMetry LangchainInstrumentor"))  # fmt: skip
    except ImportError as exc:
        skipped.append(f"openllmetry ({exc.name} not installed)")

    return blocks, skipped


def _unwrap_openllmetry() -> None:
    """OpenLLMetry's uninstrument() keeps its BaseCallbackManager.__init__ wrapper: peel it off by hand."""
    from langchain_core.callbacks import BaseCallbackManager

    init = BaseCallbackManager.__dict__["__init__"]
    while hasattr(init, "__wrapped__"):
        init = init.__wrapped__
    BaseCallbackManager.__init__ = init  # type: ignore[method-assign]


def _langfuse_block() -> Block:
    from langfuse import Langfuse  # ImportError → skipped
    from langfuse.langchain import CallbackHandler as LFHandler
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    state: dict[str, Any] = {}

    def setup() -> Any:
        if "client" not in state:  # dummy keys; spans go through Langfuse's own processor to a discarding exporter
            state["client"] = Langfuse(public_key="pk-lf-bench", secret_key="sk-lf-bench",
                                       base_url="http://127.0.0.1:9", tracer_provider=TracerProvider(),
                                       span_exporter=Discard())  # fmt: skip
        return {"callbacks": [LFHandler(public_key="pk-lf-bench")]}

    def flush() -> None:
        state["client"].flush()

    return Block("langfuse", setup, lambda: None, flush, "Langfuse CallbackHandler (dummy keys, discarding exporter)")


# -------------------------------------------------------------------------------------- measuring


def run_block(block: Block, chain: Any, calls: int) -> None:
    cfg = block.setup()
    try:
        floor = isinstance(cfg, tuple)
        tracer = cfg[1] if floor else None
        config = None if floor else cfg
        walls: list[int] = []
        gc.collect()
        cpu0 = time.process_time_ns()
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            if floor:
                with tracer.start_as_current_span("RunnableSequence"):
                    for name in ("FourDocs", "ChatPromptTemplate", "FakeListChatModel", "StrOutputParser"):
                        with tracer.start_as_current_span(name):
                            pass
                    chain.invoke(QUESTION)
            elif config is None:
                chain.invoke(QUESTION)
            else:
                chain.invoke(QUESTION, config=config)
            walls.append(time.perf_counter_ns() - t0)
        block.flush()
        cpu = time.process_time_ns() - cpu0
    finally:
        block.teardown()
    block.cpu_us.append(cpu / calls / 1000)
    block.wall_us.append(statistics.median(walls) / 1000)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds and calls (about 20 s)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--calls", type=int, default=None, help="calls per block per round")
    ap.add_argument("--only", default=None, help="comma-separated block names to run")
    args = ap.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 7)
    calls = args.calls or (150 if args.quick else 400)
    warnings.simplefilter("ignore")

    import logging

    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
    chain = build_chain()
    with tempfile.TemporaryDirectory() as tmp:
        blocks, skipped = make_blocks(tmp)
        if args.only:
            keep = set(args.only.split(",")) | {"none", "floor"}
            blocks = [b for b in blocks if b.name in keep]
        # warm-up (not counted): imports, caches, first store writes
        for b in blocks:
            run_block(b, chain, max(20, calls // 10))
            b.cpu_us.clear()
            b.wall_us.clear()
        for r in range(rounds):
            order = blocks if r % 2 == 0 else list(reversed(blocks))
            for b in order:
                run_block(b, chain, calls)
    report(blocks, skipped, rounds, calls)
    return 0


def report(blocks: list[Block], skipped: list[str], rounds: int, calls: int) -> None:
    import langchain_core

    med = {b.name: statistics.median(b.cpu_us) for b in blocks}
    wall = {b.name: statistics.median(b.wall_us) for b in blocks}
    base = med["none"]
    floor_added = med["floor"] - base
    print(f"LangChain tracing overhead: retriever(4 docs) → prompt → fake chat model → parser, "
          f"{SPANS_PER_CALL} runs/call; langchain-core {langchain_core.__version__}, Python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs; {rounds} rounds × {calls} calls per block, medians over rounds")  # fmt: skip
    print(f"CPU = process time of all threads per call incl. the end-of-block flush; baseline (no tracing) "
          f"{base:.0f} µs/call CPU, {wall['none']:.0f} µs wall")  # fmt: skip
    print()
    best = {b.name: min(b.cpu_us) for b in blocks}
    best_floor = best["floor"] - best["none"]
    print(f"{'block':<20} {'CPU µs/call':>12} {'added µs':>10} {'µs/span':>9} {'× floor':>8} {'wall µs':>9} "
          f"{'wall added':>10}  {'spread (min–max added)':>22} {'× floor (best rounds)':>22}")  # fmt: skip
    for b in blocks:
        added = med[b.name] - base
        lo = min(b.cpu_us) - base
        hi = max(b.cpu_us) - base
        mult = added / floor_added if floor_added > 0 and b.name != "none" else float("nan")
        print(f"{b.name:<20} {med[b.name]:>12.0f} {added:>10.0f} {added / SPANS_PER_CALL:>9.1f} "
              f"{mult:>8.2f} {wall[b.name]:>9.0f} {wall[b.name] - wall['none']:>10.0f}  {lo:>10.0f}–{hi:<10.0f}"
              f" {(best[b.name] - best['none']) / best_floor if best_floor > 0 else float('nan'):>22.2f}")  # fmt: skip
    print()
    for b in blocks:
        print(f"  {b.name:<20} {b.label}")
    if skipped:
        print("\nskipped (not importable here; use .venv-bench-langchain): " + ", ".join(skipped))
    if floor_added > 0:
        on = (med.get("ragtrail", float("nan")) - base) / floor_added
        off = (med.get("ragtrail-nocontent", float("nan")) - base) / floor_added
        print(f"\nragtrail: {on:.2f}× floor with content on (goal ≤ 4), {off:.2f}× with it off (goal ≤ 3)")
        peers = [n for n in ("openinference", "langfuse", "openllmetry") if n in med]
        if peers:
            cheapest = min(peers, key=lambda n: med[n])
            ratio = (med[cheapest] - base) / max(1e-9, med["ragtrail"] - base)
            print(f"cheapest peer: {cheapest} at {(med[cheapest] - base) / floor_added:.2f}× floor; "
                  f"ragtrail (content on) is {ratio:.2f}× cheaper")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
