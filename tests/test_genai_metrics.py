"""GenAI metrics for every call (issue 16): exact token and cost totals while only ~10% of traces are
stored; duration, time to first chunk and error attributes; the store's per-minute aggregates; the
Prometheus scrape endpoint. Real LangChain runnables; only the LLM's answers are fake (``ScriptedChat``,
a real BaseChatModel with scripted replies that reports usage like a provider)."""

from __future__ import annotations

import socket
import urllib.request
from typing import Any

import pytest
from langchain_core.messages import AIMessage
from langchain_core.prompts import ChatPromptTemplate
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

import ragtrail
from ragtrail import semconv
from ragtrail.connectors.langchain import CallbackHandler
from ragtrail.store import open_store
from ragtrail.tracing import compute_cost, make_sampler
from tests.test_langchain_support import ScriptedChat


class FailingChat(ScriptedChat):
    """A chat model whose call fails (a provider error), for the error.type attribute."""

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        raise TimeoutError("provider timed out")


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def test_metrics_count_every_call_while_traces_are_sampled(store_path) -> None:  # type: ignore[no-untyped-def]
    reader = InMemoryMetricReader()
    ragtrail.init(project="metered", store=store_path, tracer_provider=TracerProvider(sampler=make_sampler()),
                  sample_rate=0.1, keep_errors=False, metric_readers=[reader])  # fmt: skip
    handler = CallbackHandler()
    prompt = ChatPromptTemplate.from_messages([("user", "{q}")])
    models = [
        ScriptedChat(script=[AIMessage(content="a b c")], model_name="gpt-4o-mini", provider="openai"),
        ScriptedChat(script=[AIMessage(content="d e")], model_name="gpt-4o", provider="openai"),
    ]
    exp_in = exp_out = 0
    exp_cost = 0.0
    streamed = 0
    try:
        for i in range(1000):
            m = models[i % 2]
            m.input_tokens, m.output_tokens = 5 + i % 97, 1 + i % 13
            chain = prompt | m
            if i % 10 == 0:
                for _ in chain.stream({"q": f"q{i}"}, config={"callbacks": [handler]}):
                    pass
                streamed += 1
            else:
                chain.invoke({"q": f"q{i}"}, config={"callbacks": [handler]})
            exp_in += m.input_tokens
            exp_out += m.output_tokens
            cost = compute_cost("openai", m.model_name, m.input_tokens, m.output_tokens)
            assert cost is not None
            exp_cost += cost[0]
        failing = prompt | FailingChat(script=[AIMessage(content="x")], model_name="gpt-4o", provider="openai")
        for _ in range(3):
            with pytest.raises(TimeoutError):
                failing.invoke({"q": "x"}, config={"callbacks": [handler]})
        assert ragtrail.flush(30)
        pts = _points(reader)
        n_traces = int(open_store(store_path).query("SELECT COUNT(DISTINCT trace_id) FROM spans")[0][0])
    finally:
        ragtrail.shutdown()

    tokens = pts[semconv.METRIC_GEN_AI_TOKEN_USAGE]
    by_type = {
        t: sum(p.sum for p in tokens if p.attributes[semconv.GEN_AI_TOKEN_TYPE] == t) for t in ("input", "output")
    }
    assert by_type == {"input": exp_in, "output": exp_out}  # exact, although ~90% of traces were dropped
    assert sum(p.count for p in tokens) == 2000
    cost_total = sum(p.value for p in pts[semconv.METRIC_COST])
    assert cost_total == pytest.approx(exp_cost, rel=1e-9)
    # binomial(1003, 0.1): mean 100, sd 9.5
    assert 55 <= n_traces <= 150, n_traces

    dur = pts[semconv.METRIC_GEN_AI_OPERATION_DURATION]
    ok = [p for p in dur if semconv.ERROR_TYPE not in p.attributes]
    failed = [p for p in dur if semconv.ERROR_TYPE in p.attributes]
    assert sum(p.count for p in ok) == 1000
    assert sum(p.count for p in failed) == 3 and failed[0].attributes[semconv.ERROR_TYPE] == "TimeoutError"
    assert list(ok[0].explicit_bounds)[:3] == [0.01, 0.02, 0.04]  # the convention's boundaries
    assert list(tokens[0].explicit_bounds)[:3] == [1, 4, 16]
    for p in ok:
        a = p.attributes
        assert a[semconv.GEN_AI_OPERATION_NAME] == "chat" and a[semconv.GEN_AI_PROVIDER_NAME] == "openai"
        assert a[semconv.GEN_AI_REQUEST_MODEL] in ("gpt-4o-mini", "gpt-4o")
        assert a[semconv.GEN_AI_RESPONSE_MODEL].endswith("-2024-07-18")
    assert sum(p.count for p in pts[semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK]) == streamed

    # the same totals in the store's per-minute aggregates
    c = ragtrail.Client(store_path)
    df = c.metrics_df(semconv.METRIC_GEN_AI_TOKEN_USAGE)
    assert df.groupby("token_type")["sum"].sum().to_dict() == {"input": exp_in, "output": exp_out}
    assert set(df["project"]) == {"metered"}
    cost_df = c.metrics_df(semconv.METRIC_COST)
    assert cost_df["sum"].sum() == pytest.approx(exp_cost, rel=1e-9)
    assert set(cost_df["model"]) == {"gpt-4o-mini", "gpt-4o"}
    dur_df = c.metrics_df(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert dur_df["count"].sum() == 1003 and (dur_df["error_type"] == "TimeoutError").any()


def test_one_call_reported_by_two_connectors_counts_once(store_path) -> None:  # type: ignore[no-untyped-def]
    reader = InMemoryMetricReader()
    ragtrail.init(project="p", store=store_path, metric_readers=[reader])
    try:
        with ragtrail.span("chat gpt-4o", kind="LLM", attributes={semconv.GEN_AI_OPERATION_NAME: "chat"}) as s:
            ragtrail.record_usage(s, provider="openai", model="gpt-4o", input_tokens=10, output_tokens=2)
            ragtrail.record_usage(s, provider="openai", model="gpt-4o", input_tokens=10, output_tokens=2)
        pts = _points(reader)
    finally:
        ragtrail.shutdown()
    assert sum(p.sum for p in pts[semconv.METRIC_GEN_AI_TOKEN_USAGE]) == 12
    (d,) = pts[semconv.METRIC_GEN_AI_OPERATION_DURATION]
    assert d.count == 1 and d.attributes[semconv.GEN_AI_OPERATION_NAME] == "chat"


def test_metrics_off(store_path) -> None:  # type: ignore[no-untyped-def]
    cfg = ragtrail.init(project="p", store=store_path, metrics=False)
    try:
        assert cfg.metrics is None
    finally:
        ragtrail.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_prometheus_scrape_endpoint(store_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("opentelemetry.exporter.prometheus")
    port = _free_port()
    ragtrail.init(project="p", store=store_path, prometheus_port=port)
    try:
        with ragtrail.span("chat", kind="LLM") as s:
            ragtrail.record_usage(s, provider="openai", model="gpt-4o", input_tokens=1234, output_tokens=5)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        ragtrail.shutdown()
    lines = [ln for ln in body.splitlines() if ln.startswith("gen_ai_client_token_usage") and "_sum" in ln]
    assert any('gen_ai_token_type="input"' in ln and ln.endswith(" 1234.0") for ln in lines), lines
    assert "ragtrail_gen_ai_client_cost" in body


def test_bad_metric_options(store_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ragtrail.ConfigError, match="prometheus_port"):
        ragtrail.init(project="p", store=store_path, prometheus_port=70000)
    with pytest.raises(ragtrail.ConfigError, match="MetricReader"):
        ragtrail.init(project="p", store=store_path, metric_readers=[object()])


def test_serve_receives_otlp_metrics(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """App → OTLP/HTTP (the SDK's metric exporter, delta) → ``ragtrail serve`` → per-minute aggregates."""
    pytest.importorskip("fastapi")
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
        ExportMetricsServiceResponse,
    )
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    from ragtrail.server import Receiver

    recv_store = str(tmp_path / "recv.db")
    with Receiver(recv_store, http_port=0, grpc_port=None, project="fallback") as r:
        ragtrail.init(project="remote-app", otlp_endpoint=f"http://127.0.0.1:{r.http_port}", store_exporter=False)
        try:
            for i in range(50):
                with ragtrail.span("chat", kind="LLM") as s:
                    ragtrail.record_usage(
                        s, provider="openai", model="gpt-4o-mini", input_tokens=100 + i, output_tokens=3
                    )
            assert ragtrail.flush(30)
        finally:
            ragtrail.shutdown()
        # a cumulative point cannot be added up: refused per point, with the reason
        req = ExportMetricsServiceRequest()
        m = req.resource_metrics.add().scope_metrics.add().metrics.add()
        m.name = semconv.METRIC_COST
        m.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        m.sum.data_points.add(as_double=1.0, time_unix_nano=1)
        http = urllib.request.Request(f"http://127.0.0.1:{r.http_port}/v1/metrics", data=req.SerializeToString(),
                                      headers={"Content-Type": "application/x-protobuf"})  # fmt: skip
        resp = ExportMetricsServiceResponse.FromString(urllib.request.urlopen(http, timeout=10).read())
        assert resp.partial_success.rejected_data_points == 1
        assert "delta" in resp.partial_success.error_message
    df = ragtrail.Client(recv_store).metrics_df(semconv.METRIC_GEN_AI_TOKEN_USAGE)
    assert set(df["project"]) == {"remote-app"}  # from the sender's resource
    assert df.groupby("token_type")["sum"].sum().to_dict() == {"input": sum(100 + i for i in range(50)), "output": 150}
    cost = ragtrail.Client(recv_store).metrics_df(semconv.METRIC_COST)["sum"].sum()
    exp = sum(compute_cost("openai", "gpt-4o-mini", 100 + i, 3)[0] for i in range(50))  # type: ignore[index]
    assert cost == pytest.approx(exp, rel=1e-9)


@pytest.mark.parametrize("otlp_metrics", [None, True])
def test_openinference_export_sends_no_metrics_unless_asked(tmp_path, otlp_metrics) -> None:  # type: ignore[no-untyped-def]
    """``openinference=True`` targets Phoenix, which takes traces only (its /v1/metrics answers 405, logged
    as an export error every interval): the metrics then stay off OTLP unless ``otlp_metrics=True``."""
    pytest.importorskip("fastapi")
    from ragtrail.server import Receiver

    recv_store = str(tmp_path / "recv.db")
    opts = {} if otlp_metrics is None else {"otlp_metrics": otlp_metrics}
    with Receiver(recv_store, http_port=0, grpc_port=None, project="fallback") as r:
        ragtrail.init(project="phoenix-app", otlp_endpoint=f"http://127.0.0.1:{r.http_port}", store_exporter=False,
                      openinference=True, **opts)  # fmt: skip
        try:
            with ragtrail.span("chat", kind="LLM") as s:
                ragtrail.record_usage(s, provider="openai", model="gpt-4o-mini", input_tokens=10, output_tokens=3)
            assert ragtrail.flush(30)
        finally:
            ragtrail.shutdown()
    client = ragtrail.Client(recv_store)
    assert list(client.spans_df()["name"]) == ["chat"]  # the traces went over OTLP either way
    tokens = client.metrics_df(semconv.METRIC_GEN_AI_TOKEN_USAGE)
    assert len(tokens) == (0 if otlp_metrics is None else 2)  # input and output, only when asked


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_minute_aggregates_add_up(backend, store_path, request) -> None:  # type: ignore[no-untyped-def]
    """Points of one minute and series merge into one row (count and sum added, min/max widened), on
    SQLite and PostgreSQL; another minute or model is another row."""
    from ragtrail.store._metrics import MetricPoint, metric_totals, read_metric_minutes, write_metric_points

    url = request.getfixturevalue("pg_url") if backend == "postgres" else store_path
    store = open_store(url)
    t = 1_700_000_000 * 10**9  # 22:13:20 UTC: the minute starts at ...:13:00
    a = {semconv.GEN_AI_REQUEST_MODEL: "m1", semconv.GEN_AI_TOKEN_TYPE: "input"}
    name = semconv.METRIC_GEN_AI_TOKEN_USAGE
    write_metric_points(store, [MetricPoint(name, a, t, 2, 30.0, 10.0, 20.0)], "p")
    write_metric_points(store, [MetricPoint(name, a, t + 5 * 10**9, 1, 5.0, 5.0, 5.0)], "p")
    write_metric_points(store, [MetricPoint(name, a, t + 60 * 10**9, 1, 7.0, 7.0, 7.0)], "p")
    write_metric_points(store, [MetricPoint(name, {**a, semconv.GEN_AI_REQUEST_MODEL: "m2"}, t, 1, 1.0, 1.0, 1.0)], "p")
    rows = read_metric_minutes(store, metric=name)
    first = [r for r in rows if r[0] == 1_700_000_000 // 60 * 60 and r[5] == "m1"]
    assert len(rows) == 3 and len(first) == 1
    assert first[0][9:] == (3, 35.0, 5.0, 20.0)
    assert metric_totals(store, name, by=("model",)) == [("m1", 4, 42.0), ("m2", 1, 1.0)]
    store.close()
    df = ragtrail.Client(url).metrics_df(name, start=1_700_000_000 - 300, end=1_700_000_000 + 30)
    assert len(df) == 2 and df["count"].sum() == 4 and df["sum"].sum() == 36.0
    assert str(df["minute"].dt.tz) == "UTC" and df["count"].dtype == "int64"


def test_openai_connector_counts_sampled_out_calls(store_path) -> None:  # type: ignore[no-untyped-def]
    """The real ``openai`` client against the local OpenAI-compatible stub (fake answers only), at 0%
    sampling: no span is stored, yet every call's tokens, duration and operation are counted."""
    openai = pytest.importorskip("openai")
    import threading
    from http.server import ThreadingHTTPServer

    from ragtrail.connectors import openai as rt_openai
    from tests.test_openai_stub import _Stub

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    reader = InMemoryMetricReader()
    ragtrail.init(project="p", store=store_path, tracer_provider=TracerProvider(sampler=make_sampler()),
                  sample_rate=0.0, keep_errors=False, metric_readers=[reader])  # fmt: skip
    rt_openai.instrument()
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="sk-test")
        for _ in range(5):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert ragtrail.flush(10)
        pts = _points(reader)
        stored = int(open_store(store_path).query("SELECT COUNT(*) FROM spans")[0][0])
    finally:
        rt_openai.uninstrument()
        ragtrail.shutdown()
        server.shutdown()
        server.server_close()
    assert stored == 0
    tok = pts[semconv.METRIC_GEN_AI_TOKEN_USAGE]
    chat_in = sum(p.sum for p in tok if p.attributes[semconv.GEN_AI_OPERATION_NAME] == "chat"
                  and p.attributes[semconv.GEN_AI_TOKEN_TYPE] == "input")  # fmt: skip
    emb_in = sum(p.sum for p in tok if p.attributes[semconv.GEN_AI_OPERATION_NAME] == "embeddings")
    assert chat_in == 5 * 11 and emb_in == 6
    dur = {p.attributes[semconv.GEN_AI_OPERATION_NAME]: p.count for p in pts[semconv.METRIC_GEN_AI_OPERATION_DURATION]}
    assert dur == {"chat": 5, "embeddings": 1}
