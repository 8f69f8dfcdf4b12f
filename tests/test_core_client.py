"""ragtrail.Client on SQLite and PostgreSQL: DataFrame columns exactly as DESIGN.md, every filter,
the Trace object and its helpers."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pandas as pd
import pytest

import ragtrail
from ragtrail import semconv
from ragtrail.store import open_store

SPAN_COLUMNS = [
    "trace_id",
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_time",
    "end_time",
    "duration_ms",
    "status",
    "model",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "project",
    "attributes",
    # the OTel fields (issue 21)
    "span_kind",
    "links",
    "resource",
    "scope_name",
    "scope_version",
]
TRACE_COLUMNS = [
    "trace_id",
    "root_name",
    "root_kind",
    "start_time",
    "end_time",
    "duration_ms",
    "n_spans",
    "n_errors",
    "status",
    "input_tokens",
    "output_tokens",
    "cached_input_tokens",
    "cost_usd",
    "project",
    "session_id",
    "user_id",
]

T0 = int(datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc).timestamp() * 1e9)
S = 1_000_000_000


def _row(
    trace,
    span,
    parent,
    name,
    kind,
    start_s,
    dur_ms,
    project,
    status="OK",
    model=None,
    tin=None,
    tout=None,
    cost=None,
    attrs=None,
):
    start = T0 + int(start_s * S)
    end = start + int(dur_ms * 1e6)
    a = {semconv.SPAN_KIND: kind, **(attrs or {})}
    if cost is not None:
        a[semconv.COST_USD] = cost
    return (
        trace,
        span,
        parent,
        name,
        kind,
        start,
        end,
        dur_ms,
        status,
        None,
        model,
        tin,
        tout,
        cost,
        project,
        json.dumps(a),
        None,
        None,
    )


TA, TB, TC = "a" * 32, "ab" + "0" * 30, "c" * 32


@pytest.fixture(params=["sqlite", "postgresql"])
def client(request, tmp_path):
    url = str(tmp_path / "c.db") if request.param == "sqlite" else request.getfixturevalue("pg_url")
    store = open_store(url)
    docs = json.dumps([{"id": "d1", "rank": 0, "score": 0.9, "content": "alpha"}, {"id": "d2", "rank": 1}])
    store.write_spans(
        [
            _row(TA, "1" * 16, None, "answer", "CHAIN", 0, 900, "bot"),
            _row(
                TA,
                "2" * 16,
                "1" * 16,
                "lookup",
                "RETRIEVER",
                0.1,
                100,
                "bot",
                attrs={semconv.GEN_AI_RETRIEVAL_DOCUMENTS: docs},
            ),
            _row(
                TA,
                "3" * 16,
                "1" * 16,
                "llm",
                "LLM",
                0.3,
                500,
                "bot",
                model="gpt-4o-mini",
                tin=100,
                tout=20,
                cost=0.002,
                attrs={semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: 0.05, semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS: 60},
            ),
            _row(TB, "4" * 16, None, "answer", "CHAIN", 3600, 50, "bot", status="ERROR"),
            _row(TC, "5" * 16, None, "index", "EMBEDDING", 7200, 10, "other", model="mini", tin=7),
        ]
    )
    c = ragtrail.Client(store)
    yield c
    store.close()


def test_spans_df_columns_and_types(client):
    df = client.spans_df()
    assert list(df.columns) == SPAN_COLUMNS
    assert len(df) == 5
    assert list(df["name"]) == ["answer", "lookup", "llm", "answer", "index"]  # oldest first
    assert str(df["start_time"].dtype) == "datetime64[ns, UTC]"
    assert df.loc[0, "start_time"] == pd.Timestamp("2026-11-01 12:00", tz="UTC")
    llm = df[df.name == "llm"].iloc[0]
    assert llm.duration_ms == pytest.approx(500)
    assert (llm.model, llm.input_tokens, llm.output_tokens, llm.cost_usd) == ("gpt-4o-mini", 100, 20, 0.002)
    assert llm.cached_input_tokens == 60 and str(df["cached_input_tokens"].dtype) == "Int64"
    assert df[df.name != "llm"].cached_input_tokens.isna().all()
    assert llm.parent_span_id == "1" * 16
    assert isinstance(llm.attributes, dict) and llm.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 0.05
    root = df.iloc[0]
    assert pd.isna(root.parent_span_id) and pd.isna(root.input_tokens) and pd.isna(root.cost_usd)
    raw = client.spans_df(parse_attributes=False)
    assert isinstance(raw.loc[0, "attributes"], str)
    assert list(raw.cached_input_tokens.fillna(-1)) == list(df.cached_input_tokens.fillna(-1))


def test_cached_input_tokens_per_span_and_summed_per_trace(client):
    """The cached-input-token count (an attribute, not a promoted column) is a spans_df column and
    traces_df sums it; a value that is not a count is left out, never guessed."""
    td = "d" * 32
    cached = semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS
    client.store.write_spans([
        _row(td, "a" * 16, None, "chat-1", "LLM", 9000, 10, "bot", model="m", tin=50, tout=5, attrs={cached: 30}),
        _row(td, "b" * 16, "a" * 16, "chat-2", "LLM", 9001, 10, "bot", model="m", tin=20, tout=5, attrs={cached: 12.0}),
        _row(td, "c" * 16, "a" * 16, "chat-3", "LLM", 9002, 10, "bot", model="m", tin=9, tout=1, attrs={cached: "7"}),
        _row(td, "e" * 16, "a" * 16, "chat-4", "LLM", 9003, 10, "bot", model="m", tin=9, tout=1),
    ])  # fmt: skip
    for parse in (True, False):
        df = client.spans_df(trace_id=td, parse_attributes=parse)
        assert list(df.columns).index("cached_input_tokens") == list(df.columns).index("output_tokens") + 1
        assert list(df.cached_input_tokens.fillna(-1)) == [30, 12, -1, -1]
    t = client.traces_df().set_index("trace_id")
    assert t.loc[td, "cached_input_tokens"] == 42 and t.loc[td, "input_tokens"] == 88
    assert [r["cached_input_tokens"] for r in client.trace_summaries() if r["trace_id"] == td] == [42]


def test_spans_df_filters(client):
    assert set(client.spans_df(project="other")["name"]) == {"index"}
    assert len(client.spans_df(project="bot")) == 4
    assert list(client.spans_df(kind="LLM")["name"]) == ["llm"]
    assert len(client.spans_df(name="answer")) == 2
    assert list(client.spans_df(trace_id=TA)["name"]) == ["answer", "lookup", "llm"]
    assert len(client.spans_df(trace_id=[TB, TC])) == 2
    t1 = datetime(2026, 11, 1, 12, 30, tzinfo=timezone.utc)
    assert set(client.spans_df(start=t1)["trace_id"]) == {TB, TC}
    assert set(client.spans_df(end=t1)["trace_id"]) == {TA}
    assert list(client.spans_df(start="2026-11-01T12:30:00+00:00", end=t1.timestamp() + 3600)["trace_id"]) == [TB]
    assert len(client.spans_df(limit=2)) == 2
    empty = client.spans_df(project="nobody")
    assert list(empty.columns) == SPAN_COLUMNS and len(empty) == 0
    with pytest.raises(ragtrail.ConfigError, match="kind"):
        client.spans_df(kind="NOPE")
    with pytest.raises(ragtrail.ConfigError, match="time"):
        client.spans_df(start="yesterday-ish")


def test_traces_df(client):
    df = client.traces_df()
    assert list(df.columns) == TRACE_COLUMNS
    assert list(df["trace_id"]) == [TC, TB, TA]  # newest first
    a = df.set_index("trace_id").loc[TA]
    assert (a.root_name, a.root_kind, a.n_spans, a.n_errors, a.status) == ("answer", "CHAIN", 3, 0, "OK")
    assert a.duration_ms == pytest.approx(900)
    assert a.input_tokens == 100 and a.cost_usd == pytest.approx(0.002)
    assert a.cached_input_tokens == 60
    b = df.set_index("trace_id").loc[TB]
    assert b.status == "ERROR" and pd.isna(b.cost_usd) and pd.isna(b.cached_input_tokens)
    assert list(client.traces_df(project="other")["trace_id"]) == [TC]
    assert len(client.traces_df(limit=1)) == 1


def test_trace_object(client):
    tr = client.trace(TA[:8] + "a")  # a unique prefix works
    assert tr.trace_id == TA and len(tr) == 3
    assert tr.root.name == "answer"
    assert [s.name for s in tr.children(tr.root)] == ["lookup", "llm"]
    assert [s.name for s in tr.llm_calls()] == ["llm"]
    assert tr.retrieved_documents()[0] == {"id": "d1", "rank": 0, "score": 0.9, "content": "alpha"}
    assert tr.input_tokens == 100 and tr.cost_usd == pytest.approx(0.002)
    text = tr.to_text()
    assert "answer  [CHAIN]  900.0 ms" in text
    assert "  llm  [LLM]  500.0 ms  tokens 100→20  $0.002000  ttft 50.0 ms" in text
    with pytest.raises(ragtrail.StoreError, match="no trace"):
        client.trace("f" * 32)
    with pytest.raises(ragtrail.ConfigError, match="too short"):
        client.trace("abc")


def test_ambiguous_prefix(client):
    open_store(client.store).write_spans(
        [
            _row("abcdef12" + "0" * 24, "9" * 16, None, "x", "CHAIN", 1, 1, "bot"),
            _row("abcdef12" + "1" * 24, "8" * 16, None, "y", "CHAIN", 1, 1, "bot"),
        ]
    )
    with pytest.raises(ragtrail.ConfigError, match="ambiguous"):
        client.trace("abcdef12")


def test_client_defaults_to_the_running_store(traced):
    with ragtrail.span("here"):
        pass
    ragtrail.flush()
    assert list(ragtrail.Client().spans_df()["name"]) == ["here"]
    assert ragtrail.Client().store is traced.config.store


def test_import_ragtrail_leaves_pandas_to_client():
    import subprocess
    import sys

    code = "import sys, ragtrail; c = ragtrail.Client; assert 'pandas' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
