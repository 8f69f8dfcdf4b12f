"""Everything OpenTelemetry sends is stored, in-process and over every OTLP transport (issue 21).

Spans are made by the real OpenTelemetry SDK and cover every field of the data model that ragtrail
stores: every span kind, links with typed attributes, a resource with many attributes, scopes with
versions, events, arrays of each attribute type, each status. The same spans are written in-process
(the store exporter) and sent through OTLP/HTTP protobuf, OTLP/HTTP JSON and OTLP/gRPC (stock
exporters, and the SDK's own encoder for JSON) into a real receiver; every stored column must match.
"""

from __future__ import annotations

import base64
import json
import sqlite3

import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

import ragtrail
from ragtrail import semconv
from ragtrail.server import Receiver
from ragtrail.store import SPAN_COLUMNS, open_store
from ragtrail.tracing import StoreSpanExporter

RESOURCE = {
    "service.name": "checkout",
    "service.version": "2.4.1",
    "deployment.environment.name": "staging",
    "host.name": "node-7",
    "k8s.pod.name": "checkout-5d9f",
    "process.pid": 4242,
    "process.runtime.version": "3.11.9",
    "telemetry.sdk.language": "python",
    "app.weights": (0.5, 0.25),
    "app.flags": (True, False),
    "app.ports": (80, 443),
    "app.zones": ("a", "b"),
}  # (no ragtrail.project: the receiver reads a project from the resource, the in-process exporter does not)
LINKED = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                     trace_flags=TraceFlags(1))  # fmt: skip


def make_spans():  # type: ignore[no-untyped-def]
    """Real SDK spans covering every stored field, in two scopes."""
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource(RESOURCE))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    app = tp.get_tracer("shop.checkout", "1.7.0")
    queue = tp.get_tracer("shop.queue")  # a scope without a version
    with app.start_as_current_span(
        "POST /checkout", kind=SpanKind.SERVER, attributes={"http.status_code": 200}
    ) as root:
        root.set_status(Status(StatusCode.OK))
        with app.start_as_current_span("price", kind=SpanKind.INTERNAL) as s:
            s.set_attributes({
                "str": "x", "int": -7, "float": 2.5, "bool": True,
                "strs": ("a", "b"), "ints": (1, 2, 3), "floats": (0.5, 1.5), "bools": (True, False),
            })  # fmt: skip
            s.add_event("cache.miss", {"key": "sku-1", "tries": 2, "ratio": 0.25, "hit": False, "ids": (1, 2)})
            s.add_event("empty")
        with app.start_as_current_span("GET inventory", kind=SpanKind.CLIENT) as s:
            s.set_status(Status(StatusCode.ERROR, "inventory timed out"))
            s.record_exception(TimeoutError("inventory timed out"))
        with queue.start_as_current_span("publish order", kind=SpanKind.PRODUCER):
            pass
    # a consumer in another trace, linked to the producer and to a remote span (fan-in)
    producer = next(s for s in mem.get_finished_spans() if s.name == "publish order")
    links = [
        Link(producer.context, {"messaging.batch.index": 0, "link.kind": "producer", "weights": (0.1, 0.2)}),
        Link(LINKED, {"ok": True}),
    ]
    with queue.start_as_current_span("process order", kind=SpanKind.CONSUMER, links=links):
        pass
    return tp, mem.get_finished_spans()


def _stored(store) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    rows = store.query(f"SELECT {', '.join(SPAN_COLUMNS)} FROM spans")  # noqa: S608
    out = {}
    for r in rows:
        d = dict(zip(SPAN_COLUMNS, r, strict=True))
        for k in ("attributes", "events", "resource", "links"):
            d[k] = json.loads(d[k]) if d[k] else None
        # the receiver also records the scope name as an attribute (it predates the scope_name column)
        (d["attributes"] or {}).pop(semconv.OTLP_SCOPE_NAME, None)
        out[d["span_id"]] = d
    return out


def _expected_checks(rows: dict[str, dict], spans) -> None:  # type: ignore[no-untyped-def]
    by_name = {d["name"]: d for d in rows.values()}
    assert {n: d["span_kind"] for n, d in by_name.items()} == {
        "POST /checkout": "SERVER", "price": "INTERNAL", "GET inventory": "CLIENT",
        "publish order": "PRODUCER", "process order": "CONSUMER",
    }  # fmt: skip
    for d in rows.values():
        assert d["resource"] == {k: list(v) if isinstance(v, tuple) else v for k, v in RESOURCE.items()}
    assert (by_name["price"]["scope_name"], by_name["price"]["scope_version"]) == ("shop.checkout", "1.7.0")
    assert (by_name["process order"]["scope_name"], by_name["process order"]["scope_version"]) == ("shop.queue", None)
    producer = next(s for s in spans if s.name == "publish order")
    assert by_name["process order"]["links"] == [
        {"trace_id": format(producer.context.trace_id, "032x"), "span_id": format(producer.context.span_id, "016x"),
         "attributes": {"messaging.batch.index": 0, "link.kind": "producer", "weights": [0.1, 0.2]}},
        {"trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": "b7ad6b7169203331", "attributes": {"ok": True}},
    ]  # fmt: skip
    assert by_name["price"]["links"] is None
    price = by_name["price"]
    assert price["attributes"] == {"str": "x", "int": -7, "float": 2.5, "bool": True, "strs": ["a", "b"],
                                   "ints": [1, 2, 3], "floats": [0.5, 1.5], "bools": [True, False]}  # fmt: skip
    assert [e["name"] for e in price["events"]] == ["cache.miss", "empty"]
    assert price["events"][0]["attributes"] == {"key": "sku-1", "tries": 2, "ratio": 0.25, "hit": False, "ids": [1, 2]}
    assert by_name["GET inventory"]["status"] == "ERROR"
    assert by_name["GET inventory"]["status_message"] == "inventory timed out"
    assert by_name["POST /checkout"]["status"] == "OK" and by_name["price"]["status"] == "UNSET"
    ns = {format(s.context.span_id, "016x"): (s.start_time, s.end_time) for s in spans}
    for sid, d in rows.items():
        assert (d["start_time_ns"], d["end_time_ns"]) == ns[sid]  # to the nanosecond


def _json_body(spans) -> bytes:  # type: ignore[no-untyped-def]
    """OTLP/JSON as the spec writes it (hex ids), from the SDK's own protobuf encoding."""
    doc = json_format.MessageToDict(encode_spans(spans))

    def hexify(o):  # type: ignore[no-untyped-def]
        if isinstance(o, dict):
            return {k: (base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") and v else hexify(v))
                    for k, v in o.items()}  # fmt: skip
        if isinstance(o, list):
            return [hexify(x) for x in o]
        return o

    return json.dumps(hexify(doc)).encode()


@pytest.fixture
def reference(tmp_path):  # type: ignore[no-untyped-def]
    """The spans stored in-process through the store exporter."""
    tp, spans = make_spans()
    store = open_store(str(tmp_path / "inproc.db"))
    exp = StoreSpanExporter(store, project="default")
    assert exp.export(spans).name == "SUCCESS"
    rows = _stored(store)
    _expected_checks(rows, spans)
    return spans, rows


def test_in_process_spans_keep_every_field(reference):
    spans, rows = reference
    assert len(rows) == len(spans) == 5


@pytest.mark.parametrize("transport", ["http-protobuf", "http-json", "grpc"])
def test_every_otlp_transport_stores_the_same_fields_as_in_process(tmp_path, reference, transport):
    spans, expected = reference
    rec = Receiver(str(tmp_path / f"{transport}.db"), http_port=0, grpc_port=0, project="default").start()
    try:
        if transport == "http-protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            assert (
                OTLPSpanExporter(endpoint=f"http://127.0.0.1:{rec.http_port}/v1/traces").export(spans).name == "SUCCESS"
            )
        elif transport == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

            assert Grpc(endpoint=f"127.0.0.1:{rec.grpc_port}", insecure=True).export(spans).name == "SUCCESS"
        else:
            resp = httpx.post(f"http://127.0.0.1:{rec.http_port}/v1/traces", content=_json_body(spans),
                              headers={"Content-Type": "application/json"})  # fmt: skip
            assert resp.status_code == 200
        assert rec.queue.drain(10)
        got = _stored(rec.store)
        for sid, row in expected.items():
            assert {k: v for k, v in got[sid].items() if v != row[k]} == {}, row["name"]
        assert got == expected  # every column, field for field
    finally:
        rec.stop()


def test_ragtrail_to_otlp_to_serve_loses_nothing(tmp_path):
    """ragtrail.init(otlp_endpoint=...) → `ragtrail serve`: the receiver's store equals the app's own."""
    from opentelemetry import trace

    rec = Receiver(str(tmp_path / "served.db"), http_port=0, grpc_port=None, project="app").start()
    local = str(tmp_path / "local.db")
    try:
        ragtrail.init(
            project="app", store=local, otlp_endpoint=f"http://127.0.0.1:{rec.http_port}", schedule_delay_ms=50
        )
        try:
            with ragtrail.span("answer", kind="CHAIN", attributes={"q": "why?"}) as root:
                root.add_event("note", {"n": 1})
                with ragtrail.span("llm", kind="LLM") as llm:
                    ragtrail.tracing.record_usage(llm, provider="openai", model="gpt-4o-mini",
                                                  input_tokens=812, output_tokens=64)  # fmt: skip
                    ctx = llm.get_span_context()
            tracer = trace.get_tracer("my.worker", "0.3.0")
            with tracer.start_as_current_span("batch", kind=SpanKind.CONSUMER, links=[Link(ctx, {"i": 3})]):
                pass
            assert ragtrail.flush(10)
        finally:
            ragtrail.shutdown()
        assert rec.queue.drain(10)
        mine, served = _stored(open_store(local)), _stored(rec.store)
        assert len(mine) == 3 and served == mine
        llm_row = next(d for d in served.values() if d["name"] == "llm")
        assert llm_row["cost_usd"] == pytest.approx(0.0001602)
        batch = next(d for d in served.values() if d["name"] == "batch")
        assert batch["span_kind"] == "CONSUMER" and batch["scope_version"] == "0.3.0"
        links = ragtrail.Client(store=rec.store).spans_linking_to(llm_row["span_id"])
        assert links == [{"trace_id": batch["trace_id"], "span_id": batch["span_id"], "name": "batch",
                          "attributes": {"i": 3}}]  # fmt: skip
    finally:
        rec.stop()


def test_spans_df_has_the_otel_columns(tmp_path):
    pytest.importorskip("pandas")
    _, spans = make_spans()
    store = open_store(str(tmp_path / "df.db"))
    StoreSpanExporter(store).export(spans)
    df = ragtrail.Client(store=store).spans_df()
    row = df[df["name"] == "process order"].iloc[0]
    assert row["span_kind"] == "CONSUMER" and row["scope_name"] == "shop.queue"
    assert isinstance(row["links"], list) and row["links"][1]["span_id"] == "b7ad6b7169203331"
    assert row["resource"]["deployment.environment.name"] == "staging"
    assert df[df["name"] == "price"].iloc[0]["links"] == []


def test_resent_duplicates_are_not_counted_as_written(tmp_path):
    _, spans = make_spans()
    body = encode_spans(spans).SerializeToString()
    rec = Receiver(str(tmp_path / "dup.db"), http_port=0, grpc_port=None).start()
    try:
        for _ in range(2):
            r = httpx.post(f"http://127.0.0.1:{rec.http_port}/v1/traces", content=body,
                           headers={"Content-Type": "application/x-protobuf"})  # fmt: skip
            assert r.status_code == 200
        assert rec.queue.drain(10)
        st = rec.stats()
        assert (st["spans_received"], st["spans_written"], st["spans_duplicates"]) == (10, 5, 5)
        assert rec.store.count_spans() == 5
    finally:
        rec.stop()


def test_a_store_written_before_migration_10_stays_readable(tmp_path):
    """A store at schema 7 (no OTel columns) with a span in it: opened, migrated, read, written."""
    path = tmp_path / "old.db"
    store = open_store(str(path))
    store.write_spans([("a" * 32, "b" * 16, None, "old", "CHAIN", 1, 2, 0.0, "OK", None, None, 3, 4, None, "p",
                        "{}", None, '{"service.name":"s"}')])  # fmt: skip
    store.close()
    con = sqlite3.connect(path)  # make it look like a store written before issue 21
    for col in ("span_kind", "links", "scope_name", "scope_version"):
        con.execute(f"ALTER TABLE spans DROP COLUMN {col}")
    con.execute("DELETE FROM ragtrail_migrations WHERE version = 10")
    con.commit()
    con.close()
    store = open_store(str(path))
    assert store.schema_version() >= 10
    df = ragtrail.Client(store=store).spans_df()
    assert list(df["name"]) == ["old"] and df.iloc[0]["links"] == [] and df.iloc[0]["resource"] == {"service.name": "s"}
    assert df["span_kind"].isna().all()


def test_serve_logs_the_ragtrail_logger_to_stderr_at_the_chosen_level(capfd):
    import logging

    from ragtrail._log import logger
    from ragtrail.cli._serve import _log_to_stderr

    before_handlers, before_level = list(logger.handlers), logger.level
    try:
        _log_to_stderr("INFO")
        _log_to_stderr("info")  # idempotent: one handler
        assert len(logger.handlers) == len(before_handlers) + 1 and logger.level == logging.INFO
        logger.info("receiver listening")
        logger.debug("not shown at INFO")
        err = capfd.readouterr().err
        assert "INFO ragtrail: receiver listening" in err and "not shown" not in err
        with pytest.raises(ragtrail.ConfigError, match="not a logging level"):
            _log_to_stderr("LOUD")
    finally:
        logger.handlers[:] = before_handlers
        logger.setLevel(before_level)


def test_openinference_translation_names_the_phoenix_project_and_keeps_links_kind_and_scope():
    from ragtrail.tracing._otlp import OpenInferenceSpanExporter

    _, spans = make_spans()
    mem = InMemorySpanExporter()
    OpenInferenceSpanExporter(mem).export(spans)
    out = {s.name: s for s in mem.get_finished_spans()}
    src = {s.name: s for s in spans}
    for name, s in out.items():
        # Phoenix routes spans by this resource attribute; without a ragtrail project: the service name
        assert s.resource.attributes[semconv.OI_PROJECT_NAME] == "checkout"
        assert {k: v for k, v in s.resource.attributes.items() if k != semconv.OI_PROJECT_NAME} == dict(
            src[name].resource.attributes
        )
        assert s.kind == src[name].kind and s.instrumentation_scope == src[name].instrumentation_scope
        assert [(link.context, dict(link.attributes)) for link in s.links] == [
            (link.context, dict(link.attributes)) for link in src[name].links
        ]
    tp = TracerProvider(resource=Resource({"service.name": "svc", semconv.OI_PROJECT_NAME: "chosen"}))
    mem2 = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(OpenInferenceSpanExporter(mem2)))
    with tp.get_tracer("t").start_as_current_span("x", attributes={semconv.PROJECT: "rt-project"}):
        pass
    (s,) = mem2.get_finished_spans()
    assert s.resource.attributes[semconv.OI_PROJECT_NAME] == "chosen"  # the app's own choice is kept
    tp3 = TracerProvider(resource=Resource({"service.name": "svc"}))
    mem3 = InMemorySpanExporter()
    tp3.add_span_processor(SimpleSpanProcessor(OpenInferenceSpanExporter(mem3)))
    with tp3.get_tracer("t").start_as_current_span("x", attributes={semconv.PROJECT: "rt-project"}):
        pass
    assert mem3.get_finished_spans()[0].resource.attributes[semconv.OI_PROJECT_NAME] == "rt-project"
    # ragtrail added to the app's own provider: the project ragtrail.init chose, not the app's service.name
    tp4 = TracerProvider(resource=Resource({"service.name": "svc"}))
    mem4 = InMemorySpanExporter()
    tp4.add_span_processor(SimpleSpanProcessor(OpenInferenceSpanExporter(mem4, project="rt-init")))
    with tp4.get_tracer("t").start_as_current_span("x"):
        pass
    assert mem4.get_finished_spans()[0].resource.attributes[semconv.OI_PROJECT_NAME] == "rt-init"


def test_postgresql_stores_the_same_fields(pg_url, reference):
    """The OTel columns on PostgreSQL (migration 10 there too): in-process and received, equal to SQLite's."""
    spans, expected = reference
    store = open_store(pg_url)
    assert StoreSpanExporter(store, project="default").export(spans).name == "SUCCESS"
    assert _stored(store) == expected
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as Grpc

    store.execute("DELETE FROM spans")
    rec = Receiver(open_store(pg_url), http_port=None, grpc_port=0, project="default").start()
    try:
        assert Grpc(endpoint=f"127.0.0.1:{rec.grpc_port}", insecure=True).export(spans).name == "SUCCESS"
        assert rec.queue.drain(10)
        assert _stored(rec.store) == expected
        producer = next(s for s in spans if s.name == "publish order")
        linking = ragtrail.Client(store=rec.store).spans_linking_to(format(producer.context.span_id, "016x"))
        assert [d["name"] for d in linking] == ["process order"]
    finally:
        rec.stop()


def test_the_process_writer_keeps_every_otel_field(tmp_path):
    """ragtrail.init(writer="process"): the child rebuilds the spans with kind, links, scope and resource."""
    from opentelemetry import trace

    path = str(tmp_path / "proc.db")
    ragtrail.init(project="proc", store=path, writer="process", schedule_delay_ms=50)
    try:
        tracer = trace.get_tracer("my.worker", "0.3.0")
        with tracer.start_as_current_span("publish", kind=SpanKind.PRODUCER) as p:
            ctx = p.get_span_context()
        with tracer.start_as_current_span("consume", kind=SpanKind.CONSUMER, links=[Link(ctx, {"i": 3, "w": (0.5,)})]):
            pass
        resource = dict(trace.get_tracer_provider().resource.attributes)  # type: ignore[attr-defined]
        assert ragtrail.flush(20)
    finally:
        ragtrail.shutdown()
    rows = {d["name"]: d for d in _stored(open_store(path)).values()}
    assert rows["consume"]["span_kind"] == "CONSUMER" and rows["publish"]["span_kind"] == "PRODUCER"
    assert (rows["consume"]["scope_name"], rows["consume"]["scope_version"]) == ("my.worker", "0.3.0")
    assert rows["consume"]["links"] == [
        {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x"),
         "attributes": {"i": 3, "w": [0.5]}}
    ]  # fmt: skip
    assert rows["consume"]["resource"] == resource
