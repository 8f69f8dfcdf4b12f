"""zstd dictionaries trained on a project's own span content (issue 24, migration 14): adopted only when
they pay, stored with the first rows that use them, read back by every reader and by other processes.

Real SQLite files and real SDK spans; the text is prose-like (a 5,000-word vocabulary), as retrieved
passages are."""

from __future__ import annotations

import json
import os
import random
import sqlite3
from typing import Any

import pytest

import ragtrail
from ragtrail.store import _codec, open_store
from ragtrail.tracing._exporter import StoreSpanExporter, span_to_row

pytest.importorskip("zstandard")

_RND = random.Random(11)
_VOCAB = ["".join(_RND.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_RND.randint(2, 10))) for _ in range(5000)]


def _spans(n: int, text: Any, prefix: str = "s") -> tuple[list[Any], list[str]]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    mem = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("t")
    texts = []
    for i in range(n):
        t = text(i)
        texts.append(t)
        with tracer.start_as_current_span(f"{prefix}{i}") as s:
            s.set_attribute("ragtrail.span.kind", "RETRIEVER")
            s.set_attribute("input.value", t)
    return list(mem.get_finished_spans()), texts


def _prose(i: int) -> str:
    return " ".join(_RND.choice(_VOCAB) for _ in range(300))


@pytest.fixture(autouse=True)
def _small_samples(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(_codec, "DICT_SAMPLES", 200)
    monkeypatch.setattr(_codec, "DICT_MIN_SAMPLE_BYTES", 64 * 1024)


def _stored(path: str) -> dict[str, str]:
    st = open_store(path)
    rows = st.query(f"SELECT name, {st.attributes_sql()} FROM spans")  # noqa: S608 - the store's own SQL
    return {name: json.loads(a)["input.value"] for name, a in rows}


def test_a_dictionary_is_trained_on_the_projects_spans_and_pays(tmp_path):  # type: ignore[no-untyped-def]
    path = str(tmp_path / "s.db")
    store = open_store(path)
    spans, texts = _spans(600, _prose)
    assert StoreSpanExporter(store, "app").export(spans).name == "SUCCESS"
    rows = store.query("SELECT id, project, samples, plain_bytes, dict_bytes FROM content_dicts")
    assert len(rows) == 1 and rows[0][1] == "app" and rows[0][2] == 200
    assert rows[0][4] <= rows[0][3] * (1 - _codec.DICT_MIN_GAIN)  # it pays, or it is not adopted
    tags = dict(store.query("SELECT substr(content, 1, 1), count(*) FROM spans GROUP BY 1"))
    assert tags == {b"z": 199, b"D": 401}  # the samples before it, plain zstd; every row after it, the dictionary
    plain = store.query("SELECT avg(length(content)) FROM spans WHERE substr(content, 1, 1) = X'7A'")[0][0]
    with_dict = store.query("SELECT avg(length(content)) FROM spans WHERE substr(content, 1, 1) = X'44'")[0][0]
    assert with_dict < plain * 0.85
    # every reader gets every text back, byte for byte: a new store object (as another process), the Client
    assert _stored(path) == {f"s{i}": t for i, t in enumerate(texts)}
    recs = ragtrail.Client(path).spans(name="s599")
    assert recs[0].attributes["input.value"] == texts[599]


def test_another_process_reuses_the_dictionary_and_each_project_gets_its_own(tmp_path):  # type: ignore[no-untyped-def]
    path = str(tmp_path / "s.db")
    StoreSpanExporter(open_store(path), "app").export(_spans(300, _prose)[0])
    later = open_store(path)  # a new store object: as the next process tracing into the same file
    spans, texts = _spans(300, _prose, "b")
    StoreSpanExporter(later, "app").export(spans)
    assert later.codec.trained == 0  # it took the stored dictionary
    assert later.query("SELECT count(*) FROM content_dicts")[0][0] == 1
    assert later.query("SELECT count(*) FROM spans WHERE substr(content, 1, 1) = X'44'")[0][0] >= 400
    StoreSpanExporter(later, "other").export(_spans(300, _prose, "c")[0])
    assert sorted(r[0] for r in later.query("SELECT project FROM content_dicts")) == ["app", "other"]
    got = _stored(path)
    assert len(got) == 900 and all(got[f"b{i}"] == t for i, t in enumerate(texts))


def test_a_dictionary_that_does_not_pay_is_not_adopted(tmp_path):  # type: ignore[no-untyped-def]
    path = str(tmp_path / "s.db")
    store = open_store(path)
    spans, texts = _spans(300, lambda i: os.urandom(8000).hex())  # no shared vocabulary: little to learn
    StoreSpanExporter(store, "app").export(spans)
    assert store.query("SELECT count(*) FROM content_dicts")[0][0] == 0
    assert store.query("SELECT DISTINCT substr(content, 1, 1) FROM spans") == [(b"z",)]
    assert _stored(path) == {f"s{i}": t for i, t in enumerate(texts)}


def test_no_row_ever_names_a_dictionary_the_store_lacks(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """The write that would first store the dictionary fails (a transient error): its rows are not stored,
    the dictionary stays pending and goes in with the next write that succeeds."""
    from ragtrail.store._sqlite import SQLiteStore

    path = str(tmp_path / "s.db")
    store = open_store(path)
    real = SQLiteStore.transaction
    failed = []

    def flaky(self, *a, **k):  # type: ignore[no-untyped-def]
        if self.codec.pending() and not failed:
            failed.append(1)
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, *a, **k)

    monkeypatch.setattr(SQLiteStore, "transaction", flaky)
    spans, texts = _spans(400, _prose)
    rows = [span_to_row(s, "app") for s in spans]
    with pytest.raises(Exception):  # noqa: B017,PT011 - the store's transient error, whatever its wrapper
        store.write_spans(rows)
    assert failed and store.query("SELECT count(*) FROM spans")[0][0] == 0
    assert store.write_spans(rows) == 400
    ids = {r[0] for r in store.query("SELECT id FROM content_dicts")}
    named = store.query("SELECT content FROM spans WHERE substr(content, 1, 1) = X'44'")
    assert named and {int.from_bytes(bytes(b)[1:5], "little") for (b,) in named} <= ids
    assert _stored(path) == {f"s{i}": t for i, t in enumerate(texts)}
