"""Tracing core: the span helpers, @trace on every kind of function, init() wiring, content capture,
masking, byte caps and non-JSON values. Real OpenTelemetry SDK and a real SQLite store throughout."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import ragtrail
from ragtrail import semconv
from ragtrail.tracing import _setup, set_content
from ragtrail.tracing._content import to_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, *args: str, env: dict[str, str] | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=e,
        timeout=timeout,
        cwd=ROOT,
    )


# ------------------------------------------------------------------------------------------ no-op
def test_helpers_are_noops_before_init():
    ragtrail.shutdown()
    assert _setup.get_config() is None
    with ragtrail.span("x", kind="LLM") as s:
        assert not s.is_recording()
        ragtrail.record_usage(s, provider="openai", model="gpt-4o", input_tokens=1, output_tokens=1)
        set_content(s, semconv.INPUT_VALUE, "hi")

    @ragtrail.trace
    def f(a):
        return a + 1

    @ragtrail.trace
    def g():
        yield from (1, 2)

    assert f(1) == 2
    assert list(g()) == [1, 2]
    assert ragtrail.flush() is True
    assert ragtrail.stats() == {"exported": 0, "dropped": 0, "failed": 0, "export_errors": 0, "spooled": 0}
    from ragtrail.tracing import get_tracer, is_enabled

    assert not is_enabled()
    assert not get_tracer().start_span("x").is_recording()


# ------------------------------------------------------------------------------ @trace and span()
def _attrs(span):
    return dict(span.attributes)


def test_span_context_manager_nests_and_records_kind(traced):
    with ragtrail.span("outer", kind="CHAIN", attributes={semconv.METADATA: "m"}, input={"q": 1}) as outer:
        with ragtrail.span("inner", kind="RETRIEVER") as inner:
            assert inner.is_recording()
    [i] = traced.by_name("inner")
    [o] = traced.by_name("outer")
    assert i.parent.span_id == o.context.span_id
    assert _attrs(i)[semconv.SPAN_KIND] == "RETRIEVER"
    assert _attrs(o)[semconv.METADATA] == "m"
    assert json.loads(_attrs(o)[semconv.INPUT_VALUE]) == {"q": 1}
    assert outer is not inner


def test_bad_kind_is_a_clear_error():
    with pytest.raises(ragtrail.ConfigError, match="kind must be one of"):
        ragtrail.span("x", kind="NOPE")
    with pytest.raises(ragtrail.ConfigError):
        ragtrail.trace(kind="NOPE")


def test_trace_sync_records_inputs_outputs(traced):
    @ragtrail.trace(kind="TOOL")
    def add(a, b=2):
        return {"sum": a + b}

    assert add(1, b=5) == {"sum": 6}
    [s] = traced.by_name("add")
    a = _attrs(s)
    assert a[semconv.SPAN_KIND] == "TOOL"
    assert json.loads(a[semconv.INPUT_VALUE]) == {"a": 1, "b": 5}
    assert json.loads(a[semconv.OUTPUT_VALUE]) == {"sum": 6}
    assert s.status.status_code is not StatusCode.ERROR


def test_trace_sync_error_sets_status_event_and_reraises(traced):
    class Boom(RuntimeError):
        pass

    @ragtrail.trace(name="explode")
    def explode(x):
        raise Boom(f"bad {x}")

    with pytest.raises(Boom, match="bad 3") as ei:
        explode(3)
    assert type(ei.value) is Boom  # the very exception, unchanged
    [s] = traced.by_name("explode")
    assert s.status.status_code is StatusCode.ERROR
    assert "bad 3" in s.status.description
    assert _attrs(s)[semconv.ERROR_TYPE].endswith("Boom")
    ev = [e for e in s.events if e.name == "exception"]
    assert ev and ev[0].attributes["exception.message"] == "bad 3"
    # the stored span carries the error too
    df = traced.client().spans_df(name="explode")
    assert df.iloc[0].status == "ERROR"


def test_trace_async(traced):
    @ragtrail.trace(kind="LLM")
    async def ask(q):
        await asyncio.sleep(0)
        with ragtrail.span("child"):
            pass
        return q * 2

    @ragtrail.trace
    async def fail():
        await asyncio.sleep(0)
        raise ValueError("async nope")

    assert asyncio.run(ask("ab")) == "abab"
    with pytest.raises(ValueError, match="async nope"):
        asyncio.run(fail())
    [s] = traced.by_name("ask")
    [c] = traced.by_name("child")
    assert c.parent.span_id == s.context.span_id
    assert _attrs(s)[semconv.INPUT_VALUE] == "ab"
    assert _attrs(s)[semconv.OUTPUT_VALUE] == "abab"
    [f] = traced.by_name("fail")
    assert f.status.status_code is StatusCode.ERROR
    assert any(e.name == "exception" for e in f.events)


def test_trace_generator(traced):
    @ragtrail.trace
    def tokens(n):
        for i in range(n):
            yield f"t{i} "

    @ragtrail.trace
    def broken():
        yield 1
        raise KeyError("gen")

    assert list(tokens(3)) == ["t0 ", "t1 ", "t2 "]
    with pytest.raises(KeyError):
        list(broken())
    [s] = traced.by_name("tokens")
    assert _attrs(s)[semconv.INPUT_VALUE] == "3"
    assert _attrs(s)[semconv.OUTPUT_VALUE] == "t0 t1 t2 "
    [b] = traced.by_name("broken")
    assert b.status.status_code is StatusCode.ERROR
    assert json.loads(_attrs(b)[semconv.OUTPUT_VALUE]) == [1]


def test_trace_async_generator(traced):
    @ragtrail.trace(kind="LLM")
    async def stream(n):
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    @ragtrail.trace
    async def astream_fail():
        yield "a"
        raise OSError("stream cut")

    async def consume(agen):
        return [x async for x in agen]

    assert asyncio.run(consume(stream(3))) == [0, 1, 2]
    with pytest.raises(OSError, match="stream cut"):
        asyncio.run(consume(astream_fail()))
    [s] = traced.by_name("stream")
    assert json.loads(_attrs(s)[semconv.OUTPUT_VALUE]) == [0, 1, 2]
    [f] = traced.by_name("astream_fail")
    assert f.status.status_code is StatusCode.ERROR


def test_span_block_error_propagates(traced):
    with pytest.raises(ZeroDivisionError):
        with ragtrail.span("div"):
            1 / 0  # noqa: B018
    [s] = traced.by_name("div")
    assert s.status.status_code is StatusCode.ERROR
    assert _attrs(s)[semconv.ERROR_TYPE] == "ZeroDivisionError"


def test_methods_do_not_record_self(traced):
    class Pipe:
        @ragtrail.trace
        def run(self, q):
            return q

    Pipe().run("x")
    [s] = traced.by_name("Pipe.run")
    assert _attrs(s)[semconv.INPUT_VALUE] == "x"


# ----------------------------------------------------------------------------------------- init
def test_init_twice_warns_and_does_not_stack(tmp_path):
    from opentelemetry.sdk.trace import TracerProvider

    prov = TracerProvider()
    mem = InMemorySpanExporter()
    ragtrail.init(project="a", store=str(tmp_path / "a.db"), tracer_provider=prov)
    with pytest.warns(ragtrail.RagtrailWarning, match="called again"):
        ragtrail.init(project="b", store=str(tmp_path / "b.db"), tracer_provider=prov, exporters=[mem])
    try:
        procs = prov._active_span_processor._span_processors
        assert sum(isinstance(p, _setup._Switch) for p in procs) == 1
        with ragtrail.span("once"):
            pass
        assert ragtrail.flush()
        assert len(mem.get_finished_spans()) == 1  # exported once, not once per init
        assert ragtrail.Client(str(tmp_path / "b.db")).spans_df()["project"].tolist() == ["b"]
        assert ragtrail.Client(str(tmp_path / "a.db")).spans_df().empty
    finally:
        ragtrail.shutdown()


def test_init_adds_to_the_apps_own_provider(tmp_path):
    """The app set its own global TracerProvider first: ragtrail adds to it and never replaces it."""
    code = """
        import sys
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        app_mem = InMemorySpanExporter()
        app_provider = TracerProvider()
        app_provider.add_span_processor(SimpleSpanProcessor(app_mem))
        trace.set_tracer_provider(app_provider)
        import ragtrail
        ragtrail.init(project="app", store=sys.argv[1])
        assert trace.get_tracer_provider() is app_provider
        with trace.get_tracer("app").start_as_current_span("app-span"):
            with ragtrail.span("rt-span", kind="TOOL"):
                pass
        assert ragtrail.flush()
        names = sorted(s.name for s in app_mem.get_finished_spans())
        stored = sorted(ragtrail.Client(sys.argv[1]).spans_df()["name"])
        print(names, stored)
        assert names == ["app-span", "rt-span"], names
        assert stored == ["app-span", "rt-span"], stored
    """
    r = _run(code, str(tmp_path / "s.db"))
    assert r.returncode == 0, r.stderr


def test_init_rejects_unknown_options_and_bad_values(tmp_path):
    with pytest.raises(ragtrail.ConfigError, match="unknown option"):
        ragtrail.init(store=str(tmp_path / "x.db"), max_atribute_bytes=10)
    with pytest.raises(ragtrail.ConfigError, match="project"):
        ragtrail.init(project="", store=str(tmp_path / "x.db"))
    with pytest.raises(ragtrail.ConfigError, match="mask"):
        ragtrail.init(store=str(tmp_path / "x.db"), mask="nope")


def test_store_from_env_vars(tmp_path, monkeypatch):
    monkeypatch.delenv("RAGTRAIL_STORE", raising=False)
    monkeypatch.setenv("RAGTRAIL_HOME", str(tmp_path / "home"))
    cfg = ragtrail.init(project="env")
    try:
        assert cfg.store.url == str(tmp_path / "home" / "ragtrail.db")
    finally:
        ragtrail.shutdown()
    monkeypatch.setenv("RAGTRAIL_STORE", str(tmp_path / "explicit.db"))
    cfg = ragtrail.init(project="env")
    try:
        assert cfg.store.url == str(tmp_path / "explicit.db")
        assert ragtrail.Client().store.url == str(tmp_path / "explicit.db")
    finally:
        ragtrail.shutdown()


# -------------------------------------------------------------------------------------- content
@pytest.fixture
def no_content(store_path):
    mem = InMemorySpanExporter()
    ragtrail.init(project="private", store=store_path, capture_content=False, exporters=[mem])
    yield mem
    ragtrail.shutdown()


def test_capture_content_off_keeps_tokens_cost_latency(no_content, store_path):
    @ragtrail.trace(kind="LLM")
    def llm(prompt):
        with ragtrail.span("inner", input="secret prompt") as s:
            ragtrail.record_usage(s, provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
            ragtrail.record_documents(s, [{"id": "d1", "score": 0.5, "content": "private doc"}])
        return "private answer"

    llm("private question")
    assert ragtrail.flush()
    df = ragtrail.Client(store_path).spans_df()
    inner = df[df.name == "inner"].iloc[0]
    assert inner.input_tokens == 1000 and inner.output_tokens == 100
    assert inner.cost_usd == pytest.approx((1000 * 0.15 + 100 * 0.60) / 1e6)
    assert inner.duration_ms >= 0
    text = json.dumps(df["attributes"].tolist())
    for secret in ("private question", "private answer", "secret prompt", "private doc"):
        assert secret not in text
    assert semconv.INPUT_VALUE not in inner.attributes
    assert json.loads(inner.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS]) == [{"id": "d1", "rank": 0, "score": 0.5}]


SECRETS = {
    "openai": "sk-proj-abcdefghijklmnopqrstuvwxyz123456",
    "anthropic": "sk-ant-api03-abcdefghijklmnopqrstuv",
    "bearer": "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
    "url": "postgresql://alice:hunter2pass@db.example.com:5432/app",
    "kv": "password=correcthorsebattery",
    "hf": "hf_abcdefghijklmnopqrstuvwxyzAB",
    "aws": "AKIAIOSFODNN7EXAMPLE",
}


def test_secrets_are_masked_before_storage(traced):
    with ragtrail.span("leaky", input=dict(SECRETS)) as s:
        set_content(s, semconv.OUTPUT_VALUE, "my key is " + SECRETS["openai"])
    df = traced.client().spans_df(name="leaky")
    stored = json.dumps(df.iloc[0].attributes)
    for raw in (
        "abcdefghijklmnopqrstuvwxyz123456",
        "api03-abcdefghijkl",
        "eyJhbGciOiJIUzI1NiJ9",
        "hunter2pass",
        "correcthorsebattery",
        "hf_abcdefghijklmnopqrstuvwxyzAB",
        "AKIAIOSFODNN7EXAMPLE",
    ):
        assert raw not in stored, raw
    inp = json.loads(df.iloc[0].attributes[semconv.INPUT_VALUE])
    assert inp["url"] == "postgresql://alice:***@db.example.com:5432/app"  # still readable
    assert "Bearer ***" in inp["bearer"]
    assert df.iloc[0].attributes[semconv.MASKED] >= len(SECRETS)


def test_user_mask_hook(store_path):
    ragtrail.init(project="m", store=store_path, mask=lambda t: t.replace("Alice", "[name]"))
    try:
        with ragtrail.span("pii", input="Alice asked about sk-abcdefghijklmnopqrstuvwx"):
            pass
        ragtrail.flush()
        a = ragtrail.Client(store_path).spans_df().iloc[0].attributes
        assert a[semconv.INPUT_VALUE] == "[name] asked about sk-***"
    finally:
        ragtrail.shutdown()


def test_failing_mask_hook_drops_value_not_app(store_path):
    def bad(_t):
        raise RuntimeError("hook bug")

    ragtrail.init(project="m", store=store_path, mask=bad)
    try:
        with ragtrail.span("x", input="Alice"):
            pass
        ragtrail.flush()
        a = ragtrail.Client(store_path).spans_df().iloc[0].attributes
        assert "Alice" not in a[semconv.INPUT_VALUE]
    finally:
        ragtrail.shutdown()


def test_byte_cap_keeps_valid_json_and_marks_truncation(store_path):
    ragtrail.init(project="cap", store=store_path, max_attribute_bytes=1024)
    try:
        big = {"docs": [{"id": i, "text": "é" * 500} for i in range(50)], "q": "short"}
        with ragtrail.span("big", input=big) as s:
            set_content(s, semconv.OUTPUT_VALUE, "x" * 5000)
            set_content(s, semconv.METADATA, {"small": True})
        ragtrail.flush()
        a = ragtrail.Client(store_path).spans_df().iloc[0].attributes
        for key in (semconv.INPUT_VALUE, semconv.OUTPUT_VALUE):
            assert len(a[key].encode("utf-8")) <= 1024
        parsed = json.loads(a[semconv.INPUT_VALUE])  # still valid JSON
        assert parsed is not None
        assert a[semconv.OUTPUT_VALUE].startswith("xxxx") and a[semconv.OUTPUT_VALUE].endswith("[truncated]")
        assert sorted(a[semconv.TRUNCATED]) == sorted([semconv.INPUT_VALUE, semconv.OUTPUT_VALUE])
    finally:
        ragtrail.shutdown()


@pytest.mark.parametrize("cap", [64, 100, 257, 1000, 4096])
def test_to_json_always_valid_and_bounded(cap):
    values = [
        {"a": "x" * 10_000},
        ["€" * 3000, {"n": list(range(3000))}],
        {"nested": {"deep": [{"k": "v" * 100}] * 200}},
        "plain " * 1000,
    ]
    for v in values:
        text, truncated = to_json(v, cap)
        assert truncated
        assert len(text.encode("utf-8")) <= cap
        if not isinstance(v, str):
            json.loads(text)


class Opaque:
    def __repr__(self):
        return "<Opaque thing 42>"


class BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr")


def test_non_json_values_are_recorded_readably(traced):
    cyc: dict = {"name": "loop"}
    cyc["self"] = cyc
    lst: list = [1]
    lst.append(lst)

    @ragtrail.trace
    def weird(obj, raw, arr, cyc, lst, bad):
        return {"set": {3}, "arr": arr * 2}

    assert weird(Opaque(), b"\x00\x01binary", np.arange(6, dtype=np.float32).reshape(2, 3), cyc, lst, BadRepr())[
        "set"
    ] == {3}
    a = traced.client().spans_df(name="weird").iloc[0].attributes
    inp = json.loads(a[semconv.INPUT_VALUE])
    assert inp["obj"] == "<Opaque thing 42>"
    assert inp["raw"] == {"__bytes__": 8, "text": "\x00\x01binary"}
    assert inp["arr"]["shape"] == [2, 3] and inp["arr"]["dtype"] == "float32"
    assert inp["arr"]["head"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert inp["cyc"]["self"].startswith("<cycle")
    assert inp["lst"][1].startswith("<cycle")
    assert "unserialisable BadRepr" in inp["bad"]
    out = json.loads(a[semconv.OUTPUT_VALUE])
    assert out["set"] == [3] and out["arr"]["head"][:2] == [0.0, 2.0]


# --------------------------------------------------------------------------------- flush / stats
def test_flush_returns_true_and_stats_count(traced):
    for i in range(25):
        with ragtrail.span(f"s{i}"):
            pass
    assert ragtrail.flush(10) is True
    st = ragtrail.stats()
    assert st["exported"] == 25 and st["failed"] == 0 and st["dropped"] == 0


def test_queue_overflow_is_counted_as_dropped(store_path):
    """A slow exporter holds the worker; a 10-span queue then overflows and the drops are counted."""
    import threading

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Slow(SpanExporter):
        def __init__(self):
            self.started = threading.Event()
            self.release = threading.Event()
            self.n = 0

        def export(self, spans):
            self.started.set()
            self.release.wait(30)
            self.n += len(spans)
            return SpanExportResult.SUCCESS

    slow = Slow()
    ragtrail.init(
        project="q",
        store=store_path,
        store_exporter=False,
        exporters=[slow],
        max_queue_size=10,
        max_export_batch_size=10,
        schedule_delay_ms=60_000,
    )
    try:
        for _ in range(10):
            with ragtrail.span("s"):
                pass
        assert slow.started.wait(10)  # the worker took those 10 and is stuck in export()
        for _ in range(50):
            with ragtrail.span("s"):
                pass
        assert ragtrail.stats()["dropped"] == 40
        slow.release.set()
        assert ragtrail.flush() is False
        assert slow.n == 20
        with ragtrail.span("after"):
            pass
        assert ragtrail.flush() is True  # flush reports on what ended since the previous flush
    finally:
        slow.release.set()
        ragtrail.shutdown()


def test_bad_batch_options_are_config_errors(store_path):
    with pytest.raises(ragtrail.ConfigError, match="max_queue_size"):
        ragtrail.init(store=store_path, max_queue_size=0)
    cfg = ragtrail.init(store=store_path, max_queue_size=5, max_export_batch_size=100)  # clamped, not an error
    ragtrail.shutdown()
    assert cfg.project == "default"


# ------------------------------------------------------------------------- import and notebooks
def test_import_is_light():
    code = """
        import sys, ragtrail
        heavy = [m for m in ("langchain", "langchain_core", "llama_index", "chromadb", "vllm", "torch",
                             "pandas", "transformers", "sentence_transformers") if m in sys.modules]
        print(heavy)
        assert not heavy, heavy
    """
    r = _run(code)
    assert r.returncode == 0, r.stdout + r.stderr


def test_jupyter_post_cell_hook_flushes(tmp_path):
    """A real IPython shell: the span of a cell reaches the store after the cell, without flush()."""
    pytest.importorskip("IPython")
    code = """
        import sys
        from IPython.core.interactiveshell import InteractiveShell
        shell = InteractiveShell.instance()
        shell.run_cell("import ragtrail; ragtrail.init(project='nb', store=%r, schedule_delay_ms=600000)" % sys.argv[1])
        shell.run_cell("with ragtrail.span('cell-span'): pass")
        import sqlite3
        n = sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM spans WHERE name='cell-span'").fetchone()[0]
        print("stored", n)
        assert n == 1, n
        # registered once per shell, even when init() runs again
        shell.run_cell("import warnings; warnings.simplefilter('ignore'); ragtrail.init(project='nb', store=%r)" % sys.argv[1])
        from ragtrail.tracing import _setup
        cbs = [c for c in shell.events.callbacks["post_run_cell"] if c is _setup._post_cell_flush]
        assert len(cbs) == 1, cbs
    """
    r = _run(code, str(tmp_path / "nb.db"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_flush_runs_at_exit(tmp_path):
    code = """
        import sys, ragtrail
        ragtrail.init(project="exit", store=sys.argv[1], schedule_delay_ms=600000)
        for i in range(100):
            with ragtrail.span("e"):
                pass
    """
    r = _run(code, str(tmp_path / "exit.db"))
    assert r.returncode == 0, r.stderr
    assert ragtrail.Client(str(tmp_path / "exit.db")).store.count_spans() == 100


def test_warnings_module_untouched_by_span_use(traced):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ragtrail.span("quiet"):
            pass


def test_generator_context_is_not_leaked_to_the_consumer(traced, caplog):
    """Between items the consumer's spans are not children of the generator's span; closing the
    generator early ends its span without an error."""

    @ragtrail.trace
    def numbers():
        for i in range(10):
            with ragtrail.span(f"inner{i}"):
                pass
            yield i

    with ragtrail.span("consumer"):
        g = numbers()
        for x in g:
            with ragtrail.span(f"between{x}"):
                pass
            if x == 2:
                break
        g.close()
    by = {s.name: s for s in traced.spans()}
    gen, consumer = by["numbers"], by["consumer"]
    assert gen.parent.span_id == consumer.context.span_id
    assert by["inner0"].parent.span_id == gen.context.span_id  # the generator's own work is inside
    assert by["between0"].parent.span_id == consumer.context.span_id  # the consumer's is not
    assert gen.status.status_code is not StatusCode.ERROR
    assert json.loads(dict(gen.attributes)[semconv.OUTPUT_VALUE]) == [0, 1, 2]
    assert "inner3" not in by
    assert not [r for r in caplog.records if "detach" in r.getMessage().lower()]


def test_generator_send_throw_and_return_value(traced):
    @ragtrail.trace
    def echo():
        got = yield "ready"
        try:
            while True:
                got = yield f"echo {got}"
        except ValueError:
            yield "caught"
        return "done"

    def drive():
        g = echo()
        assert next(g) == "ready"
        assert g.send("a") == "echo a"
        assert g.throw(ValueError("x")) == "caught"
        try:
            next(g)
        except StopIteration as stop:
            return stop.value

    assert drive() == "done"
    [s] = traced.by_name("echo")
    assert s.status.status_code is not StatusCode.ERROR
    assert dict(s.attributes)[semconv.OUTPUT_VALUE] == "readyecho acaught"  # streamed text is joined


def test_async_generator_early_close_and_context(traced):
    @ragtrail.trace
    async def agen():
        for i in range(5):
            with ragtrail.span(f"ainner{i}"):
                pass
            yield i

    async def main():
        with ragtrail.span("aconsumer"):
            g = agen()
            async for x in g:
                with ragtrail.span(f"abetween{x}"):
                    pass
                if x == 1:
                    break
            await g.aclose()

    asyncio.run(main())
    by = {s.name: s for s in traced.spans()}
    assert by["ainner0"].parent.span_id == by["agen"].context.span_id
    assert by["abetween0"].parent.span_id == by["aconsumer"].context.span_id
    assert by["agen"].status.status_code is not StatusCode.ERROR


def test_failed_reinit_keeps_the_running_configuration(traced, tmp_path):
    bad = tmp_path / "file"
    bad.write_text("x")
    with pytest.raises(ragtrail.StoreError):
        ragtrail.init(project="other", store=str(bad / "x.db"))
    with pytest.raises(ragtrail.ConfigError):
        ragtrail.init(project="other", store=traced.store_path, exporters=["not an exporter"])
    with ragtrail.span("still-traced"):
        pass
    assert [s.name for s in traced.spans()] == ["still-traced"]
    assert _setup.get_config().project == "test"


def test_secrets_outside_set_content_are_masked_before_storage(traced):
    """An attribute set directly and an exception quoting a connection URL: masked in the store, the
    stored JSON stays valid."""
    dsn = "postgresql://app:Sup3rSecretPw@db.internal:5432/prod"
    with pytest.raises(ConnectionError):
        with ragtrail.span("direct", attributes={"app.dsn": dsn, "app.keys": ("sk-" + "A" * 30, "plain")}) as s:
            s.set_attribute("app.header", "Authorization: Bearer abcdefghijklmnop123")
            raise ConnectionError(f"could not connect to {dsn}")
    df = traced.client().spans_df(name="direct")
    row = df.iloc[0]
    stored = json.dumps(row.attributes)
    assert "Sup3rSecretPw" not in stored and "A" * 30 not in stored and "abcdefghijklmnop123" not in stored
    assert row.attributes["app.dsn"] == "postgresql://app:***@db.internal:5432/prod"
    assert row.attributes["app.keys"] == ["sk-***", "plain"]
    tr = traced.client().trace(row.trace_id)
    span = tr.root
    assert "Sup3rSecretPw" not in (span.status_message or "") and "***" in span.status_message
    assert "Sup3rSecretPw" not in json.dumps(span.events)


def test_mask_secrets_false_stores_values_verbatim(store_path):
    ragtrail.init(project="raw", store=store_path, mask_secrets=False)
    try:
        with ragtrail.span("raw", attributes={"app.dsn": "postgresql://app:pw12345@db/prod"}, input="sk-" + "B" * 30):
            pass
        ragtrail.flush()
        a = ragtrail.Client(store_path).spans_df().iloc[0].attributes
        assert a["app.dsn"] == "postgresql://app:pw12345@db/prod"
        assert a[semconv.INPUT_VALUE] == "sk-" + "B" * 30
    finally:
        ragtrail.shutdown()


def test_masking_leaves_look_alikes_alone():
    from ragtrail.tracing import mask_secrets

    for text in (
        "task-abcdefghijklmnopqrstuvwxyz",
        "see https://example.com/a@b",
        "the key point",
        "MASIAFOOBARBAZQUXQUUX12",
    ):
        assert mask_secrets(text) == (text, 0), text
    assert mask_secrets("x sk-abcdefghijklmnopqrstu and sk-zyxwvutsrqponmlkjihg") == ("x sk-*** and sk-***", 2)


def test_every_kind_of_secret_is_masked_and_caught_by_the_storage_guard():
    """One example per pattern: ``mask_secrets`` replaces it, and the exporter's substring guard (which
    decides whether attributes are re-masked before storage) sees it in a longer text."""
    from ragtrail.tracing import mask_secrets
    from ragtrail.tracing._content import Sanitizer, sanitize_attributes
    from ragtrail.tracing._secrets import _CASED, _UNCASED

    def _guard_hit(text: str) -> bool:
        return sanitize_attributes({"app.text": text}, Sanitizer())[0] is not None

    examples = {
        "sk-proj-abcdefghijklmnopqrstuvwx": "sk-***",
        "AKIAABCDEFGHIJKLMNOP": "AKIA***",
        "ASIAABCDEFGHIJKLMNOP": "AKIA***",
        "ghp_abcdefghijklmnopqrstuvwxyz": "gh_***",
        "ghs_abcdefghijklmnopqrstuvwxyz": "gh_***",
        "xoxb-1234567890-abcdef": "xox-***",
        "AIza" + "b" * 35: "AIza***",
        "hf_abcdefghijklmnopqrstuvwxyz": "hf_***",
        "https://user:pa55word@host/db": "https://user:***@host/db",
        "Authorization: Bearer abcdefghijklmnop123": "Authorization: Bearer ***",
        "api_key=abcd1234efgh": "api_key=***",
        "glpat-abcdefghijklmnopqrstu": "gl-***",
        "https://hooks.slack.com/services/T000/B000/XXXX": "https://hooks.slack.com/***",
        "sk_live_abcdefghijklmnop": "sk_***",
        "ya29.abcdefghijklmnopqrstuvwx": "ya29.***",
        "gsk_abcdefghijklmnopqrstuvwx": "sk_***",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl": "jwt-***",
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEE\n-----END EC PRIVATE KEY-----": "-----BEGIN PRIVATE KEY-----***",
        "https://acct.blob.core.windows.net/c?sv=2022&sig=abcdefghijklmnopqrstuv%3D": (
            "https://acct.blob.core.windows.net/c?sv=2022&sig=***"
        ),
        "Authorization: Basic dXNlcjpwYXNzd29yZA==": "Authorization: Basic ***",
    }
    assert len(examples) >= len(_CASED) + len(_UNCASED)
    for secret, masked in examples.items():
        text = f"some words, then {secret} and more words"
        assert mask_secrets(text) == (f"some words, then {masked} and more words", 1), secret
        assert _guard_hit(text), secret
    assert not _guard_hit("a right, high and thorough passage about Asia and IATA codes")


def test_content_masked_when_recorded_is_not_scanned_again_but_other_values_are(traced, monkeypatch):
    from ragtrail.tracing import _content

    scanned: list[str] = []
    real = _content.mask_secrets
    long_input = "a long question about the weather " * 20 + " token sk-" + "C" * 30
    with ragtrail.span("both", input=long_input) as s:
        s.set_attribute("app.conn", "postgresql://app:Hunter22pw@db/prod")  # set directly: not pre-masked
    # from here on (the export), record what the sanitising step searches
    monkeypatch.setattr(_content, "mask_secrets", lambda t: scanned.append(t) or real(t))
    row = traced.client().spans_df(name="both").iloc[0]
    assert "C" * 30 not in row.attributes[semconv.INPUT_VALUE] and "sk-***" in row.attributes[semconv.INPUT_VALUE]
    assert row.attributes["app.conn"] == "postgresql://app:***@db/prod"  # the guard still caught this one
    assert scanned and not any("a long question about the weather" in t for t in scanned)


def test_fresh_providers_always_get_the_processor(tmp_path):
    """Many short-lived providers (ids get reused after garbage collection): each one exports."""
    import gc

    from opentelemetry.sdk.trace import TracerProvider

    for i in range(30):
        mem = InMemorySpanExporter()
        ragtrail.init(project="p", store_exporter=False, exporters=[mem], tracer_provider=TracerProvider())
        try:
            with ragtrail.span(f"s{i}"):
                pass
            assert ragtrail.flush()
            assert [s.name for s in mem.get_finished_spans()] == [f"s{i}"], i
        finally:
            ragtrail.shutdown()
        gc.collect()
