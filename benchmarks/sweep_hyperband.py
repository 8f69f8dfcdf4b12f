"""What W&B-style hyperband early termination saves in a sweep, on the bundled demo RAG app.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.sweep_hyperband            # grid and seeded random
    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.sweep_hyperband --quick    # grid only

The demo app (``ragtrail.demo``: MiniLM embeddings in Chroma, a LangChain chain, the offline
extractive chat model with an illustrative price) answers the 36 bundled questions. Each sweep runs
twice over the same parameters, without and with ``early_terminate: {type: hyperband, min_iter: 4,
eta: 3}`` (bands at 4 and 12 examples), into one temporary store. Printed per sweep: trials
completed/pruned, pipeline calls (each is one retrieval and one LLM call), examples scored (each
would be one judge call per LLM-judge scorer; this demo's scorers need no judge), pipeline cost in
USD, the best config and its metric, and the ratios with/without.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

PARAMS = {"top_k": {"values": [1, 2, 3, 4, 6, 8]}, "search_type": {"values": ["similarity", "mmr"]}}
EARLY = {"type": "hyperband", "min_iter": 4, "eta": 3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="Only the grid sweep.")
    ap.add_argument("--metric", default="token_f1", help="Metric to maximize (token_f1 or mrr).")
    ap.add_argument("--min-iter", type=int, default=EARLY["min_iter"], help="First band (examples).")
    ap.add_argument("--eta", type=int, default=EARLY["eta"], help="Keep the top 1/eta at each band.")
    args = ap.parse_args()

    import ragtrail
    from ragtrail.connectors.langchain import CallbackHandler
    from ragtrail.demo import build_chain, build_vectorstore, qa_path
    from ragtrail.demo._model import ExtractiveChatModel
    from ragtrail.evals import Dataset, Evaluation, scorers
    from ragtrail.evals._sweep import run_sweep
    from ragtrail.store import open_store

    tmp = tempfile.mkdtemp(prefix="ragtrail-sweep-bench-")
    store_path = os.path.join(tmp, "bench.db")
    ragtrail.init(project="sweep-bench", store=store_path,
                  prices={"ragtrail-extractive-v1": {"provider": "ragtrail", "input": 0.10, "output": 0.40}})  # fmt: skip
    vs = build_vectorstore(os.path.join(tmp, "chroma"))
    llm = ExtractiveChatModel()
    handler = CallbackHandler()
    ds = Dataset.from_jsonl(qa_path(), name="lumen-qa")
    chains: dict[tuple[int, str], Any] = {}

    def evaluate(config: dict[str, Any], resume: str | None = None) -> Any:
        key = (int(config["top_k"]), str(config["search_type"]))
        if key not in chains:
            chains[key] = build_chain(vs if key[1] == "similarity" else _Retyped(vs, key[1]), key[0], llm)
        chain = chains[key]

        def answer(question: str) -> dict[str, Any]:
            out = chain.invoke(question, config={"callbacks": [handler]})
            return {"answer": out["answer"]}

        ev = Evaluation("sweep-bench", dataset=ds, pipeline=answer, max_concurrency=1, store=store_path,
                        scorers=[scorers.token_f1(), scorers.reciprocal_rank(), scorers.cost()], progress=False)  # fmt: skip
        return ev.run(config=config, resume=resume)

    st = open_store(store_path)
    client = ragtrail.Client(st)
    sweeps: list[tuple[str, dict[str, Any]]] = [("grid", {"method": "grid"})]
    if not args.quick:
        sweeps.append(("random (seed 0, 8 trials)", {"method": "random", "seed": 0, "run_cap": 8,
                                                     "parameters": {"top_k": {"min": 1, "max": 10},
                                                                    "search_type": PARAMS["search_type"]}}))  # fmt: skip
    print(f"ragtrail sweep + hyperband (min_iter {args.min_iter}, eta {args.eta}) on the demo app ({len(ds)} "
          f"questions); metric {args.metric} (maximize)")  # fmt: skip
    for label, extra in sweeps:
        out = {}
        for early in (False, True):
            spec: dict[str, Any] = {"metric": {"name": args.metric, "goal": "maximize"}, "parameters": PARAMS, **extra}
            if early:
                spec["early_terminate"] = {**EARLY, "min_iter": args.min_iter, "eta": args.eta}
            t0 = time.perf_counter()
            res = run_sweep(spec, evaluate, store=st)
            secs = time.perf_counter() - t0
            summaries = [client.run(t.run_id).summary for t in res.trials if t.run_id]
            calls = sum(int(s.get("n_examples") or 0) for s in summaries)
            cost = sum(float(s.get("cost_usd") or 0.0) for s in summaries)
            out[early] = (res, calls, cost, secs)
            pr = sum(t.state == "pruned" for t in res.trials)
            best = res.best
            print(f"  {label:26} {'hyperband' if early else 'no early stop':14} trials {len(res.trials):2} "
                  f"(pruned {pr:2})  pipeline calls {calls:4}  examples scored {calls:4}  cost ${cost:.5f}  "
                  f"{secs:5.1f} s  best {best.params if best else None} = {best.value if best else float('nan'):.4f}")  # fmt: skip
        (r0, c0, k0, s0), (r1, c1, k1, s1) = out[False], out[True]
        same = r0.best is not None and r1.best is not None and r0.best.params == r1.best.params
        print(f"  {label:26} hyperband / none: pipeline calls {c1 / c0:.2f}×, cost {k1 / k0 if k0 else float('nan'):.2f}×, "
              f"time {s1 / s0:.2f}×; same best config: {'yes' if same else 'no'}")  # fmt: skip
    ragtrail.shutdown()


class _Retyped:
    """The demo vector store with another search type for its retriever (``mmr``)."""

    def __init__(self, vs: Any, search_type: str) -> None:
        self._vs, self._type = vs, search_type

    def as_retriever(self, search_kwargs: dict[str, Any]) -> Any:
        return self._vs.as_retriever(search_type=self._type, search_kwargs=search_kwargs)


if __name__ == "__main__":
    main()
