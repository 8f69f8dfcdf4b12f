"""GenAI spans from other SDKs get ragtrail's kind and cost at ingest (issue 21), in-process and over OTLP.

The attribute sets are written by hand from each project's published conventions:
* OpenLLMetry (traceloop's ``opentelemetry-instrumentation-openai``): ``llm.request.type``, ``gen_ai.system``,
  the earlier ``gen_ai.usage.prompt_tokens``/``completion_tokens``, ``traceloop.span.kind`` on workflows;
* the OTel contrib ``opentelemetry-instrumentation-openai-v2``: ``gen_ai.operation.name``,
  ``gen_ai.provider.name``, ``gen_ai.usage.input_tokens``/``output_tokens``, span kind CLIENT;
* OpenInference (Phoenix's instrumentations): ``openinference.span.kind``, ``llm.model_name``,
  ``llm.provider``, ``llm.token_count.*``.
The spans are made by the real OpenTelemetry SDK; the OTLP path uses the stock exporters into a real
receiver over a real SQLite store.
"""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

import ragtrail
from ragtrail import semconv
from ragtrail.tracing._classify import classify, derive_kind

# 812 input / 64 output tokens of gpt-4o-mini at 0.15 / 0.60 USD per million
EXPECTED = 812 * 0.15e-6 + 64 * 0.60e-6  # 0.0001602

OPENLLMETRY = {
    "llm.request.type": "chat",
    "gen_ai.system": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.usage.prompt_tokens": 812,
    "gen_ai.usage.completion_tokens": 64,
    "llm.usage.total_tokens": 876,
    "gen_ai.prompt.0.role": "user",
    "gen_ai.prompt.0.content": "What is the capital of France?",
    "gen_ai.completion.0.content": "Paris.",
}
OTEL_CONTRIB = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
    "gen_ai.response.id": "chatcmpl-123",
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.usage.input_tokens": 812,
    "gen_ai.usage.output_tokens": 64,
    "server.address": "api.openai.com",
    "server.port": 443,
}
OPENINFERENCE = {
    "openinference.span.kind": "LLM",
    "llm.model_name": "gpt-4o-mini-2024-07-18",
    "llm.provider": "openai",
    "llm.system": "openai",
    "llm.token_count.prompt": 812,
    "llm.token_count.completion": 64,
    "llm.token_count.total": 876,
    "input.value": "What is the capital of France?",
    "output.value": "Paris.",
}
SHAPES = {"openllmetry": OPENLLMETRY, "otel_contrib": OTEL_CONTRIB, "openinference": OPENINFERENCE}
KIND_SOURCE = {"openllmetry": "openllmetry", "otel_contrib": "gen_ai", "openinference": "openinference"}


@pytest.mark.parametrize(
    ("attrs", "kind"),
    [
        ({"gen_ai.operation.name": op}, k)
        for op, k in [
            ("chat", "LLM"),
            ("text_completion", "LLM"),
            ("generate_content", "LLM"),
            ("embeddings", "EMBEDDING"),
            ("execute_tool", "TOOL"),
            ("invoke_agent", "AGENT"),
            ("create_agent", "AGENT"),
            ("retrieval", "RETRIEVER"),
        ]
    ]
    + [({"openinference.span.kind": k}, k) for k in semconv.SPAN_KINDS]
    + [({"llm.request.type": "embedding"}, "EMBEDDING"), ({"traceloop.span.kind": "workflow"}, "CHAIN")],
)
def test_kind_rules(attrs, kind):
    assert derive_kind(attrs)[0] == kind
    assert classify(attrs)[semconv.SPAN_KIND] == kind


def test_spans_with_a_ragtrail_kind_or_no_signal_are_left_alone():
    assert classify({semconv.SPAN_KIND: "CHAIN", "gen_ai.operation.name": "chat"}) is None
    assert classify({"http.method": "GET"}) is None
    # a vLLM server span (earlier token names, no operation): no kind, so its tokens are not promoted
    assert classify({"gen_ai.usage.prompt_tokens": 5, "gen_ai.request.model": "gpt-4o-mini"}) is None


def test_unknown_model_gets_a_kind_but_no_cost():
    out = classify(
        {"gen_ai.operation.name": "chat", "gen_ai.request.model": "my-own-llm", "gen_ai.usage.input_tokens": 3}
    )
    assert out[semconv.SPAN_KIND] == "LLM" and semconv.COST_USD not in out


def _make(shape: str, tp: TracerProvider) -> None:
    tracer = tp.get_tracer("opentelemetry.instrumentation.openai", "0.40.0")
    with tracer.start_as_current_span(f"chat gpt-4o-mini ({shape})", kind=SpanKind.CLIENT, attributes=SHAPES[shape]):
        pass


def _check(df) -> None:  # type: ignore[no-untyped-def]
    by_name = {r["name"]: r for _, r in df.iterrows()}
    for shape in SHAPES:
        row = by_name[f"chat gpt-4o-mini ({shape})"]
        assert row["kind"] == "LLM", shape
        assert row["input_tokens"] == 812 and row["output_tokens"] == 64, shape
        assert row["cost_usd"] == pytest.approx(EXPECTED, rel=1e-9), shape
        attrs = row["attributes"]
        assert attrs[semconv.COST_SOURCE] == "price_table"
        assert attrs[semconv.KIND_SOURCE] == KIND_SOURCE[shape]
        assert semconv.COST_USD in attrs[semconv.DERIVED] and semconv.SPAN_KIND in attrs[semconv.DERIVED]
        for k, v in SHAPES[shape].items():  # everything the sender sent is kept as sent
            assert attrs[k] == (list(v) if isinstance(v, tuple) else v)


def test_in_process_spans_from_other_instrumentations_are_classified_and_priced(traced):
    pytest.importorskip("pandas")
    from opentelemetry import trace

    tp = trace.get_tracer_provider()
    for shape in SHAPES:
        _make(shape, tp)  # type: ignore[arg-type]
    assert ragtrail.flush(10)
    df = traced.client().spans_df(kind="LLM")
    assert len(df) == 3
    _check(df)
    assert EXPECTED == pytest.approx(0.0001602)


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_spans_received_over_otlp_are_classified_and_priced(tmp_path, transport):
    pytest.importorskip("pandas")
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    from ragtrail.server import Receiver

    rec = Receiver(str(tmp_path / "r.db"), http_port=0, grpc_port=0, project="recv").start()
    try:
        if transport == "http":
            exporter = HttpExporter(endpoint=f"http://127.0.0.1:{rec.http_port}/v1/traces")
        else:
            exporter = GrpcExporter(endpoint=f"127.0.0.1:{rec.grpc_port}", insecure=True)
        tp = TracerProvider(resource=Resource.create({"service.name": "other-sdk"}))
        tp.add_span_processor(SimpleSpanProcessor(exporter))
        for shape in SHAPES:
            _make(shape, tp)
        tp.shutdown()
        assert rec.queue.drain(10)
        df = ragtrail.Client(store=rec.store).spans_df(kind="LLM")
        assert len(df) == 3
        _check(df)
        traces = ragtrail.Client(store=rec.store).traces_df()
        assert traces["cost_usd"].sum() == pytest.approx(3 * EXPECTED)
    finally:
        rec.stop()


def test_user_prices_apply_in_process(store_path):
    from opentelemetry import trace

    ragtrail.init(project="p", store=store_path, prices={"gpt-4o-mini": {"input": 1.0, "output": 2.0}})
    try:
        _make("otel_contrib", trace.get_tracer_provider())  # type: ignore[arg-type]
        assert ragtrail.flush(10)
        row = ragtrail.Client(store=store_path).store.query("SELECT cost_usd, attributes FROM spans")[0]
        assert row[0] == pytest.approx((812 * 1.0 + 64 * 2.0) / 1e6)
        assert json.loads(row[1])[semconv.COST_SOURCE] == "user_prices"
    finally:
        ragtrail.shutdown()
