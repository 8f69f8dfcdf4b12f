"""Writes the three notebooks from the cells below.

``python notebooks/_build.py --execute`` (what is committed) also runs them, offline, into a temporary
store and keeps their outputs, so they read on GitHub; without ``--execute`` it writes them without
outputs. CI executes them again (tests/test_notebooks.py) and the ``assert`` cells check what they
produced; a test checks that the committed cells are the ones below. Each notebook uses
``$RAGTRAIL_STORE`` when set and otherwise the default store.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).parent

SETUP = """\
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")          # everything here runs offline
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
import ragtrail
"""

NB1 = [
    new_markdown_cell(
        "# 1. Trace a RAG app\n\n"
        "We build a small retrieval-augmented app with LangChain — a Chroma vector store filled with "
        "MiniLM embeddings, a prompt, a chat model — and let ragtrail record what happens inside each "
        "call: which documents were retrieved (with their scores), how long each step took, how many "
        "tokens the model used and what that cost.\n\n"
        "The chat model is ragtrail's offline *extractive* model, a real LangChain chat model that answers "
        "with the best-matching context sentence, so this notebook needs no API key. Swap in any LangChain "
        "chat model (`ChatOpenAI(base_url=...)` for a vLLM server) and nothing else changes."
    ),
    new_code_cell(SETUP + 'ragtrail.init(project="notebook-rag")  # store: $RAGTRAIL_STORE, else ~/.ragtrail/ragtrail.db'),
    new_markdown_cell(
        "Turn on the connectors for the libraries *underneath* LangChain: Chroma (the vector query, with "
        "distances turned into scores) and sentence-transformers (each `encode` call). LangChain itself "
        "is traced by passing ragtrail's callback handler."
    ),
    new_code_cell(
        "from ragtrail.connectors import chroma, sentence_transformers\n"
        "from ragtrail.connectors.langchain import CallbackHandler\n"
        "from ragtrail.demo import build_vectorstore, build_chain\n"
        "from ragtrail.demo._model import ExtractiveChatModel\n\n"
        "chroma.instrument()\n"
        "sentence_transformers.instrument()\n"
        "vectorstore = build_vectorstore()              # 30 help-centre articles, MiniLM embeddings\n"
        "chain = build_chain(vectorstore, top_k=3, llm=ExtractiveChatModel())\n"
        "handler = CallbackHandler()"
    ),
    new_code_cell(
        'result = chain.invoke("Can public pages be password protected?", config={"callbacks": [handler]})\n'
        'print(result["answer"])\n'
        'print([d.metadata["doc_id"] for d in result["docs"]])'
    ),
    new_markdown_cell("Spans are written in the background; `flush()` waits for them. Then read the trace back:"),
    new_code_cell(
        "ragtrail.flush()\n"
        "client = ragtrail.Client()\n"
        'trace = client.traces(project="notebook-rag", limit=1)[0]\n'
        "trace   # renders as a waterfall in Jupyter"
    ),
    new_code_cell("print(trace.to_text())"),
    new_markdown_cell(
        "The trace is a tree: the chain at the root; under it the retriever, whose Chroma query span holds "
        "the documents with ids and scores, and the embedding of the question; then the prompt and the chat "
        "model call with its token counts and time to first token."
    ),
    new_code_cell(
        "kinds = {s.kind for s in trace}\n"
        'assert {"CHAIN", "RETRIEVER", "EMBEDDING", "LLM"} <= kinds, kinds\n'
        "docs = trace.retrieved_documents()\n"
        "assert len(docs) == 3 and all(d.get('id') for d in docs)\n"
        "llm = trace.llm_calls()[0]\n"
        "assert llm.input_tokens > 0 and llm.output_tokens > 0\n"
        'pd_docs = [(d["rank"], d["id"], round(d["score"], 3) if d.get("score") is not None else None) for d in docs]\n'
        "pd_docs"
    ),
]

NB2 = [
    new_markdown_cell(
        "# 2. Analyse traces\n\n"
        "Traces are data. Here we record a few dozen traced questions and ask the questions an engineer "
        "asks of a RAG app in production: where does the time go, what does it cost per model and per "
        "request, which requests were slowest, which failed?"
    ),
    new_code_cell(
        SETUP
        + 'ragtrail.init(project="notebook-analysis")\n'
        "from ragtrail.connectors import chroma, sentence_transformers\n"
        "from ragtrail.connectors.langchain import CallbackHandler\n"
        "from ragtrail.demo import build_vectorstore, build_chain, qa_path\n"
        "from ragtrail.demo._model import ExtractiveChatModel\n"
        "import json\n\n"
        "chroma.instrument(); sentence_transformers.instrument()\n"
        "chain = build_chain(build_vectorstore(), top_k=4, llm=ExtractiveChatModel())\n"
        'questions = [json.loads(l)["input"] for l in open(qa_path())][:24]\n'
        'chain.batch(questions, config={"callbacks": [CallbackHandler()], "max_concurrency": 4})\n'
        "ragtrail.flush()"
    ),
    new_markdown_cell("One row per span, with the columns every analysis starts from:"),
    new_code_cell(
        "client = ragtrail.Client()\n"
        'spans = client.spans_df(project="notebook-analysis")\n'
        'spans[["trace_id", "name", "kind", "duration_ms", "model", "input_tokens", "output_tokens", "cost_usd"]].head(10)'
    ),
    new_markdown_cell(
        "**Where the time goes.** *Self time* gives each millisecond to exactly one span (a span's duration "
        "minus its children's), so the shares add up to 100%."
    ),
    new_code_cell(
        "from ragtrail import analysis\n"
        "by_kind = analysis.latency_by_kind(spans)\n"
        "by_kind"
    ),
    new_code_cell("analysis.plot_latency_by_kind(spans);"),
    new_markdown_cell("**Tokens and cost per model and per request** (cost in USD; empty where no price is known):"),
    new_code_cell("analysis.cost_by_model(spans)"),
    new_code_cell("analysis.slowest_traces(spans, n=5)"),
    new_code_cell("analysis.error_traces(spans)   # empty: nothing failed"),
    new_code_cell(
        "# 24 question traces (indexing the corpus made a few traces of its own: chroma.add, encode)\n"
        'assert (analysis.cost_by_trace(spans)["root"] == "rag").sum() == 24\n'
        'assert set(by_kind["kind"]) >= {"CHAIN", "RETRIEVER", "EMBEDDING", "LLM"}\n'
        'assert abs(by_kind["self_share"].sum() - 1) < 1e-9\n'
        'costs = analysis.cost_by_model(spans).set_index("model")\n'
        'assert costs.loc["ragtrail-extractive-v1", "calls"] == 24\n'
        "assert analysis.error_traces(spans).empty"
    ),
]

NB3 = [
    new_markdown_cell(
        "# 3. Evaluate and compare\n\n"
        "An evaluation runs a pipeline over a versioned dataset, scores every example *from its trace* "
        "(retrieval metrics come from the retriever spans), and stores the result as a versioned run. Two "
        "runs are compared example by example, with confidence intervals, so that a difference you act on "
        "is not noise."
    ),
    new_code_cell(
        SETUP
        + 'ragtrail.init(project="notebook-evals")\n'
        "from ragtrail.connectors import chroma, sentence_transformers\n"
        "from ragtrail.connectors.langchain import CallbackHandler\n"
        "from ragtrail.demo import build_vectorstore, build_chain, qa_path\n"
        "from ragtrail.demo._model import ExtractiveChatModel\n"
        "from ragtrail.evals import Dataset, Evaluation, scorers\n\n"
        "chroma.instrument(); sentence_transformers.instrument()\n"
        "vectorstore = build_vectorstore()\n"
        "handler = CallbackHandler()\n"
        'dataset = Dataset.from_jsonl(qa_path(), name="lumen-qa")\n'
        "len(dataset), dataset.version[:12]"
    ),
    new_markdown_cell(
        "The pipeline returns just the answer: the retrieved document ids are read from its trace. We evaluate "
        "two retriever depths."
    ),
    new_code_cell(
        "def make_pipeline(top_k):\n"
        "    chain = build_chain(vectorstore, top_k=top_k, llm=ExtractiveChatModel())\n"
        "    def answer(question):\n"
        '        out = chain.invoke(question, config={"callbacks": [handler]})\n'
        '        return out["answer"]   # retrieved ids come from the trace\n'
        "    return answer\n\n"
        "metrics = [scorers.recall_at_k(5), scorers.ndcg_at_k(5), scorers.token_f1(), scorers.latency()]\n"
        "runs = {}\n"
        "for k in (1, 5):\n"
        '    ev = Evaluation("notebook-rag", dataset=dataset, pipeline=make_pipeline(k), scorers=metrics,\n'
        '                    max_concurrency=4, progress=False)\n'
        '    runs[k] = ev.run(config={"top_k": k})\n'
        "runs[5]"
    ),
    new_code_cell("results = runs[5].results_df()\nresults.head()"),
    new_code_cell(
        "from ragtrail import analysis\n"
        "analysis.score_distributions(results)"
    ),
    new_markdown_cell(
        "**Comparison.** Examples are paired by id; each delta (b − a) comes with a seeded paired-bootstrap "
        "95% confidence interval and a Holm-adjusted p-value."
    ),
    new_code_cell(
        "client = ragtrail.Client()\n"
        "comparison = client.compare(runs[1], runs[5])\n"
        "comparison.to_df()"
    ),
    new_code_cell("analysis.plot_run_vs_run(comparison);"),
    new_code_cell(
        'df = comparison.to_df().set_index("metric")\n'
        "assert len(results) == len(dataset) * len(metrics)\n"
        'assert set(results["status"]) <= {"ok", "undefined", "error"}\n'
        "# with 5 documents instead of 1 the retriever finds at least as many gold documents\n"
        'recall = [m for m in df.index if m.startswith("recall")][0]\n'
        'assert df.loc[recall, "delta"] >= 0\n'
        'assert df.loc[recall, "ci_low"] <= df.loc[recall, "delta"] <= df.loc[recall, "ci_high"]\n'
        'assert (df["n_pairs"] == len(dataset)).all()'
    ),
]


def _execute(nb: nbformat.NotebookNode) -> None:
    """Run ``nb`` in a fresh kernel against a temporary store; temporary paths are removed from its outputs."""
    import os
    import sys
    import tempfile

    from nbclient import NotebookClient

    with tempfile.TemporaryDirectory(prefix="ragtrail-nb-") as tmp:
        env = {"RAGTRAIL_STORE": os.path.join(tmp, "ragtrail.db"), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
               "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}  # fmt: skip
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp}}).execute()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        def scrub(text: str) -> str:  # no paths of the machine that ran it
            return text.replace(tmp + os.sep, "").replace(tmp, ".").replace(sys.prefix, "<venv>")

        for cell in (c for c in nb.cells if c.cell_type == "code"):
            # warnings on stderr (progress-bar widgets, …) are noise in a committed notebook
            cell["outputs"] = [o for o in cell.get("outputs", []) if o.get("name") != "stderr"]
            for out in cell["outputs"]:
                if "text" in out:
                    out["text"] = scrub(out["text"])
                for mime, value in out.get("data", {}).items():
                    if isinstance(value, str) and not mime.startswith("image/"):
                        out["data"][mime] = scrub(value)


def notebooks() -> dict[str, nbformat.NotebookNode]:
    """The three notebooks as built from the cells above (no outputs)."""
    out = {}
    for name, cells in (
        ("01_trace_a_rag_app.ipynb", NB1),
        ("02_analyze_traces.ipynb", NB2),
        ("03_evaluate_and_compare.ipynb", NB3),
    ):
        cells = [nbformat.from_dict(dict(c)) for c in cells]
        for i, cell in enumerate(cells):
            cell["id"] = f"{name[:2]}-{i:02d}"  # stable ids: rebuilding gives identical files
        meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
        out[name] = new_notebook(cells=cells, metadata=meta)
    return out


def main(execute: bool = False) -> None:
    for name, nb in notebooks().items():
        if execute:
            _execute(nb)
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    import sys

    main(execute="--execute" in sys.argv[1:])
