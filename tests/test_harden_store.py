"""A poison span costs only itself (issue 13, part 1), on real SQLite and PostgreSQL stores: values that
cannot be stored are made storable before the write, a batch failing for a data reason is split until
the bad rows are found, and what even a reduced row cannot store is counted by reason."""

from __future__ import annotations

import json
import os
import sqlite3
import stat

import pytest

import ragtrail
from ragtrail import semconv
from ragtrail.store import open_store
from ragtrail.tracing import get_tracer


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return str(tmp_path / "p.db")
    return request.getfixturevalue("pg_url")  # type: ignore[no-any-return]


def _poison() -> None:
    """One span of each poison kind, made by user code through the public API."""
    with ragtrail.span("poison-tokens", attributes={semconv.GEN_AI_USAGE_INPUT_TOKENS: 10**20}):
        pass
    with ragtrail.span("poison-nul\x00name", attributes={"app.text": "a\x00b", semconv.GEN_AI_REQUEST_MODEL: "m\x00"}):
        pass
    with ragtrail.span("poison-nan", attributes={semconv.COST_USD: float("nan")}):
        pass
    with ragtrail.span("poison-inf", attributes={semconv.COST_USD: float("inf")}):
        pass
    with ragtrail.span("poison-surrogate \ud800", attributes={"app.s": "\udc00x"}):
        pass
    with ragtrail.span("poison-model-type", attributes={semconv.GEN_AI_REQUEST_MODEL: 42}):
        pass
    s = get_tracer().start_span("poison-time", start_time=2**63 + 5)
    s.end(end_time=2**63 + 10)


def test_poison_spans_cost_only_themselves_in_process(store_url: str) -> None:
    ragtrail.init(project="p", store=store_url, max_export_batch_size=64)
    try:
        for i in range(100):
            with ragtrail.span(f"ok-{i}", attributes={semconv.GEN_AI_USAGE_INPUT_TOKENS: i}):
                pass
            if i % 20 == 0:
                _poison()
        assert ragtrail.flush()
        stats = ragtrail.stats()
    finally:
        ragtrail.shutdown()
    df = ragtrail.Client(store_url).spans_df(limit=10_000)
    names = list(df["name"])
    assert sum(n.startswith("ok-") for n in names) == 100  # every innocent span
    assert sum(n.startswith("poison") for n in names) == 5 * 7  # every poison span too, repaired
    assert stats["failed"] == 0 and stats["export_errors"] == 0 and stats["rejected"] == 0
    by = dict(zip(df["name"], df.itertuples(), strict=True))
    tok = by["poison-tokens"]
    assert str(tok.input_tokens) == "<NA>"  # the promoted column is empty ...
    assert tok.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 10**20  # ... the raw value kept
    assert tok.attributes[semconv.INVALID] == {"input_tokens": str(10**20)}
    t = by["poison-time"]
    assert t.attributes[semconv.INVALID]["start_time_ns"] == str(2**63 + 5)
    assert by["poison-nan"].attributes[semconv.INVALID] == {"cost_usd": "NaN"}
    assert by["poison-model-type"].attributes[semconv.INVALID] == {"model": "42"}
    assert "poison-nul\ufffdname" in by


def test_a_batch_failing_for_a_data_reason_is_split_and_the_rest_stored(store_url: str) -> None:
    """Rows that pass the cheap checks but that the driver refuses (lone surrogates cannot be encoded):
    the batch is split, good rows are stored, the bad one repaired."""
    from ragtrail.store import SPAN_COLUMNS

    st = open_store(store_url)

    def row(i: int, name: str) -> tuple:  # type: ignore[type-arg]
        base = (f"{i:032x}", f"{i:016x}", None, name, None, 1, 2, 0.0, "OK", None, None, None, None, None,
                "p", "{}", None, None)  # fmt: skip
        return base + (None,) * (len(SPAN_COLUMNS) - len(base))  # later promoted columns: empty

    rows = [row(i + 1, f"good-{i}") for i in range(50)]
    rows[17] = row(18, "bad \ud800")
    assert len(rows[0]) == len(SPAN_COLUMNS)
    st.write_spans(rows)
    names = {r[0] for r in st.query("SELECT name FROM spans")}
    assert len(names) == 50 and "good-16" in names and "good-18" in names and "bad ?" in names
    assert st.span_stats()["repaired"] == 1 and st.span_stats()["rejected"] == 0


def test_a_row_refused_even_reduced_is_counted_by_reason(tmp_path) -> None:
    """A real SQLite trigger refuses one trace: its span is counted by reason, the others are stored."""
    path = str(tmp_path / "t.db")
    st = open_store(path)
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON spans WHEN NEW.trace_id = 'ff' || substr(NEW.trace_id, 3) "
        "BEGIN SELECT RAISE(ABORT, 'refused by policy'); END"
    )
    con.commit()
    con.close()
    ok = [(f"{i:032x}", f"{i:016x}", None, f"s{i}", None, 1, 2, 0.0, "OK", None, None, None, None, None, "p", "{}",
           None, None) for i in range(1, 30)]  # fmt: skip
    bad = ("ff" + "0" * 30, "1" * 16, None, "bad", None, 1, 2, 0.0, "OK", None, None, None, None, None, "p", "{}",
           None, None)  # fmt: skip
    st.write_spans([*ok[:10], bad, *ok[10:]])
    assert st.count_spans() == 29
    stats = st.span_stats()
    assert stats["rejected"] == 1 and stats["rejected.IntegrityError"] == 1


def test_transient_errors_still_raise_for_the_bounded_retry(tmp_path) -> None:
    """A locked database is not a data error: no splitting, the write raises (the exporter retries)."""
    path = str(tmp_path / "l.db")
    from ragtrail.store import SQLiteStore

    st = SQLiteStore(path, busy_timeout_s=0.2)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ragtrail.StoreError, match="locked"):
            st.write_spans([("a" * 32, "b" * 16, None, "x", None, 1, 2, 0.0, "OK", None, None, None, None, None,
                             "p", "{}", None, None)])  # fmt: skip
    finally:
        con.execute("ROLLBACK")
        con.close()
    assert st.span_stats()["rejected"] == 0


def test_store_directory_and_file_are_private(tmp_path) -> None:
    path = tmp_path / "new" / "dir" / "r.db"
    open_store(str(path))
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


@pytest.mark.parametrize(
    ("store", "match"),
    [(123, "int"), (b"/tmp/x.db", "bytes"), ("/tmp/a\x00b.db", "NUL"), ("file:/tmp/x.db?mode=ro", "file:")],
)
def test_bad_store_options_are_config_errors_naming_the_option(store, match, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ragtrail.ConfigError, match=match):
        ragtrail.init(project="x", store=store)
    assert not (tmp_path / "file:").exists()


def test_negative_gpu_prices_are_config_errors(tmp_path) -> None:
    with pytest.raises(ragtrail.ConfigError, match="gpu_prices"):
        ragtrail.init(project="x", store=str(tmp_path / "g.db"), gpu_prices={"H100": -2.0})


def test_client_opens_an_existing_store_only(tmp_path) -> None:
    missing = tmp_path / "missing" / "dir" / "x.db"
    with pytest.raises(ragtrail.StoreError, match="no store at"):
        ragtrail.Client(str(missing))
    assert not missing.parent.exists()


def test_trace_id_prefixes_must_be_hex(tmp_path) -> None:
    path = str(tmp_path / "h.db")
    open_store(path)
    with pytest.raises(ragtrail.ConfigError, match="not hexadecimal"):
        ragtrail.Client(path).trace("%%%%%%%%")
    with pytest.raises(ragtrail.ConfigError, match="not hexadecimal"):
        ragtrail.Client(path).trace("abcd_123")


def test_invalid_marker_is_json_in_the_attributes(tmp_path) -> None:
    from ragtrail.store._storable import storable_row

    row = ("a" * 32, "b" * 16, None, "n", None, 2**64, 5, 0.0, "OK", None, None, "12", [1], None, "p", '{"k": 1}',
           None, None)  # fmt: skip
    fixed, cols = storable_row(row)
    assert cols == ["input_tokens", "output_tokens", "start_time_ns"]
    assert fixed[5] == 5 and fixed[11] is None and fixed[12] is None
    assert json.loads(fixed[15]) == {"k": 1, semconv.INVALID: {"start_time_ns": str(2**64), "input_tokens": "12",
                                                               "output_tokens": "[1]"}}  # fmt: skip
