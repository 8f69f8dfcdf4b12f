"""Ragas side of benchmarks/evals_scoring.py; runs inside .venv-bench-ragas (never imports ragtrail).

Reads the benchmark's JSONL, scores it with Ragas' non-LLM metrics through ``ragas.evaluate`` and
prints one JSON line: examples, seconds, examples/s, per-metric means.
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings


def main() -> None:
    path = sys.argv[1]
    warnings.filterwarnings("ignore")
    os.environ.pop("OPENAI_API_KEY", None)
    from ragas import EvaluationDataset, SingleTurnSample, evaluate
    from ragas.metrics import BleuScore, ExactMatch, IDBasedContextPrecision, IDBasedContextRecall, RougeScore

    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    samples = [
        SingleTurnSample(
            user_input=r["input"],
            response=r["answer"],
            reference=r["reference"],
            retrieved_context_ids=r["ranked"],
            reference_context_ids=r["relevant_ids"],
        )  # fmt: skip
        for r in rows
    ]
    metrics = [
        IDBasedContextPrecision(),
        IDBasedContextRecall(),
        ExactMatch(),
        RougeScore(rouge_type="rougeL"),
        BleuScore(),
    ]
    t0, c0 = time.perf_counter(), time.process_time()
    result = evaluate(EvaluationDataset(samples=samples), metrics=metrics, show_progress=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    import ragas

    df = result.to_pandas()
    means = {c: float(df[c].mean()) for c in df.columns if df[c].dtype.kind == "f"}
    out = {"n": len(rows), "seconds": dt, "per_s": len(rows) / dt, "per_cpu_s": len(rows) / cpu, "means": means,
           "version": ragas.__version__}  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
