"""Retention (issue 16): ``prune`` deletes old traces whole, in batches, keeps what runs, datasets and
feedback refer to, lets writers go on meanwhile; ``store prune`` / ``store info`` CLI. Real SQLite files
and the real PostgreSQL server."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest
from typer.testing import CliRunner

from ragtrail._exceptions import ConfigError
from ragtrail.cli import app
from ragtrail.store import SPAN_COLUMNS, open_store
from ragtrail.store._retention import parse_age, prune, size_by_project_age

DAY = 86400
NOW = 1_800_000_000.0


def _rows(trace_id: str, starts_s: list[float], project: str = "app") -> list[tuple[object, ...]]:
    out = []
    for i, s in enumerate(starts_s):
        d = {
            "trace_id": trace_id, "span_id": f"{i + 1:016x}", "parent_span_id": None if i == 0 else f"{1:016x}",
            "name": "root" if i == 0 else "child", "kind": "CHAIN", "start_time_ns": int(s * 1e9),
            "end_time_ns": int(s * 1e9) + 1000, "duration_ms": 0.001, "status": "OK", "project": project,
            "attributes": json.dumps({"x": "y" * 200}),
        }  # fmt: skip
        out.append(tuple(d.get(c) for c in SPAN_COLUMNS))
    return out


def _tid() -> str:
    return uuid.uuid4().hex


def _ensure_feedback(store) -> None:  # type: ignore[no-untyped-def]
    """The ``feedback`` table of the feedback issue (migration 4) when this branch's store lacks it."""
    store.execute(
        "CREATE TABLE IF NOT EXISTS feedback (feedback_id TEXT PRIMARY KEY, trace_id TEXT NOT NULL, span_id TEXT, "
        "name TEXT NOT NULL, value_type TEXT NOT NULL, value_num DOUBLE PRECISION, value_text TEXT, comment TEXT, "
        "source TEXT NOT NULL, author TEXT, created_at DOUBLE PRECISION NOT NULL, cost_usd DOUBLE PRECISION, "
        "details TEXT)"
    )


def _add_feedback(store, trace_id: str, created_at: float) -> None:  # type: ignore[no-untyped-def]
    store.execute(
        "INSERT INTO feedback (feedback_id, trace_id, name, value_type, source, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (uuid.uuid4().hex, trace_id, "thumbs", "bool", "human", created_at),
    )


def _fill(store) -> dict[str, object]:  # type: ignore[no-untyped-def]
    old = [_tid() for _ in range(120)]
    new = [_tid() for _ in range(15)]
    rows = []
    for t in old:
        rows += _rows(t, [NOW - 40 * DAY, NOW - 40 * DAY + 1, NOW - 40 * DAY + 2])
    for t in new:
        rows += _rows(t, [NOW - 2 * DAY, NOW - 2 * DAY + 1])
    straddle = _tid()
    rows += _rows(straddle, [NOW - 31 * DAY, NOW - 29 * DAY])  # started old, still growing: never cut in two
    other = _tid()
    rows += _rows(other, [NOW - 50 * DAY], project="other")
    store.write_spans(rows)
    run_ref, ds_ref, fb_ref = old[0], old[1], old[2]
    store.execute(
        "INSERT INTO run_results (run_id, example_id, scorer, score, status, trace_id, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        ("r1", "e1", "em", 1.0, "ok", run_ref, NOW),
    )
    store.execute(
        "INSERT INTO datasets (name, version, created_at, n_examples, meta) VALUES (?, ?, ?, ?, ?)",
        ("from-traces", "v1", NOW, 1, json.dumps({"trace_ids": [ds_ref]})),
    )
    _ensure_feedback(store)
    _add_feedback(store, fb_ref, NOW - 40 * DAY)
    _add_feedback(store, old[3], NOW - 40 * DAY)  # its trace is referenced by this feedback too
    _add_feedback(store, _tid(), NOW - 60 * DAY)  # an orphan: no such trace
    return {"old": old, "new": new, "straddle": straddle, "other": other, "refs": {run_ref, ds_ref, fb_ref, old[3]}}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):  # type: ignore[no-untyped-def]
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else str(tmp_path / "r.db")
    s = open_store(url)
    yield s
    s.close()


def _traces(store) -> set[str]:  # type: ignore[no-untyped-def]
    return {r[0] for r in store.query("SELECT DISTINCT trace_id FROM spans")}


def test_prune_keeps_referenced_recent_and_growing_traces(store) -> None:  # type: ignore[no-untyped-def]
    f = _fill(store)
    dry = prune(store, "30d", now_s=NOW, dry_run=True, batch_traces=7)
    assert len(_traces(store)) == 120 + 15 + 2  # nothing deleted
    res = prune(store, "30d", now_s=NOW, batch_traces=7)
    assert (res.traces_deleted, res.spans_deleted) == (dry.traces_deleted, dry.spans_deleted)
    assert res.traces_deleted == 120 - 4 + 1  # the old ones minus the 4 referenced, plus the other project's
    assert res.spans_deleted == 116 * 3 + 1 and res.traces_kept_referenced == 4
    assert res.batches >= 116 // 7
    left = _traces(store)
    assert left == set(f["new"]) | {f["straddle"]} | f["refs"]  # type: ignore[operator]
    # whole traces only
    counts = dict(store.query("SELECT trace_id, COUNT(*) FROM spans GROUP BY trace_id"))
    assert all(counts[t] == 3 for t in f["refs"])  # type: ignore[attr-defined]
    assert int(store.query("SELECT COUNT(*) FROM feedback")[0][0]) == 3  # nothing asked: feedback untouched


def test_prune_project_only(store) -> None:  # type: ignore[no-untyped-def]
    f = _fill(store)
    res = prune(store, "30d", now_s=NOW, project="other")
    assert res.traces_deleted == 1 and f["other"] not in _traces(store)
    assert len(_traces(store)) == 120 + 15 + 1


def test_prune_referenced_when_asked_keeps_eval_runs(store) -> None:  # type: ignore[no-untyped-def]
    f = _fill(store)
    res = prune(store, "30d", now_s=NOW, delete_referenced=True, keep_eval_runs=True)
    old: list[str] = f["old"]  # type: ignore[assignment]
    assert _traces(store) == set(f["new"]) | {f["straddle"], old[0]}  # type: ignore[arg-type]
    # the two feedback rows of deleted traces, and the old orphan
    assert res.feedback_deleted == 3 and int(store.query("SELECT COUNT(*) FROM feedback")[0][0]) == 0
    res2 = prune(store, "30d", now_s=NOW, delete_referenced=True, keep_eval_runs=False)
    assert res2.traces_deleted == 1 and old[0] not in _traces(store)


def test_writer_goes_on_during_a_prune(store) -> None:  # type: ignore[no-untyped-def]
    """A second connection keeps writing spans while a prune deletes thousands: every write lands."""
    rows = []
    for _ in range(3000):
        rows += _rows(_tid(), [NOW - 40 * DAY, NOW - 40 * DAY + 1])
    store.write_spans(rows)
    writer_store = store  # the writer thread gets its own connection (one per thread)
    written: list[str] = []
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            t = _tid()
            writer_store.write_spans(_rows(t, [NOW - 10]))
            written.append(t)

    th = threading.Thread(target=write)
    th.start()
    try:
        res = prune(store, "30d", now_s=NOW, batch_traces=200)
    finally:
        time.sleep(0.05)
        stop.set()
        th.join(30)
    if store.kind == "sqlite":
        assert res.traces_deleted == 3000 and res.batches == 15
    else:  # the old day's partition dropped whole (one short transaction), no row batches
        assert res.traces_deleted == 3000 and res.spans_deleted == 6000
        day = time.strftime("spans_p%Y%m%d", time.gmtime(NOW - 40 * DAY))
        assert day in res.partitions_dropped and res.longest_batch_s > 0
    assert written and set(written) <= _traces(store)


def test_vacuum_gives_space_back(tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = open_store(str(tmp_path / "v.db"))
    rows = []
    for _ in range(2000):
        rows += _rows(_tid(), [NOW - 40 * DAY] * 3)
    s.write_spans(rows)
    res = prune(s, "30d", now_s=NOW, vacuum=True)
    assert res.bytes_before and res.bytes_after and res.bytes_after < res.bytes_before / 3
    s.close()


def test_size_by_project_and_age(store) -> None:  # type: ignore[no-untyped-def]
    _fill(store)
    rows = {(r["project"], r["age"]): r for r in size_by_project_age(store, now_s=NOW)}
    assert rows[("app", "30-90d")]["traces"] == 121 and rows[("app", "30-90d")]["spans"] == 361
    assert rows[("app", "1-7d")]["traces"] == 15
    assert rows[("app", "7-30d")]["spans"] == 1  # the growing trace's newer span
    assert rows[("other", "30-90d")]["traces"] == 1
    assert rows[("app", "30-90d")]["payload_bytes"] > 361 * 200


def test_cli_prune_and_info(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "c.db")
    s = open_store(path)
    now = time.time()
    s.write_spans(_rows(_tid(), [now - 40 * DAY]) + _rows(_tid(), [now - 60]))
    s.close()
    runner = CliRunner()
    out = runner.invoke(app, ["store", "prune", "--older-than", "30d", "--dry-run", "--json", "-s", path])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["traces_deleted"] == 1
    assert len(_traces(open_store(path))) == 2
    out = runner.invoke(app, ["store", "prune", "--older-than", "30d", "--vacuum", "-s", path])
    assert out.exit_code == 0 and "deleted 1 traces" in out.output and "MB →" in out.output
    info = json.loads(runner.invoke(app, ["store", "info", "--json", "-s", path]).output)
    assert [(r["age"], r["traces"]) for r in info["by_project_age"]] == [("<1d", 1)]
    out = runner.invoke(app, ["store", "info", "-s", path])
    assert "payload MB" in out.output
    bad = runner.invoke(app, ["store", "prune", "--older-than", "soon", "-s", path])
    assert bad.exit_code != 0


def test_parse_age() -> None:
    assert parse_age("30d") == 30 * DAY and parse_age("12h") == 43200 and parse_age("2w") == 14 * DAY
    assert parse_age(90) == 90
    for bad in ("soon", "0d", "-1d", ""):
        with pytest.raises(ConfigError, match="age"):
            parse_age(bad)


def test_retention_thread_prunes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ragtrail.store._retention import start_retention

    s = open_store(str(tmp_path / "t.db"))
    s.write_spans(_rows(_tid(), [time.time() - 40 * DAY]) + _rows(_tid(), [time.time()]))
    stop = start_retention(s, "30d", every_s=0.05)
    try:
        deadline = time.monotonic() + 20
        while len(_traces(s)) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
    assert len(_traces(s)) == 1
    s.close()
    assert os.path.exists(tmp_path / "t.db")


def test_serve_retention_option_prunes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``ragtrail serve --retention 30d --retention-every 1s`` (a real process) prunes the old trace."""
    import signal
    import socket
    import subprocess
    import sys

    path = str(tmp_path / "serve.db")
    s = open_store(path)
    s.write_spans(_rows(_tid(), [time.time() - 40 * DAY]) + _rows(_tid(), [time.time()]))
    s.close()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    p = subprocess.Popen(
        [sys.executable, "-c", "from ragtrail.cli import main; main()", "serve", "--store", path, "--http-port",
         str(port), "--grpc-port", "-1", "--retention", "30d", "--retention-every", "1s"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while len(_traces(open_store(path))) != 1 and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.2)
        assert len(_traces(open_store(path))) == 1
    finally:
        p.send_signal(signal.SIGTERM)
        out = p.communicate(timeout=60)[0]
    assert p.returncode == 0, out
