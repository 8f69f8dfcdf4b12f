"""``init(otlp_endpoint=…)`` over OTLP/HTTP and OTLP/gRPC, the OpenInference translation, and eval
scores as ``gen_ai.evaluation.result`` events. The OTLP back end here is a real ``ragtrail serve``
receiver on loopback, writing into its own SQLite store (separate from the app's local store)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import ragtrail
from ragtrail import ConfigError, semconv
from ragtrail.evals import Score
from ragtrail.server import Receiver
from ragtrail.tracing import record_documents, record_usage, set_content
from ragtrail.tracing._evalevents import EVALUATION_SPAN_NAME, emit_evaluation_events
from ragtrail.tracing._otlp import OpenInferenceSpanExporter, _transport, make_otlp_exporter, openinference_attributes


@pytest.fixture
def backend(tmp_path) -> Iterator[Receiver]:  # type: ignore[no-untyped-def]
    r = Receiver(str(tmp_path / "backend.db"), http_port=0, grpc_port=0).start()
    try:
        yield r
    finally:
        r.stop()


def _rag_trace() -> str:
    with ragtrail.span("answer", kind="CHAIN", input={"question": "what is OTLP?"}) as root:
        with ragtrail.span("embed", kind="EMBEDDING", attributes={semconv.EMBEDDING_MODEL: "all-MiniLM-L6-v2"}):
            pass
        with ragtrail.span("search", kind="RETRIEVER", attributes={semconv.GEN_AI_RETRIEVAL_QUERY_TEXT: "what is OTLP?"}) as r:
            record_documents(r, [{"id": "d1", "score": 0.9, "content": "OTLP is..."}, {"id": "d2", "score": 0.5}])
        with ragtrail.span("chat", kind="LLM") as llm:
            set_content(llm, semconv.GEN_AI_INPUT_MESSAGES, [{"role": "user", "content": "what is OTLP?"}])
            set_content(llm, semconv.GEN_AI_OUTPUT_MESSAGES, [{"role": "assistant", "content": "a protocol"}])
            llm.set_attribute(semconv.GEN_AI_REQUEST_TEMPERATURE, 0.2)
            record_usage(llm, provider="openai", model="gpt-4o-mini", input_tokens=120, output_tokens=7)
        set_content(root, semconv.OUTPUT_VALUE, "a protocol")
    return format(root.get_span_context().trace_id, "032x")


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_init_exports_over_otlp_with_openinference_names(tmp_path, backend, transport):
    endpoint = (
        f"http://127.0.0.1:{backend.http_port}" if transport == "http" else f"grpc://127.0.0.1:{backend.grpc_port}"
    )
    ragtrail.init(project="oi", store=str(tmp_path / "local.db"), otlp_endpoint=endpoint, openinference=True,
                  schedule_delay_ms=50)  # fmt: skip
    try:
        trace_id = _rag_trace()
        assert ragtrail.flush(10)
    finally:
        ragtrail.shutdown()
    assert backend.queue.drain(10)
    remote = ragtrail.Client(backend.store).trace(trace_id)
    local = ragtrail.Client(str(tmp_path / "local.db")).trace(trace_id)
    assert len(remote) == len(local) == 4
    by = {s.name: s for s in remote.spans}
    assert {s.name: s.attributes[semconv.OI_SPAN_KIND] for s in remote.spans} == {
        "answer": "CHAIN", "embed": "EMBEDDING", "search": "RETRIEVER", "chat": "LLM",
    }  # fmt: skip
    llm = by["chat"].attributes
    assert llm[semconv.OI_LLM_MODEL_NAME] == "gpt-4o-mini"
    assert (llm[semconv.OI_LLM_TOKEN_COUNT_PROMPT], llm[semconv.OI_LLM_TOKEN_COUNT_COMPLETION]) == (120, 7)
    assert llm[semconv.OI_LLM_TOKEN_COUNT_TOTAL] == 127
    assert llm["llm.input_messages.0.message.role"] == "user"
    assert llm["llm.input_messages.0.message.content"] == "what is OTLP?"
    assert llm["llm.output_messages.0.message.content"] == "a protocol"
    assert json.loads(llm[semconv.OI_LLM_INVOCATION_PARAMETERS]) == {"temperature": 0.2}
    assert llm[semconv.OI_LLM_COST_TOTAL] == pytest.approx(by["chat"].cost_usd)
    docs = by["search"].attributes
    assert docs["retrieval.documents.0.document.id"] == "d1"
    assert docs["retrieval.documents.0.document.score"] == pytest.approx(0.9)
    assert docs["retrieval.documents.0.document.content"] == "OTLP is..."
    assert docs["retrieval.documents.1.document.id"] == "d2"
    assert docs[semconv.OI_INPUT_VALUE] == "what is OTLP?"
    assert by["embed"].attributes[semconv.OI_EMBEDDING_MODEL_NAME] == "all-MiniLM-L6-v2"
    root = by["answer"].attributes
    assert json.loads(root[semconv.OI_INPUT_VALUE]) == {"question": "what is OTLP?"}
    assert root[semconv.OI_INPUT_MIME_TYPE] == "application/json"
    assert (root[semconv.OI_OUTPUT_VALUE], root[semconv.OI_OUTPUT_MIME_TYPE]) == ("a protocol", "text/plain")
    # parents survive the trip, and the app's own store is left untranslated
    assert by["chat"].parent_span_id == by["answer"].span_id
    assert all(semconv.OI_SPAN_KIND not in s.attributes for s in local.spans)
    assert by["chat"].input_tokens == 120  # the receiver promotes GenAI usage to its columns


def test_without_openinference_the_export_is_plain(tmp_path, backend):
    ragtrail.init(project="plain", store=str(tmp_path / "l.db"), otlp_endpoint=f"http://127.0.0.1:{backend.http_port}",
                  schedule_delay_ms=50)  # fmt: skip
    try:
        trace_id = _rag_trace()
        assert ragtrail.flush(10)
    finally:
        ragtrail.shutdown()
    assert backend.queue.drain(10)
    spans = ragtrail.Client(backend.store).trace(trace_id).spans
    assert len(spans) == 4 and all(semconv.OI_SPAN_KIND not in s.attributes for s in spans)


def test_endpoints_pick_the_transport():
    assert _transport("http://collector:4318") == ("http", "http://collector:4318/v1/traces", True)
    assert _transport("https://otlp.example.com/api/v1/traces") == (
        "http", "https://otlp.example.com/api/v1/traces", False,
    )  # fmt: skip
    assert _transport("grpc://collector:4317") == ("grpc", "collector:4317", True)
    assert _transport("grpcs://collector") == ("grpc", "collector:4317", False)
    assert _transport("http://collector:4317")[0] == "grpc"  # the gRPC port means gRPC
    assert isinstance(make_otlp_exporter("http://127.0.0.1:4318", openinference=True), OpenInferenceSpanExporter)
    for bad in ("ftp://x:1", "http://", "http://h:notaport"):
        with pytest.raises(ConfigError):
            make_otlp_exporter(bad)


def test_openinference_extractors_are_guarded():
    # a broken documents attribute loses only the documents, never the rest
    out = openinference_attributes({
        semconv.SPAN_KIND: "RETRIEVER", semconv.GEN_AI_RETRIEVAL_DOCUMENTS: "{not json",
        semconv.GEN_AI_USAGE_INPUT_TOKENS: 3,
    })  # fmt: skip
    assert out[semconv.OI_SPAN_KIND] == "RETRIEVER" and out[semconv.OI_LLM_TOKEN_COUNT_PROMPT] == 3
    assert not any(k.startswith("retrieval.documents.") for k in out)
    # OTel GenAI "parts" messages are flattened to text
    out = openinference_attributes({
        semconv.SPAN_KIND: "LLM",
        semconv.GEN_AI_INPUT_MESSAGES: json.dumps([{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]),
    })  # fmt: skip
    assert out["llm.input_messages.0.message.content"] == "hi"
    # tool calls and tool answers, and the system instructions as the first message
    out = openinference_attributes({
        semconv.SPAN_KIND: "LLM",
        semconv.GEN_AI_SYSTEM_INSTRUCTIONS: json.dumps([{"type": "text", "content": "be brief"}]),
        semconv.GEN_AI_INPUT_MESSAGES: json.dumps([
            {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "f", "arguments": {"a": 1}}]},
            {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "42"}]},
        ]),
    })  # fmt: skip
    assert out["llm.input_messages.0.message.role"] == "system"
    assert out["llm.input_messages.0.message.content"] == "be brief"
    assert out["llm.input_messages.1.message.tool_calls.0.tool_call.id"] == "c1"
    assert out["llm.input_messages.1.message.tool_calls.0.tool_call.function.name"] == "f"
    assert json.loads(out["llm.input_messages.1.message.tool_calls.0.tool_call.function.arguments"]) == {"a": 1}
    assert out["llm.input_messages.2.message.role"] == "tool"
    assert out["llm.input_messages.2.message.tool_call_id"] == "c1"
    assert out["llm.input_messages.2.message.content"] == "42"


def _events(span) -> list[dict]:  # type: ignore[no-untyped-def]
    return [e["attributes"] for e in (span.events or []) if e["name"] == semconv.GEN_AI_EVALUATION_RESULT]


def test_scores_become_evaluation_events_on_the_open_root_span(tmp_path, backend):
    ragtrail.init(project="ev", store=str(tmp_path / "l.db"), otlp_endpoint=f"http://127.0.0.1:{backend.http_port}",
                  schedule_delay_ms=50)  # fmt: skip
    try:
        with ragtrail.span("example", kind="CHAIN") as root:
            n = emit_evaluation_events(root, {
                "faithfulness": Score(0.75, reason="3 of 4 claims supported", details={"label": "mostly"}),
                "exact_match": True,
                "context_recall": Score.undefined("no reference contexts"),
            })  # fmt: skip
        assert n == 3
        assert ragtrail.flush(10)
        trace_id = format(root.get_span_context().trace_id, "032x")
        local = ragtrail.Client(str(tmp_path / "l.db")).trace(trace_id)
    finally:
        ragtrail.shutdown()
    assert backend.queue.drain(10)
    remote = ragtrail.Client(backend.store).trace(trace_id)
    for tr in (local, remote):  # in the store and at the OTLP back end alike
        ev = {e[semconv.GEN_AI_EVALUATION_NAME]: e for e in _events(tr.root)}
        assert set(ev) == {"faithfulness", "exact_match", "context_recall"}
        f = ev["faithfulness"]
        assert f[semconv.GEN_AI_EVALUATION_SCORE_VALUE] == 0.75
        assert f[semconv.GEN_AI_EVALUATION_SCORE_LABEL] == "mostly"
        assert f[semconv.GEN_AI_EVALUATION_EXPLANATION] == "3 of 4 claims supported"
        assert ev["exact_match"][semconv.GEN_AI_EVALUATION_SCORE_VALUE] == 1.0
        assert ev["exact_match"][semconv.GEN_AI_EVALUATION_SCORE_LABEL] == "pass"
        u = ev["context_recall"]
        assert semconv.GEN_AI_EVALUATION_SCORE_VALUE not in u
        assert u[semconv.GEN_AI_EVALUATION_SCORE_LABEL] == u[semconv.EVAL_SCORE_STATUS] == "undefined"


def test_scores_after_the_root_ended_go_on_a_child_span_of_the_same_trace(traced):
    with ragtrail.span("example", kind="CHAIN") as root:
        pass
    stored_root = traced.client().trace(format(root.get_span_context().trace_id, "032x")).root
    n = emit_evaluation_events(stored_root, [("recall@5", Score.ok(0.4)), ("judge", Score.error("timeout"))],
                               run_id="run-1", example_id="ex-7")  # fmt: skip
    assert n == 2
    tr = traced.client().trace(stored_root.trace_id)
    carrier = next(s for s in tr.spans if s.name == EVALUATION_SPAN_NAME)
    assert carrier.parent_span_id == stored_root.span_id and carrier.kind == semconv.EVALUATOR
    assert carrier.attributes[semconv.EVAL_RUN_ID] == "run-1"
    assert carrier.attributes[semconv.EVAL_EXAMPLE_ID] == "ex-7"
    ev = {e[semconv.GEN_AI_EVALUATION_NAME]: e for e in _events(carrier)}
    assert ev["recall@5"][semconv.GEN_AI_EVALUATION_SCORE_VALUE] == 0.4
    assert ev["judge"][semconv.EVAL_SCORE_STATUS] == "error"
    assert ev["judge"][semconv.GEN_AI_EVALUATION_EXPLANATION] == "timeout"


def test_evaluation_events_are_a_no_op_before_init():
    assert emit_evaluation_events(("0" * 31 + "1", "0" * 15 + "1"), {"x": 1.0}) == 0
