"""The cached-input-token count as a promoted span column (issue 19, migration 13): stores written before
are filled from the attributes JSON (SQLite and the real PostgreSQL server), every writer fills it (the
in-process exporter, the writer process, the OTLP receiver, rows of the layout before), and a hostile
value leaves the column empty (marked in ``ragtrail.invalid``) without costing the span."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import ragtrail
import ragtrail.store._base as store_mod
import ragtrail.store._postgres as pg_mod
import ragtrail.store._sqlite as sqlite_mod
from ragtrail import semconv
from ragtrail.store import SPAN_COLUMNS, open_store
from ragtrail.store._migrations import LATEST, MIGRATIONS
from ragtrail.tracing import StoreSpanExporter

CACHED = semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS
COLUMNS_12 = SPAN_COLUMNS[: SPAN_COLUMNS.index("cached_input_tokens")]  # the span columns of schema 12
I64_MAX = 2**63 - 1
NS = 10**9


def _row12(trace_id: str, span_id: str, attributes: str, start_s: float) -> tuple[object, ...]:
    d = {
        "trace_id": trace_id, "span_id": span_id, "name": f"chat {span_id}", "kind": "LLM",
        "start_time_ns": int(start_s * NS), "end_time_ns": int(start_s * NS) + 1000, "duration_ms": 0.001,
        "status": "OK", "model": "m", "input_tokens": 100, "output_tokens": 5, "project": "old",
        "attributes": attributes,
    }  # fmt: skip
    return tuple(d.get(c) for c in COLUMNS_12)


# (attributes JSON text, the value migration 13 gives the column)
OLD_ROWS = [
    (json.dumps({CACHED: 30, "gen_ai.prompt": "long words " * 300}), 30),  # compressed content (SQLite)
    (json.dumps({CACHED: 12.0}), 12),
    (json.dumps({CACHED: "7"}), None),
    (json.dumps({CACHED: 10**20}), None),
    (json.dumps({CACHED: 1.5}), None),
    (json.dumps({"other": 1}), None),
    ('{"' + CACHED + '": 5', None),  # not JSON (cut short)
]


def _write_at_schema_12(url: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A store as the release before wrote it (schema 12, no cached_input_tokens column) with rows."""
    monkeypatch.setattr(store_mod, "MIGRATIONS", [m for m in MIGRATIONS if m[0] <= 12])
    monkeypatch.setattr(store_mod, "LATEST", 12)
    monkeypatch.setattr(store_mod, "SPAN_COLUMNS", COLUMNS_12)
    monkeypatch.setattr(pg_mod, "SPAN_COLUMNS", COLUMNS_12)
    monkeypatch.setattr(
        sqlite_mod,
        "_INSERT_SPANS_CONTENT",
        f"INSERT INTO spans ({', '.join(COLUMNS_12)}, content) VALUES ({', '.join('?' * (len(COLUMNS_12) + 1))}) "
        "ON CONFLICT (trace_id, span_id) DO NOTHING",
    )
    old = open_store(url)
    assert old.schema_version() == 12
    t1, t2 = uuid.uuid4().hex, uuid.uuid4().hex
    rows = [_row12(t1, f"{i + 1:016x}", a, 1_700_000_000 + i) for i, (a, _) in enumerate(OLD_ROWS)]
    rows.append(_row12(t2, "f" * 16, json.dumps({CACHED: I64_MAX}), 1_700_000_100))
    assert old.write_spans(rows) == len(rows)
    old.close()
    monkeypatch.undo()
    return t1, t2


def _check_backfilled(url: str, t1: str, t2: str) -> None:
    store = open_store(url)  # runs migration 13
    assert store.schema_version() == LATEST
    assert store.query("SELECT name FROM ragtrail_migrations WHERE version = 13") == [("spans_cached_input_tokens",)]
    got = store.query("SELECT cached_input_tokens FROM spans WHERE trace_id = ? ORDER BY span_id", (t1,))
    assert [r[0] for r in got] == [want for _, want in OLD_ROWS]
    assert store.query("SELECT cached_input_tokens FROM spans WHERE trace_id = ?", (t2,)) == [(I64_MAX,)]
    client = ragtrail.Client(url)
    df = client.spans_df(trace_id=t1, parse_attributes=False)  # one row's attributes are not JSON
    assert list(df.cached_input_tokens.fillna(-1)) == [30, 12, -1, -1, -1, -1, -1]
    traces = {r["trace_id"]: r for r in client.trace_summaries()}
    assert traces[t1]["cached_input_tokens"] == 42 and traces[t2]["cached_input_tokens"] == I64_MAX
    # the attributes are untouched by the migration
    assert json.loads(df.attributes.iloc[2])[CACHED] == "7"
    store.close()
    assert open_store(url).schema_version() == LATEST  # a second open does nothing more


def test_sqlite_store_of_schema_12_is_backfilled(tmp_path, monkeypatch):
    url = str(tmp_path / "old.db")
    t1, t2 = _write_at_schema_12(url, monkeypatch)
    import sqlite3

    con = sqlite3.connect(url)  # the long prompt was kept compressed; the small count stayed in attributes
    (attrs, content) = con.execute("SELECT attributes, content FROM spans WHERE span_id = ?", (f"{1:016x}",)).fetchone()
    con.close()
    assert content is not None and json.loads(attrs) == {CACHED: 30}
    _check_backfilled(url, t1, t2)


def test_postgres_store_of_schema_12_is_backfilled(pg_url, monkeypatch):
    t1, t2 = _write_at_schema_12(pg_url, monkeypatch)
    _check_backfilled(pg_url, t1, t2)
    store = open_store(pg_url)
    types = store.query(
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'spans' "
        "AND column_name = 'cached_input_tokens' AND table_schema = current_schema()"
    )
    assert types == [("bigint",)]


def _sdk_spans() -> list:  # type: ignore[type-arg]
    """Real SDK spans: counts 25 and 8.0, a string, a count beyond 64 bits, none."""
    mem = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "app"}))
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("tests.cached")
    values: list[object] = [25, 8.0, "lots", 10**20, None]
    with tracer.start_as_current_span("root", attributes={semconv.SPAN_KIND: "CHAIN"}):
        for i, v in enumerate(values):
            with tracer.start_as_current_span(f"llm-{i}", attributes={semconv.SPAN_KIND: "LLM"}) as s:
                s.set_attribute(semconv.GEN_AI_REQUEST_MODEL, "m")
                s.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, 100)
                if v is not None:
                    s.set_attribute(CACHED, v)  # type: ignore[arg-type]
    tp.shutdown()
    return list(mem.get_finished_spans())


def _check_written(store, expect_invalid: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    rows = store.query(f"SELECT name, cached_input_tokens, {store.attributes_sql()} FROM spans ORDER BY name")
    assert len(rows) == 6  # no span was lost
    got = {name: cached for name, cached, _ in rows}
    assert got == {"llm-0": 25, "llm-1": 8, "llm-2": None, "llm-3": None, "llm-4": None, "root": None}
    attrs = {name: json.loads(a) for name, _, a in rows}
    for name, raw in expect_invalid.items():  # emptied and marked, the original attribute kept
        assert attrs[name][semconv.INVALID] == {"cached_input_tokens": raw}
    assert attrs["llm-2"][CACHED] == "lots"
    assert semconv.INVALID not in attrs["llm-0"] and semconv.INVALID not in attrs["llm-1"]


def test_exporter_fills_the_column_and_a_hostile_value_costs_nothing(tmp_path):
    store = open_store(str(tmp_path / "s.db"))
    exp = StoreSpanExporter(store, "p")
    assert exp.export(_sdk_spans()).name == "SUCCESS"
    _check_written(store, {"llm-2": "lots", "llm-3": str(10**20)})
    assert store.span_stats()["repaired"] == 2 and store.span_stats()["rejected"] == 0
    df = ragtrail.Client(store).spans_df().set_index("name")
    assert df.loc["llm-0", "cached_input_tokens"] == 25 and df.cached_input_tokens.isna().sum() == 4


def test_writer_process_fills_the_column(tmp_path):
    from ragtrail.tracing._writer import ProcessWriter

    path = str(tmp_path / "s.db")
    w = ProcessWriter(path, "p", mask_secrets=True, spool_dir=str(tmp_path / "spool"), spool_max_bytes=2**20)
    exp = StoreSpanExporter(open_store(path), "p", writer=w)
    try:
        assert exp.export(_sdk_spans()).name == "SUCCESS"
        assert w.child_pid is not None
    finally:
        exp.shutdown()
    # the batch reaches the child as JSON, where an integer beyond 64 bits is read back as a float
    _check_written(open_store(path), {"llm-2": "lots", "llm-3": "1e+20"})


def test_otlp_receiver_fills_the_column(tmp_path):
    from ragtrail.server import Receiver

    spans = [s for s in _sdk_spans() if s.name != "llm-3"]  # protobuf has no int beyond 64 bits
    r = Receiver(str(tmp_path / "s.db"), http_port=0, grpc_port=0, project="recv").start()
    try:
        body = encode_spans(spans).SerializeToString()
        resp = httpx.post(
            f"http://127.0.0.1:{r.http_port}/v1/traces", content=body,
            headers={"Content-Type": "application/x-protobuf"},
        )  # fmt: skip
        assert resp.status_code == 200
        # OTLP/JSON can carry a double beyond 64 bits: emptied and marked, the span kept
        tid, sid = uuid.uuid4().hex, "ab" * 8
        payload = {"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": tid, "spanId": sid, "name": "llm-3", "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000000000001000",
            "attributes": [{"key": CACHED, "value": {"doubleValue": 1e20}}],
        }]}]}]}  # fmt: skip
        resp = httpx.post(f"http://127.0.0.1:{r.http_port}/v1/traces", json=payload)
        assert resp.status_code == 200
        assert r.queue.drain(10)
        _check_written(r.store, {"llm-2": "lots", "llm-3": "1e+20"})
    finally:
        r.stop()


def test_rows_of_the_layout_before_get_the_column_from_their_attributes(tmp_path):
    """A writer that gives the 24-column row (a spool written before migration 13, a bulk import)
    still fills the column, as the migration did for the rows already stored."""
    store = open_store(str(tmp_path / "s.db"))
    tid = uuid.uuid4().hex
    rows = [_row12(tid, f"{i + 1:016x}", a, 1_700_000_000 + i) for i, (a, _) in enumerate(OLD_ROWS)]
    assert store.write_spans(rows) == len(rows)
    got = store.query("SELECT cached_input_tokens FROM spans ORDER BY span_id")
    assert [r[0] for r in got] == [want for _, want in OLD_ROWS]


def test_reprice_uses_the_column(tmp_path):
    store = open_store(str(tmp_path / "s.db"))
    tid = uuid.uuid4().hex
    attrs = {semconv.GEN_AI_PROVIDER_NAME: "openai", semconv.GEN_AI_REQUEST_MODEL: "gpt-4o",
             semconv.GEN_AI_USAGE_INPUT_TOKENS: 1_000_000, semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 0}  # fmt: skip
    row = dict(zip(COLUMNS_12, _row12(tid, "a" * 16, json.dumps(attrs), 1_700_000_000)))
    row["input_tokens"], row["output_tokens"] = 1_000_000, 0
    store.write_spans([(*(row[c] for c in COLUMNS_12), 400_000)])  # the count only in the column
    client = ragtrail.Client(store)
    assert client.reprice() == 1
    cost = store.query("SELECT cost_usd FROM spans")[0][0]
    assert cost == pytest.approx((600_000 * 2.50 + 400_000 * 1.25) / 1e6)


def test_foreign_spans_classified_at_ingest_fill_the_column(tmp_path):
    """An OpenInference LLM span (another SDK's names): its cache-read count is normalised at ingest,
    in process and over OTLP, and lands in the column."""
    mem = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(mem))
    attrs = {semconv.OI_SPAN_KIND: "LLM", semconv.OI_LLM_MODEL_NAME: "gpt-4o", semconv.OI_LLM_TOKEN_COUNT_PROMPT: 90,
             semconv.OI_LLM_TOKEN_COUNT_COMPLETION: 3, semconv.OI_LLM_TOKEN_COUNT_PROMPT_CACHE_READ: 64}  # fmt: skip
    with tp.get_tracer("openinference.instrumentation.x").start_as_current_span("ChatOpenAI", attributes=attrs):
        pass
    tp.shutdown()
    spans = list(mem.get_finished_spans())
    store = open_store(str(tmp_path / "a.db"))
    StoreSpanExporter(store, "p").export(spans)
    assert store.query("SELECT kind, input_tokens, cached_input_tokens FROM spans") == [("LLM", 90, 64)]

    from ragtrail.server import Receiver

    r = Receiver(str(tmp_path / "b.db"), http_port=0, grpc_port=0, project="recv").start()
    try:
        resp = httpx.post(
            f"http://127.0.0.1:{r.http_port}/v1/traces", content=encode_spans(spans).SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )  # fmt: skip
        assert resp.status_code == 200 and r.queue.drain(10)
        assert r.store.query("SELECT kind, input_tokens, cached_input_tokens FROM spans") == [("LLM", 90, 64)]
    finally:
        r.stop()
