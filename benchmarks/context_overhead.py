"""What ``ragtrail.context()`` adds to every span (goal: under 2 µs per span).

Blocks, alternated round by round so machine noise hits each alike, each starting and ending spans
through ragtrail's processor (``init(store_exporter=False)``: no exporter, so only span creation and
the processor's ``on_start``/``on_end`` are measured):

* ``none``       no context active (the previous design: nothing looked up but one context-variable get);
* ``context``    inside ``ragtrail.context(session_id, user_id, tags=[2], metadata={2 keys})``: the
                 processor copies 5 attributes (session.id, gen_ai.conversation.id, user.id, tags, metadata);
* ``manual``     no context, the same 5 attributes set by hand with ``span.set_attributes`` (what an app
                 would do without ``ragtrail.context``: the peer design);
* ``ids``        inside ``ragtrail.context(session_id, user_id)`` only (3 attributes: no tags, no metadata);
* ``nested``     three nested contexts (merging happens once at each ``with``, not per span).

Reported: median CPU time per span for each block, µs added per span over ``none``, and the ratio of
``context`` to ``manual``.

    .venv/bin/python -m benchmarks.context_overhead [--spans 20000 --rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import ragtrail
from ragtrail import semconv

_ATTRS = {
    semconv.SESSION_ID: "conversation-1234",
    semconv.GEN_AI_CONVERSATION_ID: "conversation-1234",
    semconv.USER_ID: "user-42",
    semconv.TAGS: ("beta", "web"),
    semconv.METADATA: '{"plan":"pro","region":"eu"}',
}


def _block(kind: str, n: int) -> float:
    tracer = ragtrail.tracing.get_tracer()
    start = tracer.start_span
    if kind == "manual":

        def body() -> None:
            for _ in range(n):
                s = start("op")
                s.set_attributes(_ATTRS)
                s.end()
    else:

        def body() -> None:
            for _ in range(n):
                start("op").end()

    def run() -> float:
        t0 = time.process_time()
        body()
        return time.process_time() - t0

    if kind == "context":
        with ragtrail.context(session_id="conversation-1234", user_id="user-42", tags=["beta", "web"],
                              metadata={"plan": "pro", "region": "eu"}):  # fmt: skip
            return run()
    if kind == "ids":
        with ragtrail.context(session_id="conversation-1234", user_id="user-42"):
            return run()
    if kind == "nested":
        with ragtrail.context(session_id="conversation-1234", metadata={"plan": "pro"}):
            with ragtrail.context(user_id="user-42", tags=["beta"]):
                with ragtrail.context(tags=["web"], metadata={"region": "eu"}):
                    return run()
    return run()


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spans", type=int, default=20_000, help="spans per block")
    ap.add_argument("--rounds", type=int, default=7, help="rounds (blocks alternate within each)")
    args = ap.parse_args(argv)
    ragtrail.init(project="bench", store_exporter=False)
    kinds = ("none", "context", "manual", "ids", "nested")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    _block("context", 2000)  # warm-up
    gc.disable()
    try:
        for _ in range(args.rounds):
            for k in kinds:
                times[k].append(_block(k, args.spans) / args.spans * 1e6)
    finally:
        gc.enable()
        ragtrail.shutdown()
    med: dict[str, float] = {k: statistics.median(v) for k, v in times.items()}
    print(f"ragtrail.context() cost per span ({args.spans:,} spans x {args.rounds} rounds, CPU time, median)")
    for k in kinds:
        extra = "" if k == "none" else f"   +{med[k] - med['none']:.2f} µs over none"
        print(f"  {k:8} {med[k]:6.2f} µs/span{extra}")
    added = med["context"] - med["none"]
    print(f"  context vs manual set_attributes: {med['context'] / med['manual']:.2f}x the time per span")
    print(f"  goal: under 2 µs added per span -> {'met' if added < 2.0 else 'NOT met'} ({added:.2f} µs; "
          f"session+user only: {med['ids'] - med['none']:.2f} µs)")  # fmt: skip
    return 0


if __name__ == "__main__":
    fn: Callable[[], int] = main
    sys.exit(fn())
