"""``writer="auto"`` (the default, issue 24): store writes move into a writer process once the load calls
for it, and then content is masked there, off the app's GIL, whenever the store is the only place spans go.

Real SQLite files, real SDK spans, a real child process; no LLM involved."""

from __future__ import annotations

import time
from typing import Any

import pytest

import ragtrail
from ragtrail import semconv
from ragtrail.tracing import set_content
from ragtrail.tracing._writer import AUTO_BATCH

SECRET = "sk-abcdefghijklmnopqrstuvwxyz0123456789"


def _wait_ready(writer: Any, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not writer.ready and time.monotonic() < end:
        time.sleep(0.05)
    assert writer.ready, "the writer process did not start"


def _spans(n: int, prefix: str = "s") -> None:
    for i in range(n):
        with ragtrail.span(f"{prefix}{i}", kind="RETRIEVER") as s:
            set_content(s, semconv.INPUT_VALUE, f"passage {i} " + "words " * 40)


@pytest.fixture(autouse=True)
def _no_env_writer(monkeypatch):  # type: ignore[no-untyped-def]
    from ragtrail.tracing import _collector

    monkeypatch.delenv("RAGTRAIL_WRITER", raising=False)
    if _collector._collector is not None:  # an earlier test's interrupted eval run may have left a trace watched
        _collector._collector.shutdown()
    yield
    ragtrail.shutdown()


def test_a_short_script_never_starts_a_writer_process(tmp_path):  # type: ignore[no-untyped-def]
    cfg = ragtrail.init(project="short", store=str(tmp_path / "s.db"), spool_dir=str(tmp_path / "spool"))
    w = cfg.store_exporter.writer
    assert w is not None and w.auto  # the default is "auto"
    _spans(50)
    assert ragtrail.flush(30)
    assert w.starts == 0 and w.child_pid is None and not w.ready
    assert cfg.store.count_spans() == 50
    assert not cfg.masked_in_writer()  # no writer process: content is masked when recorded


def test_load_moves_the_writes_into_a_writer_process_and_nothing_is_lost(tmp_path):  # type: ignore[no-untyped-def]
    cfg = ragtrail.init(
        project="busy", store=str(tmp_path / "s.db"), spool_dir=str(tmp_path / "spool"), schedule_delay_ms=60_000
    )
    w = cfg.store_exporter.writer
    _spans(AUTO_BATCH + 10, "a")  # one export batch this large: the exporter is behind
    assert ragtrail.flush(60)
    assert w.starts == 0 or w.ready  # started in the background, not on the exporter's path
    _wait_ready(w)
    pid = w.child_pid
    assert pid is not None
    _spans(500, "b")
    assert ragtrail.flush(60)
    assert w.child_pid == pid and w.starts == 1  # the second round went through the same child
    n = AUTO_BATCH + 10 + 500
    assert cfg.store.count_spans() == n  # written once each, by this process or the child
    st = ragtrail.stats()
    assert st["exported"] == n and st["dropped"] == 0 and st["failed"] == 0
    ragtrail.shutdown()
    assert w.child_pid is None  # stopped with the exporter


def test_with_the_writer_process_content_is_masked_there_not_here(tmp_path):  # type: ignore[no-untyped-def]
    cfg = ragtrail.init(project="defer", store=str(tmp_path / "s.db"), writer="process", schedule_delay_ms=60_000)
    with ragtrail.span("warm"):
        pass
    assert ragtrail.flush(30)
    _wait_ready(cfg.store_exporter.writer)
    assert cfg.masked_in_writer()
    with ragtrail.span("call") as s:
        set_content(s, semconv.INPUT_VALUE, f"use {SECRET} please")
        set_content(s, semconv.OUTPUT_VALUE, {"answer": f"key={SECRET}"})  # a structure: JSON, unscanned here
        assert SECRET in s.attributes[semconv.INPUT_VALUE]  # not scanned in the app
    assert ragtrail.flush(30)
    row = ragtrail.Client(cfg.store).spans(name="call")[0]
    assert SECRET not in str(row.attributes)  # the writer process masked both values
    assert row.attributes[semconv.INPUT_VALUE] == "use sk-*** please"
    assert row.attributes[semconv.MASKED] == 2


def test_a_value_over_the_cap_is_masked_here_before_the_cut(tmp_path):  # type: ignore[no-untyped-def]
    cfg = ragtrail.init(
        project="cap",
        store=str(tmp_path / "s.db"),
        writer="process",
        max_attribute_bytes=1024,
        schedule_delay_ms=60_000,
    )
    with ragtrail.span("warm"):
        pass
    assert ragtrail.flush(30)
    _wait_ready(cfg.store_exporter.writer)
    text = "x" * 999 + " " + SECRET  # the cut would fall inside the key: half a key must never be kept
    with ragtrail.span("big") as s:
        set_content(s, semconv.INPUT_VALUE, text)
        kept = s.attributes[semconv.INPUT_VALUE]
    assert kept == "x" * 999 + " sk-***"  # masked first; masked, it fits under the cap
    assert s.attributes[semconv.MASKED] == 1
    with ragtrail.span("bigger") as s2:
        set_content(s2, semconv.INPUT_VALUE, "y" * 1010 + " " + SECRET + " " + "z" * 100)
        kept = s2.attributes[semconv.INPUT_VALUE]
    assert "sk-" not in kept.replace("sk-***", "") and "abcdefghij" not in kept  # never half a key
    assert semconv.INPUT_VALUE in s2.attributes[semconv.TRUNCATED]


@pytest.mark.parametrize("other", ["exporter", "collector"])
def test_content_is_masked_when_recorded_while_something_else_reads_spans(tmp_path, other):  # type: ignore[no-untyped-def]
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ragtrail.tracing._collector import collector

    mem = InMemorySpanExporter()
    extra = {"exporters": [mem]} if other == "exporter" else {}
    cfg = ragtrail.init(project="o", store=str(tmp_path / "s.db"), writer="process", schedule_delay_ms=60_000, **extra)
    with ragtrail.span("warm"):
        pass
    assert ragtrail.flush(30)
    _wait_ready(cfg.store_exporter.writer)
    col = collector()
    with ragtrail.span("call") as s:
        if other == "collector":  # the eval harness reads this trace's spans in-process
            col.watch(s.get_span_context().trace_id)
        assert not cfg.masked_in_writer()
        set_content(s, semconv.INPUT_VALUE, f"use {SECRET} please")
        assert s.attributes[semconv.INPUT_VALUE] == "use sk-*** please"  # masked here, before anyone reads it
    assert ragtrail.flush(30)
    if other == "exporter":
        got = [sp.attributes[semconv.INPUT_VALUE] for sp in mem.get_finished_spans() if sp.name == "call"]
        assert got == ["use sk-*** please"]
    else:
        trace = col.take(s.get_span_context().trace_id)
        assert SECRET not in str([sp.attributes for sp in trace.spans])
        assert cfg.masked_in_writer()  # nothing watched any more


def test_the_writer_kind_comes_from_the_environment(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RAGTRAIL_WRITER", "thread")
    cfg = ragtrail.init(project="env", store=str(tmp_path / "s.db"))
    assert cfg.store_exporter.writer is None
    ragtrail.shutdown()
    monkeypatch.setenv("RAGTRAIL_WRITER", "process")
    cfg = ragtrail.init(project="env", store=str(tmp_path / "s.db"))
    assert cfg.store_exporter.writer is not None and not cfg.store_exporter.writer.auto
    ragtrail.shutdown()
    monkeypatch.setenv("RAGTRAIL_WRITER", "fork")
    with pytest.raises(ragtrail.ConfigError, match=r"RAGTRAIL_WRITER.*'auto'"):
        ragtrail.init(project="env", store=str(tmp_path / "s.db"))
    monkeypatch.delenv("RAGTRAIL_WRITER")
    cfg = ragtrail.init(project="env", store=str(tmp_path / "s.db"), mask=str.upper)  # a hook: in-process
    assert cfg.store_exporter.writer is None


def test_a_high_span_rate_starts_the_writer_process_before_the_first_export(tmp_path):  # type: ignore[no-untyped-def]
    cfg = ragtrail.init(project="rate", store=str(tmp_path / "s.db"), schedule_delay_ms=60_000)
    w = cfg.store_exporter.writer
    _spans(2_100, "r")  # well over 2,000 spans/s: the batch processor's pulses start the child
    _wait_ready(w)
    assert cfg.store_exporter.exported == 0  # before anything was exported
    assert cfg.masked_in_writer()
    assert ragtrail.flush(60)
    assert cfg.store.count_spans() == 2_100 and w.starts == 1


def test_a_frame_the_writer_process_cannot_read_is_written_here(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    """The child hands back a frame it cannot read (answer REFUSED); the app writes those spans itself,
    so nothing is lost and nothing is counted as failed. Frames around it go through the child."""
    from ragtrail.tracing import _exporter

    cfg = ragtrail.init(project="refuse", store=str(tmp_path / "s.db"), writer="process", schedule_delay_ms=60_000)
    real = _exporter.pack_spans
    calls = []

    def garbled(spans):  # type: ignore[no-untyped-def]
        calls.append(len(spans))
        return b"\\xff not a frame" if len(calls) == 2 else real(spans)

    monkeypatch.setattr(_exporter, "pack_spans", garbled)
    _spans(3_000, "f")  # three frames of 1,024, 1,024 and 952 spans: the second is garbled
    assert ragtrail.flush(60)
    assert calls[:3] == [1_024, 1_024, 952]
    st = ragtrail.stats()
    assert st["exported"] == 3_000 and st["failed"] == 0
    assert cfg.store.count_spans() == 3_000
