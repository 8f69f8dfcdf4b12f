"""Compact storage of span content (issue 24, migration 12): on SQLite a span's large text attributes
are kept compressed in ``content``, the small ones stay in the ``attributes`` JSON that SQL reads, and
every reader gets the whole attributes back; rows written before (no ``content``) read as they did.

Real SQLite files, the real PostgreSQL server and a real LangChain chain; the LLM's answers come from
LangChain's fake chat model."""

from __future__ import annotations

import json
from typing import Any

import pytest

import ragtrail
from ragtrail import semconv
from ragtrail.store import _codec, open_store
from ragtrail.store._queries import list_traces, trace_rows

BIG = "the retrieved passage says " + " ".join(f"w{i}" for i in range(600))  # ~3.9 KB


def _row(i: int, attrs: dict[str, Any]) -> tuple[Any, ...]:
    return (f"{i:032x}", f"{i:016x}", None, f"root {i}", "CHAIN", 10**18 + i, 10**18 + i + 1000, 0.001, "OK",
            None, None, None, None, None, "p", json.dumps(attrs), None, "{}", None, None)  # fmt: skip


def _attrs(i: int) -> dict[str, Any]:
    return {semconv.SPAN_KIND: "CHAIN", semconv.INPUT_VALUE: f"question {i}: {BIG}", semconv.TAGS: ["gold", "x"],
            semconv.OUTPUT_VALUE: "short answer", "n": i}  # fmt: skip


def test_large_text_attributes_are_compressed_and_every_reader_gets_them_back(tmp_path):  # type: ignore[no-untyped-def]
    path = str(tmp_path / "s.db")
    st = open_store(path)
    st.write_spans([_row(i, _attrs(i)) for i in range(5)])
    small, blob = st.query("SELECT attributes, content FROM spans WHERE name = 'root 1'")[0]
    assert BIG not in small and json.loads(small)[semconv.TAGS] == ["gold", "x"]  # small ones stay in SQL's reach
    assert blob[:1] == (b"z" if _codec.codec() == "zstd" else b"d") and len(blob) < len(BIG) / 3
    client = ragtrail.Client(path)
    df = client.spans_df()
    assert list(df.attributes) == [_attrs(i) for i in range(5)]
    assert client.spans()[2].attributes == _attrs(2)
    assert json.loads(trace_rows(st, f"{3:032x}")[0][15]) == _attrs(3)
    # the UI's full-text search reads the compressed content too; the tags filter reads the small part
    page = list_traces(st, {"q": "question 4: the retrieved"})
    assert [t["trace_id"] for t in page.rows] == [f"{4:032x}"]
    from ragtrail.store._feedback import trace_filter

    where, params = trace_filter(st, tags=["gold"])
    assert st.query(f"SELECT COUNT(DISTINCT trace_id) FROM spans WHERE {where}", params)[0][0] == 5  # noqa: S608
    st.close()


def test_rows_written_before_compression_read_as_before(tmp_path):  # type: ignore[no-untyped-def]
    """A store from before migration 12: the column is added, old rows (whole attributes, no content)
    read unchanged next to new, compressed ones."""
    path = str(tmp_path / "old.db")
    st = open_store(path)
    st.write_spans([_row(0, _attrs(0))])
    st.execute("UPDATE spans SET attributes = ?, content = NULL", (json.dumps(_attrs(0)),))  # as written before
    st.execute("ALTER TABLE spans DROP COLUMN content")
    st.execute("DELETE FROM ragtrail_migrations WHERE version = 12")
    st.close()
    st = open_store(path)  # migrates to 12 again
    st.write_spans([_row(1, _attrs(1))])
    rows = st.query("SELECT name, content IS NULL FROM spans ORDER BY name")
    assert rows == [("root 0", 1), ("root 1", 0)]
    assert list(ragtrail.Client(path).spans_df().attributes) == [_attrs(0), _attrs(1)]
    st.close()


def test_without_zstandard_content_is_zlib_compressed_and_reads(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(_codec, "_zstd", None)
    assert _codec.codec() == "zlib"
    path = str(tmp_path / "z.db")
    st = open_store(path)
    st.write_spans([_row(i, _attrs(i)) for i in range(3)])
    assert {r[0][:1] for r in st.query("SELECT content FROM spans")} == {b"d"}
    assert list(ragtrail.Client(path).spans_df().attributes) == [_attrs(i) for i in range(3)]
    st.close()


def test_a_zstd_store_read_without_zstandard_says_what_to_install(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    pytest.importorskip("zstandard")  # to write the zstd store
    path = str(tmp_path / "zs.db")
    st = open_store(path)
    st.write_spans([_row(0, _attrs(0))])
    st.close()
    monkeypatch.setattr(_codec, "_zstd", None)  # as where zstandard is not installed
    with pytest.raises(ragtrail.MissingDependencyError, match=r"pip install 'ragtrail\[zstd\]'"):
        ragtrail.Client(path).spans_df()
    with pytest.raises(ragtrail.MissingDependencyError, match=r"pip install 'ragtrail\[zstd\]'"):
        ragtrail.Client(path).spans()


def test_recomputed_costs_keep_the_content(tmp_path):  # type: ignore[no-untyped-def]
    path = str(tmp_path / "c.db")
    st = open_store(path)
    attrs = {**_attrs(0), semconv.GEN_AI_PROVIDER_NAME: "openai", semconv.GEN_AI_REQUEST_MODEL: "m",
             semconv.GEN_AI_USAGE_INPUT_TOKENS: 1000, semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 10}  # fmt: skip
    row = list(_row(0, attrs))
    row[11], row[12] = 1000, 10
    st.write_spans([tuple(row)])
    client = ragtrail.Client(path)
    assert client.reprice(prices={"m": {"input": 1.0, "output": 2.0}}) == 1
    got = client.spans()[0].attributes
    assert got[semconv.INPUT_VALUE] == attrs[semconv.INPUT_VALUE] and got[semconv.COST_USD] > 0
    st.close()


def test_langchain_chain_spans_store_compressed(tmp_path):  # type: ignore[no-untyped-def]
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from ragtrail.connectors.langchain import instrument, uninstrument

    cfg = ragtrail.init(project="lc", store=str(tmp_path / "lc.db"))
    instrument()
    try:
        chain = ChatPromptTemplate.from_template("{q}") | GenericFakeChatModel(messages=iter(["ok"] * 5)) | StrOutputParser()
        for i in range(3):
            chain.invoke({"q": f"{i} {BIG}"})
        assert ragtrail.flush(30)
        n, moved, raw, stored = cfg.store.query(
            "SELECT COUNT(*), SUM(content IS NOT NULL), SUM(LENGTH(ragtrail_attributes(attributes, content))), "
            "SUM(LENGTH(attributes) + COALESCE(LENGTH(content), 0)) FROM spans"
        )[0]
        assert n == 12 and moved == 9 and stored < raw / 3
        df = ragtrail.Client(cfg.store.url).spans_df(project="lc")
        chat = df[df.name.str.startswith("chat ")].attributes.iloc[0]
        assert BIG in chat[semconv.GEN_AI_INPUT_MESSAGES]
    finally:
        uninstrument()
        ragtrail.shutdown()


def test_postgres_reads_the_same_attributes(pg_url):  # type: ignore[no-untyped-def]
    """PostgreSQL compresses large values itself (TOAST): rows are not split, and read whole."""
    st = open_store(pg_url)
    try:
        st.write_spans([_row(i, _attrs(i)) for i in range(3)])
        assert st.query("SELECT COUNT(*) FROM spans WHERE content IS NULL")[0][0] == 3
        assert list(ragtrail.Client(pg_url).spans_df().attributes) == [_attrs(i) for i in range(3)]
        page = list_traces(st, {"q": "QUESTION 2: the"})
        assert [t["trace_id"] for t in page.rows] == [f"{2:032x}"]
    finally:
        st.close()
