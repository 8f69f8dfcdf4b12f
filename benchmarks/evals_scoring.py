"""Scoring throughput of ragtrail's eval metrics, against Ragas' non-LLM metrics in the same run.

    .venv/bin/python -m benchmarks.evals_scoring            # 10,000 examples (+ Ragas if installed)
    .venv/bin/python -m benchmarks.evals_scoring --quick    # 2,000 examples
    .venv/bin/python -m benchmarks.evals_scoring --gpu --device cuda        # semantic_similarity, 100,000 pairs
    .venv/bin/python -m benchmarks.evals_scoring --gpu --n 2000 --device cpu  # the same, small, on CPU

Text mode: seeded synthetic examples (10 retrieved ids, graded qrels, ~12-word answers and
references) are scored with (a) the metric set Ragas has equivalents for — precision@10,
recall@10, exact match, ROUGE-L, BLEU — and (b) ragtrail's full set (+ nDCG@10, MRR, MAP,
hit_rate@5, token F1), through ``score_items`` (the scorer path the harness uses). Ragas scores the
same data with IDBasedContextPrecision/Recall, ExactMatch, RougeScore(rougeL) and BleuScore through
``ragas.evaluate`` in ``.venv-bench-ragas`` (``bash benchmarks/setup_ragas_venv.sh``); the id-based
precision/recall means must agree with ours. ``--harness`` also times a whole ``Evaluation.run``
(root spans, trace collection, per-example SQLite commits) over the same examples.

GPU mode: ``semantic_similarity`` over N (answer, reference) pairs through the batched scorer path
versus ``SentenceTransformer.encode`` called directly on the same texts, same model, same batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
RAGAS_PY = ROOT / ".venv-bench-ragas" / "bin" / "python"
WORDS = ("the a cat dog sat on mat ran quickly slowly red blue green house river model paper claim evidence "
         "protein cell study results showed increased reduced risk patients treatment effect gene expression "
         "levels significant analysis data trial group").split()  # fmt: skip


def make_data(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = random.Random(seed)

    def sent(k: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(k))

    rows = []
    for i in range(n):
        rel = {f"d{rng.randrange(300)}": rng.choice([1, 1, 2]) for _ in range(rng.randint(1, 4))}
        ranked = rng.sample([f"d{j}" for j in range(300)], 10)
        first = next(iter(rel))
        if rng.random() < 0.6 and first not in ranked:  # make hits common; always 10 distinct ids
            ranked[rng.randrange(10)] = first
        ref = sent(rng.randint(6, 18))
        answer = ref if rng.random() < 0.2 else sent(rng.randint(6, 18))
        rows.append({"id": f"q{i}", "input": f"question {i}", "reference": ref, "answer": answer,
                     "relevant": rel, "relevant_ids": list(rel), "ranked": ranked})  # fmt: skip
    return rows


def _ours(rows: list[dict[str, Any]], which: str, repeats: int) -> tuple[float, float, dict[str, float]]:
    from ragtrail.evals import Example, score_items, scorers

    items = [
        (Example(id=r["id"], input=r["input"], reference=r["reference"], relevant=r["relevant"]),
         {"answer": r["answer"], "contexts": r["ranked"]}, None)
        for r in rows
    ]  # fmt: skip
    eq = [scorers.precision_at_k(10), scorers.recall_at_k(10), scorers.exact_match(), scorers.rouge_l(), scorers.bleu()]
    full = [*eq, scorers.ndcg_at_k(10), scorers.mrr(), scorers.map(), scorers.hit_rate(5), scorers.token_f1()]
    chosen = eq if which == "equivalent" else full
    times, cpus = [], []
    res: list[dict[str, Any]] = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = score_items(chosen, items)
        times.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    means = {}
    for s in chosen:
        vals = [r[s.name].value for r in res if r[s.name].status == "ok"]
        means[s.name] = sum(vals) / len(vals) if vals else float("nan")
    return len(rows) / statistics.median(times), len(rows) / statistics.median(cpus), means


def _ragas(rows: list[dict[str, Any]]) -> dict[str, Any] | str:
    if not RAGAS_PY.exists():
        return "not installed (bash benchmarks/setup_ragas_venv.sh)"
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        path = f.name
    try:
        p = subprocess.run([str(RAGAS_PY), str(ROOT / "benchmarks" / "_ragas_worker.py"), path],
                           capture_output=True, text=True, timeout=3600)  # fmt: skip
    finally:
        os.unlink(path)
    if p.returncode != 0:
        return f"failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}"
    return json.loads(p.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _harness(rows: list[dict[str, Any]]) -> float:
    import ragtrail
    from ragtrail.evals import Dataset, Evaluation, scorers

    outputs = {r["input"]: {"answer": r["answer"], "contexts": r["ranked"]} for r in rows}
    ds = Dataset.from_records([{k: r[k] for k in ("id", "input", "reference", "relevant")} for r in rows], name="bench")
    with tempfile.TemporaryDirectory() as d:
        ragtrail.init(project="bench", store=os.path.join(d, "bench.db"))
        try:
            ev = Evaluation("bench", ds, outputs.__getitem__, [scorers.precision_at_k(10), scorers.recall_at_k(10),
                            scorers.exact_match(), scorers.rouge_l(), scorers.bleu()], max_concurrency=4, progress=False)  # fmt: skip
            t0 = time.perf_counter()
            run = ev.run()
            dt = time.perf_counter() - t0
            assert run.summary["n_examples"] == len(rows)
        finally:
            ragtrail.shutdown()
    return len(rows) / dt


def text_mode(args: argparse.Namespace) -> None:
    n = 2000 if args.quick and not args.n else (args.n or 10_000)
    rows = make_data(n)
    print(f"scoring {n:,} examples (seeded synthetic data); python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    eq_rate, eq_cpu, eq_means = _ours(rows, "equivalent", args.repeats)
    full_rate, full_cpu, _ = _ours(rows, "full", args.repeats)
    print("(wall = examples/s; cpu = examples per CPU-second of the scoring process, steadier on a shared machine)")
    print(f"ragtrail, Ragas-equivalent set (P@10, R@10, EM, ROUGE-L, BLEU): wall {eq_rate:8,.0f}  cpu {eq_cpu:8,.0f}")
    print(
        f"ragtrail, full set (+ nDCG@10, MRR, MAP, hit@5, token F1):      wall {full_rate:8,.0f}  cpu {full_cpu:8,.0f}"
    )
    if args.harness:
        h = _harness(rows)
        print(f"ragtrail, whole Evaluation.run (spans, trace, SQLite commit/ex):  wall {h:8,.0f}")
    if args.no_ragas:
        return
    r = _ragas(rows)
    if isinstance(r, str):
        print(f"Ragas: {r}")
        return
    print(
        f"Ragas {r['version']} evaluate(), the same 5 metrics:                wall {r['per_s']:8,.0f}  cpu {r['per_cpu_s']:8,.0f}"
    )
    print(f"ratio ragtrail/Ragas, equivalent set: wall {eq_rate / r['per_s']:.1f}x, cpu {eq_cpu / r['per_cpu_s']:.1f}x; "
          f"full set vs Ragas' 5: wall {full_rate / r['per_s']:.1f}x, cpu {full_cpu / r['per_cpu_s']:.1f}x")  # fmt: skip
    rp, rr = r["means"].get("id_based_context_precision"), r["means"].get("id_based_context_recall")
    print("(10 distinct ids per query, so Ragas' precision over the retrieved list equals precision@10)")
    print(f"agreement: precision@10 {eq_means['precision@10']:.6f} vs Ragas {rp:.6f}; "
          f"recall@10 {eq_means['recall@10']:.6f} vs Ragas {rr:.6f}")  # fmt: skip


def _env(model: Any) -> str:
    """Versions and accelerator, for the figures' provenance."""
    import sentence_transformers
    import torch
    import transformers

    dev = str(model.device)
    acc = torch.cuda.get_device_name(model.device) if dev.startswith("cuda") else f"{os.cpu_count()} CPUs"
    dtype = next(model.parameters()).dtype
    return (f"{acc}; torch {torch.__version__}, transformers {transformers.__version__}, "
            f"sentence-transformers {sentence_transformers.__version__}, python {sys.version.split()[0]}, weights {dtype}")  # fmt: skip


def gpu_mode(args: argparse.Namespace) -> None:
    import numpy as np

    from ragtrail.evals import Example, score_items
    from ragtrail.evals._scorers import SemanticSimilarity, load_sentence_model

    n = args.n or (2000 if args.quick else 100_000)
    rows = make_data(n, seed=1)
    texts: list[str] = []
    items = []
    for r in rows:
        texts += [r["answer"], r["reference"]]
        items.append((Example(id=r["id"], input=r["input"], reference=r["reference"]), r["answer"], None))
    model = load_sentence_model(args.model, args.device)
    print(
        f"semantic_similarity over {n:,} pairs on {model.device} (batch {args.batch_size}, {args.chunk} examples per scorer call)"
    )
    print(_env(model))
    scorer = SemanticSimilarity(args.model, batch_size=args.batch_size, device=args.device)
    model.encode(texts[:2048], batch_size=args.batch_size, normalize_embeddings=True)  # warm-up

    def direct() -> float:
        t0 = time.perf_counter()
        emb = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                           show_progress_bar=False)  # fmt: skip
        _ = np.einsum("ij,ij->i", emb[0::2], emb[1::2])
        return n / (time.perf_counter() - t0)

    def ours() -> float:
        t0 = time.perf_counter()
        res = score_items([scorer], items, batch_size=args.chunk)
        dt = time.perf_counter() - t0
        assert all(r["semantic_similarity"].status == "ok" for r in res)
        return n / dt

    d_rates, o_rates = [], []
    for _ in range(args.repeats):
        d_rates.append(direct())
        o_rates.append(ours())
    d, o = statistics.median(d_rates), statistics.median(o_rates)
    print(f"direct SentenceTransformer.encode: {d:10,.0f} pairs/s")
    print(f"ragtrail semantic_similarity:      {o:10,.0f} pairs/s")
    print(f"ratio ragtrail/direct: {o / d:.3f} (target >= 0.90)")
    print(f"(all repeats, pairs/s: direct {[round(x) for x in d_rates]}, ragtrail {[round(x) for x in o_rates]})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=None, help="examples (text: 10,000; --gpu: 100,000 pairs)")
    ap.add_argument("--quick", action="store_true", help="2,000 examples")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (the median is reported)")
    ap.add_argument("--no-ragas", action="store_true", help="skip the Ragas comparison")
    ap.add_argument("--harness", action="store_true", help="also time a whole Evaluation.run")
    ap.add_argument("--gpu", action="store_true", help="semantic_similarity vs direct encode")
    ap.add_argument("--device", default=None, help="--gpu: cuda, cpu… (default: sentence-transformers' choice)")
    ap.add_argument("--model", default=None,
                    help="--gpu: model name or local directory (default: the bundled all-MiniLM-L6-v2)")  # fmt: skip
    ap.add_argument("--batch-size", type=int, default=256, help="--gpu: encode batch size")
    ap.add_argument("--chunk", type=int, default=8192, help="--gpu: examples per score_batch call")
    args = ap.parse_args()
    gpu_mode(args) if args.gpu else text_mode(args)


if __name__ == "__main__":
    main()
