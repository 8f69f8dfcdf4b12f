"""Sampling of whole traces (issue 16): ratio by trace id, parent-based across processes, eval runs and
errors always kept, name and project rules. Real SDK providers, real SQLite stores."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

import ragtrail
from ragtrail import semconv
from ragtrail._exceptions import ConfigError, RagtrailWarning
from ragtrail.store import open_store
from ragtrail.tracing import make_sampler


def _init(store_path: str, **options):  # type: ignore[no-untyped-def]
    mem = InMemorySpanExporter()
    provider = TracerProvider(sampler=make_sampler())
    ragtrail.init(
        project="sampled", store=store_path, exporters=[mem], tracer_provider=provider, schedule_delay_ms=50, **options
    )
    return mem


def _traces(store_path: str) -> dict[str, int]:
    ragtrail.flush(10)
    rows = open_store(store_path).query("SELECT trace_id, COUNT(*) FROM spans GROUP BY trace_id")
    return {r[0]: int(r[1]) for r in rows}


def _one_trace(name: str = "request", fail: bool = False) -> None:
    with ragtrail.span(name):
        with ragtrail.span("retrieve", kind="RETRIEVER"):
            pass
        try:
            with ragtrail.span("generate", kind="LLM"):
                if fail:
                    raise ValueError("model timed out")
        except ValueError:
            pass


def test_ratio_keeps_whole_traces(store_path) -> None:  # type: ignore[no-untyped-def]
    _init(store_path, sample_rate=0.1, keep_errors=False)
    try:
        for _ in range(2000):
            _one_trace()
        traces = _traces(store_path)
    finally:
        ragtrail.shutdown()
    # binomial(2000, 0.1): mean 200, sd 13.4 → 130..270 is beyond 5 sd
    assert 130 <= len(traces) <= 270, len(traces)
    assert set(traces.values()) == {3}  # never part of a trace


def test_unsampled_spans_do_not_record_without_keep_errors(store_path) -> None:  # type: ignore[no-untyped-def]
    _init(store_path, sample_rate=0.0, keep_errors=False)
    try:
        with ragtrail.span("root") as root, ragtrail.span("child") as child:
            assert not root.is_recording() and not child.is_recording()
            assert not root.get_span_context().trace_flags.sampled
        assert _traces(store_path) == {}
    finally:
        ragtrail.shutdown()


def test_errors_kept_whole_at_rate_zero(store_path) -> None:  # type: ignore[no-untyped-def]
    mem = _init(store_path, sample_rate=0.0)  # keep_errors defaults to True
    try:
        for _ in range(5):
            _one_trace(fail=False)
        _one_trace(fail=True)
        traces = _traces(store_path)
        keeper = ragtrail.tracing.get_config().error_keeper  # type: ignore[union-attr]
        assert keeper.kept_traces == 1 and keeper.discarded_traces == 5 and keeper.open_traces == 0
    finally:
        ragtrail.shutdown()
    assert list(traces.values()) == [3]  # the failed trace, all three spans, nothing else
    names = sorted(s.name for s in mem.get_finished_spans())
    assert names == ["generate", "request", "retrieve"]
    assert all(s.context.trace_flags.sampled for s in mem.get_finished_spans())
    status = dict(open_store(store_path).query("SELECT name, status FROM spans"))
    assert status["generate"] == "ERROR"


def test_error_buffer_is_bounded(store_path) -> None:  # type: ignore[no-untyped-def]
    _init(store_path, sample_rate=0.0)
    try:
        keeper = ragtrail.tracing.get_config().error_keeper  # type: ignore[union-attr]
        keeper.max_spans = 10
        with ragtrail.span("big"):
            for _ in range(50):
                with ragtrail.span("step"):
                    pass
            _one_trace(name="inner", fail=True)
        assert _traces(store_path) == {}  # overflowed: not kept (documented), and no memory held
        assert keeper.overflowed_traces == 1 and keeper.open_traces == 0
    finally:
        ragtrail.shutdown()


def test_eval_roots_and_name_rules_and_project_rates(store_path) -> None:  # type: ignore[no-untyped-def]
    _init(store_path, sample_rate={"sampled": 0.0, "*": 1.0}, sample_rules={"keep *": 1.0}, keep_errors=False)
    try:
        for i in range(20):
            with ragtrail.span(f"eval ex{i}", attributes={semconv.EVAL_RUN_ID: "run-1"}):
                with ragtrail.span("step"):
                    pass
            _one_trace(name="keep me")
            _one_trace(name="drop me")
        traces = _traces(store_path)
        roots = open_store(store_path).query("SELECT name FROM spans WHERE parent_span_id IS NULL")
    finally:
        ragtrail.shutdown()
    assert len(traces) == 40
    assert sorted({r[0].split(" ")[0] for r in roots}) == ["eval", "keep"]


def test_eval_run_traces_all_kept_at_rate_zero(store_path) -> None:  # type: ignore[no-untyped-def]
    from ragtrail.evals import Dataset, Evaluation, scorers

    _init(store_path, sample_rate=0.0, keep_errors=False)
    try:
        ds = Dataset.from_records([{"id": f"e{i}", "input": f"q{i}", "reference": "a"} for i in range(8)], "sampled-ds")

        def pipeline(q: str) -> str:
            with ragtrail.span("retrieve", kind="RETRIEVER"):
                return "a"

        run = Evaluation("sampled-eval", ds, pipeline, [scorers.exact_match()], progress=False).run()
        df = run.results_df()
        assert (df["status"] == "ok").all()
        traces = _traces(store_path)
    finally:
        ragtrail.shutdown()
    assert len(traces) == 8 and set(traces.values()) == {2}


def test_decision_travels_in_traceparent(store_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A second process (fresh interpreter, RAGTRAIL_SAMPLE_RATE from the environment) continues traces
    from ``traceparent`` headers: it keeps exactly the traces the first process sampled."""
    _init(store_path, sample_rate=0.5, keep_errors=False)
    headers = []
    try:
        for _ in range(60):
            with ragtrail.span("frontend") as s:
                carrier: dict[str, str] = {}
                inject(carrier)
                headers.append((s.get_span_context().trace_flags.sampled, carrier["traceparent"]))
        sampled_here = set(_traces(store_path))
    finally:
        ragtrail.shutdown()
    assert 10 < len(sampled_here) < 50
    child_store = str(tmp_path / "child.db")
    script = textwrap.dedent(
        """
        import json, sys
        import ragtrail
        from opentelemetry.propagate import extract
        from opentelemetry import context
        cfg = ragtrail.init(project="backend", store=sys.argv[1])
        print(cfg.provider.sampler.get_description(), file=sys.stderr)
        for tp in json.load(sys.stdin):
            tok = context.attach(extract({"traceparent": tp}))
            try:
                with ragtrail.span("backend"):
                    with ragtrail.span("db"):
                        pass
            finally:
                context.detach(tok)
        assert ragtrail.flush(10)
        """
    )
    import json

    env = {**os.environ, "RAGTRAIL_SAMPLE_RATE": "0.5", "PYTHONPATH": os.getcwd()}
    out = subprocess.run(
        [sys.executable, "-c", script, child_store],
        input=json.dumps([h for _, h in headers]),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "RagtrailRoot{rate=0.5" in out.stderr  # the environment's rate was applied at init
    child = open_store(child_store).query("SELECT DISTINCT trace_id FROM spans")
    assert {r[0] for r in child} == sampled_here


def test_app_sampler_is_never_replaced(store_path) -> None:  # type: ignore[no-untyped-def]
    provider = TracerProvider(sampler=ALWAYS_ON)
    with pytest.warns(RagtrailWarning, match="does not replace"):
        ragtrail.init(project="p", store=store_path, tracer_provider=provider, sample_rate=0.1)
    try:
        assert provider.sampler is ALWAYS_ON
    finally:
        ragtrail.shutdown()


@pytest.mark.parametrize("bad", [1.5, -0.1, "often", {"p": 2}])
def test_bad_rate_is_a_config_error(store_path, bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="sample rate"):
        ragtrail.init(project="p", store=store_path, sample_rate=bad)
    assert ragtrail.tracing.get_config() is None


def test_default_sampler_reads_as_the_sdk_default() -> None:
    """At 1.0 the sampler is the SDK default, so the background-span fast path stays on."""
    from opentelemetry.sdk.trace.sampling import ParentBased

    s = make_sampler(1.0)
    assert s.get_description() == ParentBased(ALWAYS_ON).get_description()
    assert make_sampler(0.5).get_description() != s.get_description()


def test_langchain_chain_failing_is_kept_with_content_at_rate_zero(store_path) -> None:  # type: ignore[no-untyped-def]
    """A real LangChain chain (fake chat model answers) at 0%: the successful calls leave nothing, the
    failed one is stored whole, content included; the handler holds no state afterwards."""
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnableLambda

    from ragtrail.connectors.langchain import CallbackHandler

    def check(text: str) -> str:
        if "boom" in text:
            raise RuntimeError("guardrail tripped")
        return text

    chain = (
        ChatPromptTemplate.from_messages([("user", "{q}")])
        | FakeListChatModel(responses=["fine", "fine", "boom"])
        | StrOutputParser()
        | RunnableLambda(check)
    )
    _init(store_path, sample_rate=0.0)
    handler = CallbackHandler()
    try:
        assert chain.invoke({"q": "one"}, config={"callbacks": [handler]}) == "fine"
        assert chain.invoke({"q": "two"}, config={"callbacks": [handler]}) == "fine"
        with pytest.raises(RuntimeError):
            chain.invoke({"q": "three"}, config={"callbacks": [handler]})
        traces = _traces(store_path)
        assert handler.open_runs == 0
    finally:
        ragtrail.shutdown()
    assert len(traces) == 1
    st = open_store(store_path)
    rows = st.query(f"SELECT kind, status, {st.attributes_sql()} FROM spans")  # noqa: S608
    assert any(r[1] == "ERROR" for r in rows)
    assert any("three" in (r[2] or "") for r in rows)  # content of the kept trace was recorded


def test_upstream_drop_is_kept_even_with_errors(store_path) -> None:  # type: ignore[no-untyped-def]
    """A trace another process dropped (traceparent sampled flag off) stays dropped here, errors and
    all: the decision is whole across processes; an upstream-sampled one is kept at rate 0."""
    from opentelemetry import context
    from opentelemetry.propagate import extract

    _init(store_path, sample_rate=0.0)  # keep_errors on
    try:
        dropped = "00-" + "a" * 32 + "-" + "b" * 16 + "-00"
        kept = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"
        for tp in (dropped, kept):
            tok = context.attach(extract({"traceparent": tp}))
            try:
                with ragtrail.span("backend") as s:
                    assert s.is_recording() == (tp == kept)
                    _one_trace(fail=True)
            finally:
                context.detach(tok)
        traces = _traces(store_path)
    finally:
        ragtrail.shutdown()
    assert set(traces) == {"c" * 32}
