"""``ragtrail serve``: OTLP/HTTP (protobuf, JSON) and OTLP/gRPC into a real SQLite store.

Payloads are real: spans made by the OpenTelemetry SDK and sent by the stock OTLP exporters, or encoded
with the SDK's own OTLP encoder. Back-pressure is produced for real too: another connection holds the
SQLite write lock, so the receiver's writer cannot write and its bounded queue fills up.
"""

from __future__ import annotations

import gzip
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import ragtrail
from ragtrail import semconv
from ragtrail.server import Receiver

PB = {"Content-Type": "application/x-protobuf"}


def make_spans(n: int, *, project: str | None = None):  # type: ignore[no-untyped-def]
    """n real SDK spans in one trace: a root and n-1 children, with GenAI usage on the children."""
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "sender"}))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("tests.sender")
    attrs = {semconv.PROJECT: project} if project else {}
    with tracer.start_as_current_span("root", attributes={semconv.SPAN_KIND: "CHAIN", **attrs}):
        for i in range(n - 1):
            with tracer.start_as_current_span(f"llm-{i}", attributes={semconv.SPAN_KIND: "LLM", **attrs}) as s:
                s.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, 10 + i)
                s.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 2)
                s.set_attribute(semconv.GEN_AI_REQUEST_MODEL, "m")
                s.add_event("tick", {"i": i})
    return mem.get_finished_spans()


def pb_body(n: int) -> tuple[bytes, list]:  # type: ignore[type-arg]
    spans = make_spans(n)
    return encode_spans(spans).SerializeToString(), spans


@pytest.fixture
def rec(tmp_path) -> Iterator[Receiver]:  # type: ignore[no-untyped-def]
    r = Receiver(str(tmp_path / "s.db"), http_port=0, grpc_port=0, project="recv").start()
    try:
        yield r
    finally:
        r.stop()


def url(r: Receiver) -> str:
    return f"http://127.0.0.1:{r.http_port}/v1/traces"


def rows(r: Receiver) -> dict[str, tuple]:  # type: ignore[type-arg]
    assert r.queue.drain(10)
    out = r.store.query("SELECT span_id, trace_id, parent_span_id, name, kind, input_tokens, output_tokens, "
                        "project, events, resource, status FROM spans")  # fmt: skip
    return {row[0]: row for row in out}


def test_protobuf_roundtrip_matches_the_in_process_row_layout(rec):
    body, spans = pb_body(4)
    resp = httpx.post(url(rec), content=body, headers=PB)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/x-protobuf"
    assert not trace_service_pb2.ExportTraceServiceResponse.FromString(resp.content).HasField("partial_success")
    got = rows(rec)
    assert len(got) == 4
    from ragtrail.tracing import span_to_row

    for s in spans:
        expected = span_to_row(s, "recv")
        row = rec.store.query("SELECT * FROM spans WHERE span_id = ?", (format(s.context.span_id, "016x"),))
        from ragtrail.store import SPAN_COLUMNS

        stored = dict(zip(_columns(rec), row[0]))
        exp = dict(zip(SPAN_COLUMNS, expected))
        for col in ("trace_id", "span_id", "parent_span_id", "name", "kind", "start_time_ns", "end_time_ns",
                    "status", "model", "input_tokens", "output_tokens", "project", "resource"):  # fmt: skip
            assert stored[col] == exp[col], col
        assert json.loads(stored["events"] or "null") == json.loads(exp["events"] or "null")
        attrs = json.loads(stored["attributes"])
        assert attrs.pop(semconv.OTLP_SCOPE_NAME) == "tests.sender"
        assert attrs == json.loads(exp["attributes"])


def _columns(r: Receiver) -> list[str]:
    if r.store.kind == "sqlite":
        return [c[1] for c in r.store.query("PRAGMA table_info(spans)")]
    raise AssertionError


def test_json_roundtrip_with_hex_ids(rec):
    """An OTLP/JSON body as the spec writes it: hex ids, camelCase keys, integer enums, string int64s."""
    trace_id, root_id, child_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173"
    doc = {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-svc"}},
                                    {"key": semconv.PROJECT, "value": {"stringValue": "json-proj"}}]},
        "scopeSpans": [{"scope": {"name": "manual"}, "spans": [
            {"traceId": trace_id, "spanId": root_id, "name": "root", "kind": 2,
             "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000",
             "attributes": [{"key": semconv.SPAN_KIND, "value": {"stringValue": "CHAIN"}}]},
            {"traceId": trace_id, "spanId": child_id, "parentSpanId": root_id, "name": "retrieve",
             "startTimeUnixNano": "1700000000100000000", "endTimeUnixNano": "1700000000600000000",
             "status": {"code": 2, "message": "boom"},
             "attributes": [{"key": semconv.RETRIEVAL_DOCUMENT_IDS,
                             "value": {"arrayValue": {"values": [{"stringValue": "d1"}, {"stringValue": "d2"}]}}},
                            {"key": semconv.GEN_AI_USAGE_INPUT_TOKENS, "value": {"intValue": "42"}}]},
        ]}],
    }]}  # fmt: skip
    resp = httpx.post(url(rec), json=doc)
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    assert rec.queue.drain(10)  # accepted spans are written by the receiver's writer thread
    tr = ragtrail.Client(rec.store).trace(trace_id)
    assert [s.name for s in tr.spans] == ["root", "retrieve"]
    child = tr.span(child_id)
    assert child.parent_span_id == root_id and child.status == "ERROR"
    assert child.input_tokens == 42 and child.duration_ms == pytest.approx(500.0)
    assert child.attributes[semconv.RETRIEVAL_DOCUMENT_IDS] == ["d1", "d2"]
    assert child.project == "json-proj"  # from the resource


def test_grpc_roundtrip_with_the_stock_exporter(rec):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    spans = make_spans(3)
    exp = OTLPSpanExporter(endpoint=f"127.0.0.1:{rec.grpc_port}", insecure=True)
    assert exp.export(spans).name == "SUCCESS"
    exp.shutdown()
    got = rows(rec)
    assert {format(s.context.span_id, "016x") for s in spans} == set(got)
    assert all(r[7] == "recv" for r in got.values())  # no project named: the receiver's --project


def test_the_same_span_sent_twice_is_stored_once(rec):
    body, _ = pb_body(3)
    assert httpx.post(url(rec), content=body, headers=PB).status_code == 200
    assert httpx.post(url(rec), content=body, headers=PB).status_code == 200
    assert len(rows(rec)) == 3


@pytest.mark.parametrize(
    ("body", "ctype", "needle"),
    [
        (b"\x0a\xff\xff\xff\xff\x0f", "application/x-protobuf", "protobuf"),
        (b"{not json", "application/json", "not valid JSON"),
        (b'{"resourceSpans": "nope"}', "application/json", "not an OTLP trace export"),
        (b"[1, 2]", "application/json", "JSON object"),
    ],
)
def test_malformed_payloads_get_400_with_the_reason(rec, body, ctype, needle):
    resp = httpx.post(url(rec), content=body, headers={"Content-Type": ctype})
    assert resp.status_code == 400
    if ctype == "application/json":
        assert needle in resp.json()["message"]
    else:
        assert needle in Status.FromString(resp.content).message
    assert rec.stats()["bad_request"] == 1


def test_spans_with_bad_ids_are_rejected_and_reported(rec):
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "ok"},
        {"traceId": "", "spanId": "eee19b7ec3c1b175", "name": "no-trace-id"},
    ]}]}]}  # fmt: skip
    resp = httpx.post(url(rec), json=doc)
    assert resp.status_code == 200
    assert resp.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert [r[3] for r in rows(rec).values()] == ["ok"]
    only_bad = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "", "spanId": "", "name": "x"}]}]}]}
    assert httpx.post(url(rec), json=only_bad).status_code == 400


def test_wrong_content_type_is_415(rec):
    resp = httpx.post(url(rec), content=b"x", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 415


def test_too_large_bodies_get_413_even_when_compressed(tmp_path):
    with Receiver(str(tmp_path / "s.db"), http_port=0, grpc_port=0, max_body_bytes=4096) as r:
        big, _ = pb_body(40)
        assert len(big) > 4096
        assert httpx.post(url(r), content=big, headers=PB).status_code == 413
        bomb = gzip.compress(b"\0" * 1_000_000)  # 1 KB on the wire, 1 MB inflated
        assert len(bomb) < 4096
        resp = httpx.post(url(r), content=bomb, headers={**PB, "Content-Encoding": "gzip"})
        assert resp.status_code == 413
        small, _ = pb_body(2)
        ok = httpx.post(url(r), content=gzip.compress(small), headers={**PB, "Content-Encoding": "gzip"})
        assert ok.status_code == 200
        # gRPC enforces the same limit on received messages
        with grpc.insecure_channel(f"127.0.0.1:{r.grpc_port}") as ch:
            stub = trace_service_pb2_grpc.TraceServiceStub(ch)
            with pytest.raises(grpc.RpcError) as ei:
                stub.Export(trace_service_pb2.ExportTraceServiceRequest.FromString(big), timeout=10)
            assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert r.queue.drain(10)
        assert r.store.count_spans() == 2


def test_bearer_token_is_required_when_set(tmp_path):
    with Receiver(str(tmp_path / "s.db"), http_port=0, grpc_port=0, token="s3cret") as r:
        body, _ = pb_body(2)
        assert httpx.post(url(r), content=body, headers=PB).status_code == 401
        bad = httpx.post(url(r), content=body, headers={**PB, "Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"].startswith("Bearer")
        good = httpx.post(url(r), content=body, headers={**PB, "Authorization": "Bearer s3cret"})
        assert good.status_code == 200
        req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        with grpc.insecure_channel(f"127.0.0.1:{r.grpc_port}") as ch:
            stub = trace_service_pb2_grpc.TraceServiceStub(ch)
            with pytest.raises(grpc.RpcError) as ei:
                stub.Export(req, metadata=(("authorization", "Bearer nope"),), timeout=10)
            assert ei.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stub.Export(req, metadata=(("authorization", "Bearer s3cret"),), timeout=10)
        assert r.queue.drain(10)
        assert r.store.count_spans() == 2


def test_full_queue_answers_429_with_retry_after_and_loses_nothing(tmp_path):
    path = str(tmp_path / "s.db")
    with Receiver(path, http_port=0, grpc_port=0, queue_size=10) as r:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # hold SQLite's write lock: the receiver's writer must wait
        try:
            accepted = []
            for _ in range(2):
                body, spans = pb_body(5)
                assert httpx.post(url(r), content=body, headers=PB).status_code == 200
                accepted += spans
            body, _ = pb_body(5)
            resp = httpx.post(url(r), content=body, headers=PB)
            assert resp.status_code == 429
            assert int(resp.headers["Retry-After"]) >= 1
            assert "queue is full" in Status.FromString(resp.content).message
            with grpc.insecure_channel(f"127.0.0.1:{r.grpc_port}") as ch:
                stub = trace_service_pb2_grpc.TraceServiceStub(ch)
                with pytest.raises(grpc.RpcError) as ei:
                    stub.Export(trace_service_pb2.ExportTraceServiceRequest.FromString(body), timeout=10)
                assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                info = dict(ei.value.trailing_metadata())["google.rpc.retryinfo-bin"]
                assert RetryInfo.FromString(info).retry_delay.seconds >= 1
            assert r.queue.pending <= 10  # bounded: refused requests were not buffered
            # the stock OTLP/HTTP exporter retries a 429; once the store frees up its spans arrive
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            late = make_spans(3)
            result: list = []
            t = threading.Thread(target=lambda: result.append(OTLPSpanExporter(endpoint=url(r), timeout=30).export(late)))
            t.start()
            time.sleep(0.3)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        t.join(30)
        assert result and result[0].name == "SUCCESS"
        assert r.queue.drain(10)
        stored = {row[0] for row in r.store.query("SELECT span_id FROM spans")}
        assert {format(s.context.span_id, "016x") for s in accepted + list(late)} <= stored
        assert len(stored) == 13
        assert r.stats()["busy"] >= 2


def test_serve_command_runs_stores_and_stops_on_sigterm(tmp_path):
    from typer.testing import CliRunner

    from ragtrail.cli import app

    help_out = CliRunner().invoke(app, ["serve", "--help"])
    assert help_out.exit_code == 0
    for opt in ("--host", "--http-port", "--grpc-port", "--store", "--token", "--max-body-bytes", "--queue-size"):
        assert opt in help_out.output

    def free() -> int:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        p = s.getsockname()[1]
        s.close()
        return p

    http_port, store = free(), str(tmp_path / "cli.db")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ragtrail.cli import main; main()", "serve", "--http-port", str(http_port), "--grpc-port", "-1",
         "--store", store, "--token", "t0k"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.2)
        body, spans = pb_body(3)
        resp = httpx.post(f"http://127.0.0.1:{http_port}/v1/traces", content=body,
                          headers={**PB, "Authorization": "Bearer t0k"})  # fmt: skip
        assert resp.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "3 spans written" in out
    assert ragtrail.Client(store).trace(format(spans[0].context.trace_id, "032x")).root.name == "root"


def test_bad_arguments_are_config_errors(tmp_path):
    from ragtrail import ConfigError

    with pytest.raises(ConfigError):
        Receiver(str(tmp_path / "s.db"), http_port=None, grpc_port=None)
    with pytest.raises(ConfigError):
        Receiver(str(tmp_path / "s.db"), max_body_bytes=10)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        with pytest.raises(ConfigError, match="cannot listen"):
            Receiver(str(tmp_path / "s.db"), http_port=busy.getsockname()[1], grpc_port=None).start()
    finally:
        busy.close()



@pytest.mark.postgres
def test_receiver_writes_into_postgresql(pg_url):
    """Remote workers → one receiver → a shared PostgreSQL store."""
    with Receiver(pg_url, http_port=0, grpc_port=0) as r:
        body, spans = pb_body(5)
        assert httpx.post(url(r), content=body, headers=PB).status_code == 200
        assert r.queue.drain(10)
    tr = ragtrail.Client(pg_url).trace(format(spans[0].context.trace_id, "032x"))
    assert len(tr) == 5 and tr.root.name == "root"
    assert sum(s.input_tokens or 0 for s in tr.spans) == sum(10 + i for i in range(4))
