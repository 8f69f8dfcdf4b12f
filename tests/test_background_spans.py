"""Background spans (``ragtrail.tracing._background``): the Chroma connector's spans are built off the
caller's thread. These tests pin what must not change for a user: ids and parents, the attributes,
nothing lost at flush / force_flush / shutdown / under backpressure, the application's later changes
never leaking into the trace, and the ordinary SDK path when the sampler is not the default.

Real Chroma (in-process), real SQLite store; no model or LLM is involved (vectors are given).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import uuid

import pytest

chromadb = pytest.importorskip("chromadb")

from opentelemetry import context as otel_context  # noqa: E402
from opentelemetry import trace as otel_trace  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, TraceIdRatioBased  # noqa: E402

import ragtrail  # noqa: E402
from ragtrail import semconv  # noqa: E402
from ragtrail.connectors import chroma as rt_chroma  # noqa: E402
from ragtrail.tracing import _background  # noqa: E402


def _collection(name: str):  # type: ignore[no-untyped-def]
    # the in-process client is shared by the whole test process: a fresh name per call
    col = chromadb.EphemeralClient().create_collection(f"{name}-{uuid.uuid4().hex[:8]}", embedding_function=None)
    col.add(
        ids=["a", "b", "c"],
        embeddings=[[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]],
        documents=["alpha doc", "beta doc", "gamma doc"],
        metadatas=[{"tag": "x"}, {"tag": "y"}, {"tag": "z"}],
    )
    return col


@pytest.fixture
def inst(traced):  # type: ignore[no-untyped-def]
    rt_chroma.instrument()
    try:
        yield traced
    finally:
        rt_chroma.uninstrument()


def _query_spans(traced):  # type: ignore[no-untyped-def]
    """The Chroma query spans (``retrieval {collection}``)."""
    return [s for s in traced.spans() if s.name.startswith("retrieval bg-")]


def test_query_span_is_built_off_thread_with_the_callers_ids_and_parent(inst) -> None:
    col = _collection("bg-ids")
    inst.spans()
    inst.memory.clear()
    seen: dict[str, object] = {}
    with ragtrail.span("app", kind="CHAIN") as app:
        orig = col._client._query  # runs inside the query: the current span there is the query span

        def spy(*a, **k):  # type: ignore[no-untyped-def]
            cur = otel_trace.get_current_span()
            seen["ctx"] = cur.get_span_context()
            cur.set_attribute("app.inside", "yes")  # code inside the call can annotate the span
            seen["thread"] = threading.get_ident()
            return orig(*a, **k)

        col._client._query = spy
        try:
            res = col.query(query_embeddings=[[1.0, 0.0]], n_results=2)
        finally:
            col._client._query = orig
    spans = _query_spans(inst)
    assert len(spans) == 1
    q = spans[0]
    assert q.context.span_id == seen["ctx"].span_id and q.context.trace_id == app.get_span_context().trace_id  # type: ignore[attr-defined]
    assert q.parent is not None and q.parent.span_id == app.get_span_context().span_id
    a = q.attributes
    assert a["app.inside"] == "yes"
    assert list(a[semconv.RETRIEVAL_DOCUMENT_IDS]) == res["ids"][0] == ["a", "c"]
    docs = json.loads(a[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
    assert [d["content"] for d in docs] == ["alpha doc", "gamma doc"]
    assert q.start_time < q.end_time and app.start_time <= q.start_time  # type: ignore[attr-defined]
    assert _background.stats()["queued"] == 0


def test_changes_the_application_makes_afterwards_do_not_reach_the_trace(inst) -> None:
    col = _collection("bg-snapshot")
    res = col.query(query_embeddings=[[0.0, 1.0]], n_results=1)
    res["metadatas"][0][0]["tag"] = "changed by the app"  # LangChain hands these dicts to Documents
    res["documents"][0][0] = "rewritten"
    res["ids"][0].append("extra")
    (q,) = _query_spans(inst)
    docs = json.loads(q.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
    assert docs == [
        {"id": "b", "rank": 0, "score": pytest.approx(1.0), "content": "beta doc", "metadata": {"tag": "y"}}
    ]
    assert list(q.attributes[semconv.RETRIEVAL_DOCUMENT_IDS]) == ["b"]


def test_nothing_is_lost_at_shutdown_force_flush_or_under_backpressure(inst, monkeypatch) -> None:
    col = _collection("bg-drain")
    inst.spans()
    inst.memory.clear()
    # the provider's own force_flush (what an app or an OTel integration calls) drains the queue
    col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
    assert inst.config.provider.force_flush()  # type: ignore[attr-defined]
    assert [s.name for s in inst.memory.get_finished_spans()] == [f"retrieval {col.name}"]
    # a full queue makes the caller build its own span: every span still arrives
    monkeypatch.setattr(_background, "_MAX_QUEUE", 2)
    for _ in range(7):
        col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
    assert len(_query_spans(inst)) == 8
    # shutdown drains what is queued into the store
    for _ in range(5):
        col.query(query_embeddings=[[0.0, 1.0]], n_results=1)
    ragtrail.shutdown()
    df = ragtrail.Client(store=inst.store_path).spans_df(project="test")
    assert (df["name"] == f"retrieval {col.name}").sum() == 13
    assert _background.stats()["queued"] == 0


def test_a_failing_attribute_function_loses_the_attributes_not_the_span(inst, monkeypatch) -> None:
    from ragtrail.connectors.chroma import _instrumentor as impl

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise RuntimeError("attribute builder bug")

    col = _collection("bg-failure")
    before = rt_chroma.failures()
    monkeypatch.setattr(impl, "_query_attributes", boom)
    res = col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
    assert res["ids"] == [["a"]]  # the app got its answer
    (q,) = _query_spans(inst)
    assert semconv.GEN_AI_RETRIEVAL_DOCUMENTS not in q.attributes and q.attributes[semconv.RETRIEVAL_TOP_K] == 1
    assert rt_chroma.failures() == before + 1
    assert ragtrail.stats()["failed"] == 0  # the span itself was built and stored


def test_errors_inside_the_call_are_recorded_on_the_background_span(inst) -> None:
    col = _collection("bg-error")
    with pytest.raises(Exception) as info:
        col.query(query_embeddings=[[1.0, 0.0, 0.0]], n_results=1)  # wrong dimension
    (q,) = _query_spans(inst)
    assert q.status.status_code.name == "ERROR" and q.attributes[semconv.ERROR_TYPE] == type(info.value).__qualname__
    assert [e.name for e in q.events] == ["exception"]


@pytest.mark.parametrize("sampler", [ALWAYS_OFF, TraceIdRatioBased(1.0)], ids=["always_off", "ratio"])
def test_a_non_default_sampler_gets_ordinary_sdk_spans(tmp_path, sampler) -> None:
    mem = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(mem))
    ragtrail.init(project="s", store=str(tmp_path / "s.db"), tracer_provider=provider)
    rt_chroma.instrument()
    try:
        col = _collection("bg-sampler")
        before = _background.stats()["emitted"]
        col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
        # the SDK path, on this thread: visible to the app's processor before any flush
        names = [s.name for s in mem.get_finished_spans() if s.name == f"retrieval {col.name}"]
        assert names == ([] if sampler is ALWAYS_OFF else [f"retrieval {col.name}"])
        assert _background.stats()["emitted"] == before
    finally:
        rt_chroma.uninstrument()
        ragtrail.shutdown()


def test_an_unsampled_parent_gets_no_child_span(inst) -> None:
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    col = _collection("bg-unsampled")
    inst.spans()
    inst.memory.clear()
    parent = NonRecordingSpan(SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(0)))
    with otel_trace.use_span(parent):
        col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
    assert _query_spans(inst) == []


def test_the_eval_harness_scores_from_chroma_spans_built_off_thread(inst) -> None:
    """An example is scored from its trace as soon as the pipeline returns: the harness builds any
    queued background span of that trace first (a regression guard: retrieval metrics were undefined)."""
    from ragtrail.evals import Dataset, Evaluation, scorers

    col = _collection("bg-eval")
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [0.7, 0.7]}
    records = [{"id": f"e{i}", "input": k, "relevant": {k: 1}} for i, k in enumerate(["a", "b", "c"] * 4)]

    def pipeline(q: str) -> str:
        res = col.query(query_embeddings=[vectors[q]], n_results=2)
        return " ".join(res["documents"][0])

    run = Evaluation("bg-eval", Dataset.from_records(records), pipeline, [scorers.hit_rate(1)],
                     max_concurrency=4, progress=False).run()  # fmt: skip
    m = run.summary["metrics"]["hit_rate@1"]
    assert m["n_ok"] == 12 and m["n_undefined"] == 0 and m["mean"] == 1.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_builds_its_own_spans_and_not_the_parents(inst) -> None:
    tracer = inst.config.tracer
    w = _background._worker_for(tracer)
    assert w is not None
    queued, token = _background.start(tracer, "parent-queued", {})
    otel_context.detach(token)
    queued.end_ns = queued.start_ns + 1
    w.queue.append(queued)  # a parent span still queued at the fork...
    w._lock.acquire()  # ...and the worker's lock held while forking
    try:
        pid = os.fork()
        if pid == 0:  # the child: must not deadlock on the inherited lock, nor emit the parent's span
            code = 3
            signal.alarm(20)  # a deadlocked child dies (SIGALRM) instead of hanging the test
            try:
                before = _background.stats()["emitted"]
                span, tok = _background.start(tracer, "child", {"k": 1})
                _background.finish(span, tok)
                _background.drain_all()
                st = _background.stats()
                code = 0 if st["emitted"] - before == 1 and st["queued"] == 0 else 1
            finally:
                os._exit(code)
    finally:
        w._lock.release()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    names = [s.name for s in inst.spans()]
    assert "parent-queued" in names and "child" not in names


def test_an_app_shutting_its_provider_down_gets_the_queued_spans(tmp_path) -> None:
    """On the app's own provider ragtrail's processor comes after the app's (it is never moved: that
    would need the SDK's private processor list), so the app's shutdown would run before a drain:
    there, spans are finished on the caller's thread and the app's exporter has them at once."""
    mem = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(mem))
    ragtrail.init(project="sd", store=str(tmp_path / "sd.db"), tracer_provider=provider)
    rt_chroma.instrument()
    try:
        col = _collection("bg-provider-shutdown")
        assert _background._worker_for(ragtrail.tracing.get_config().tracer) is None
        col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
        assert _background.stats()["queued"] == 0
        provider.shutdown()
        (q,) = [s for s in mem.get_finished_spans() if s.name == f"retrieval {col.name}"]
        assert list(q.attributes[semconv.RETRIEVAL_DOCUMENT_IDS]) == ["a"]
    finally:
        rt_chroma.uninstrument()
        ragtrail.shutdown()
