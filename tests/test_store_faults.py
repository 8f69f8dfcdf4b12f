"""The store under bad input and faults, on SQLite and on the real PostgreSQL server.

Unusable locations give a clear error naming them; a store that breaks later never raises into the
traced app (drops are counted, flush() says False); a newer schema is refused; kill -9 mid-write
loses nothing flushed; several processes writing at once lose nothing."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

import ragtrail
from ragtrail.store import open_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return str(tmp_path / "store.db")
    return request.getfixturevalue("pg_url")


def _env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    return e


# ------------------------------------------------------------------------------- unusable stores
def test_unusable_sqlite_paths_name_the_path(tmp_path):
    ragtrail.shutdown()  # whatever an earlier test left running
    a_file = tmp_path / "plain.txt"
    a_file.write_text("not a directory")
    with pytest.raises(ragtrail.StoreError, match="plain.txt") as ei:
        ragtrail.init(store=str(a_file / "sub" / "x.db"))
    assert "init(store=" in str(ei.value)  # says what to do
    with pytest.raises(ragtrail.StoreError, match="is a directory"):
        ragtrail.init(store=str(tmp_path))
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 200)
    with pytest.raises(ragtrail.StoreError, match="garbage.db"):
        ragtrail.init(store=str(garbage))
    with pytest.raises(ragtrail.ConfigError, match="mysql"):
        ragtrail.init(store="mysql://u@h/db")
    with pytest.raises(ragtrail.ConfigError, match="memory"):
        ragtrail.Client(":memory:")
    assert ragtrail.tracing.get_config() is None  # a failed init leaves tracing off


def test_unreachable_postgres_url_is_a_clear_error():
    pytest.importorskip("psycopg")
    url = "postgresql://bob:s3cretpw@127.0.0.1:1/nowhere"
    with pytest.raises(ragtrail.StoreError) as ei:
        ragtrail.init(store=url)
    msg = str(ei.value)
    assert "127.0.0.1:1/nowhere" in msg and "server is running" in msg
    assert "s3cretpw" not in msg  # the password is never echoed


# --------------------------------------------------------------------------- stores that break later
def _fail_then_check(store_label, caplog, break_it):
    """Write and flush fine, break the store, keep tracing: no exception, flush False, failures counted."""

    from ragtrail import semconv
    from ragtrail.tracing import current_span, set_content

    @ragtrail.trace
    def work(i):
        # each span needs fresh pages: random text, which the store's compression (issue 24) cannot shrink away
        set_content(current_span(), semconv.METADATA, secrets.token_hex(2500))
        return i * 2

    assert [work(i) for i in range(5)] == [0, 2, 4, 6, 8]
    assert ragtrail.flush(10) is True
    assert ragtrail.stats()["exported"] == 5
    from ragtrail import _log

    for key in [k for k in _log._seen if k.startswith("export-fail:")]:
        _log._seen.discard(key)  # each test sees its own "logged once"
    break_it()
    with caplog.at_level(logging.WARNING, logger="ragtrail"):
        for _round in range(3):
            assert [work(i) for i in range(7)] == [0, 2, 4, 6, 8, 10, 12]  # the app keeps running
            assert ragtrail.flush(10) is False
    st = ragtrail.stats()
    assert st["failed"] == 21, st
    assert st["exported"] == 5
    assert st["export_errors"] >= 3
    warnings_logged = [r for r in caplog.records if "could not write" in r.getMessage()]
    assert len(warnings_logged) == 1, [r.getMessage() for r in caplog.records]  # logged once
    assert store_label in warnings_logged[0].getMessage()


def test_sqlite_directory_removed_while_tracing(tmp_path, caplog):
    d = tmp_path / "gone"
    ragtrail.init(project="p", store=str(d / "s.db"), schedule_delay_ms=60_000, spool_max_bytes=0)
    try:
        _fail_then_check("s.db", caplog, lambda: shutil.rmtree(d))
    finally:
        ragtrail.shutdown()


def test_sqlite_disk_full_while_tracing(tmp_path, caplog):
    """SQLite's own page limit produces the real 'database or disk is full' error on the next write."""
    path = str(tmp_path / "full.db")
    cfg = ragtrail.init(project="p", store=path, schedule_delay_ms=60_000, spool_max_bytes=0)
    try:

        def fill():
            # cap the store's one writer connection at the file's current size
            n = cfg.store.query("PRAGMA page_count")[0][0]
            cfg.store._conn().execute(f"PRAGMA max_page_count={n}")

        _fail_then_check("full.db", caplog, fill)
    finally:
        ragtrail.shutdown()
    assert ragtrail.Client(path).store.count_spans() == 5
    assert sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


class _Proxy:
    """A TCP proxy in front of the PostgreSQL server that can be cut, like a server going away."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.alive = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.alive:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            u = socket.create_connection(self.target)
            self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.close()
                except OSError:
                    pass

    def cut(self) -> None:
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone would not
        except OSError:
            pass
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
                c.close()
            except OSError:
                pass


def test_postgres_server_gone_while_tracing(pg_url, caplog):
    from urllib.parse import urlparse

    p = urlparse(pg_url)
    proxy = _Proxy((p.hostname, p.port or 5432))
    url = pg_url.replace(f"{p.hostname}:{p.port or 5432}", f"127.0.0.1:{proxy.port}", 1)
    ragtrail.init(project="pg", store=url, schedule_delay_ms=60_000, spool_max_bytes=0)
    try:
        _fail_then_check(f"127.0.0.1:{proxy.port}", caplog, proxy.cut)
    finally:
        ragtrail.shutdown()
    assert open_store(pg_url).count_spans() == 5


# ------------------------------------------------------------------------------- schema versions
def test_newer_schema_is_refused(store_url):
    store = open_store(store_url)
    store.write_spans(
        [("a" * 32, "b" * 16, None, "s", "CHAIN", 1, 2, 0.0, "OK", None, None, None, None, None, "p", "{}", None, None)]
    )
    store.execute(
        "INSERT INTO ragtrail_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (999, "from_the_future", time.time()),
    )
    store.close()
    with pytest.raises(ragtrail.SchemaVersionError, match="999") as ei:
        open_store(store_url)
    assert "upgrade ragtrail" in str(ei.value)
    with pytest.raises(ragtrail.SchemaVersionError):
        ragtrail.init(store=store_url)
    with pytest.raises(ragtrail.SchemaVersionError):
        ragtrail.Client(store_url)
    # nothing was touched: the span and the future marker are still there
    if store_url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(store_url) as c:
            assert c.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 1
            assert c.execute("SELECT MAX(version) FROM ragtrail_migrations").fetchone()[0] == 999
    else:
        c = sqlite3.connect(store_url)
        assert c.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 1
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_migrations_are_recorded_in_order_and_applied_once(store_url):
    from ragtrail.store._migrations import MIGRATIONS

    s = open_store(store_url)
    rows = s.query("SELECT version, name FROM ragtrail_migrations ORDER BY version")
    assert [tuple(r) for r in rows] == [(v, n) for v, n, _a, _b in MIGRATIONS]
    s.close()
    s2 = open_store(store_url)
    assert len(s2.query("SELECT version FROM ragtrail_migrations")) == len(MIGRATIONS)
    assert s2.info()["schema_version"] == MIGRATIONS[-1][0]
    s2.close()


# --------------------------------------------------------------------------------------- kill -9
_KILL_CHILD = """
import sys, ragtrail
ragtrail.init(project="k", store=sys.argv[1], schedule_delay_ms=5)
batch = 0
while True:
    for i in range(200):
        with ragtrail.span(f"b{batch}-{i}", kind="CHAIN", attributes={"ragtrail.metadata": "x" * 200}):
            pass
    if ragtrail.flush(30):
        print(batch, flush=True)
    batch += 1
"""


@pytest.mark.slow
def test_kill9_mid_write_loses_nothing_flushed(store_url):
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, store_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    flushed: list[int] = []
    try:
        assert proc.stdout is not None
        while len(flushed) < 15:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            flushed.append(int(line))
        time.sleep(0.013)  # land somewhere inside the next batch's writes
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    # the last printed line may be cut; everything before it was flushed
    store = open_store(store_url)
    if store.kind == "sqlite":
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
    names = {r[0] for r in store.query("SELECT name FROM spans")}
    for b in flushed:
        missing = [i for i in range(200) if f"b{b}-{i}" not in names]
        assert not missing, (b, missing[:5])
    assert store.count_spans() >= 200 * len(flushed)
    store.close()


# ------------------------------------------------------------------------ concurrent processes
_WRITER = """
import sys, ragtrail
w = int(sys.argv[2])
ragtrail.init(project=f"w{w}", store=sys.argv[1], schedule_delay_ms=20)
for i in range(int(sys.argv[3])):
    with ragtrail.span(f"w{w}-{i}", kind="TOOL"):
        pass
ok = ragtrail.flush(120)
st = ragtrail.stats()
print(ok, st["exported"], st["failed"], st["dropped"])
assert ok and st["failed"] == 0 and st["dropped"] == 0, st
"""


@pytest.mark.slow
def test_four_processes_write_one_store_exactly(store_url):
    n = 10_000
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, store_url, str(w), str(n)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        for w in range(4)
    ]
    reader_errors: list[BaseException] = []
    reads = 0

    def read_while_writing() -> None:  # a notebook reading the store while workers write
        nonlocal reads
        c = None
        while any(p.poll() is None for p in procs):
            try:
                c = c or ragtrail.Client(store_url)
                c.traces_df(limit=5)
                reads += 1
            except BaseException as exc:  # noqa: BLE001
                # the very first reader can beat the file's creation or the migration
                if "no such table" not in str(exc) and "no store at" not in str(exc):
                    reader_errors.append(exc)
            time.sleep(0.2)

    t = threading.Thread(target=read_while_writing)
    t.start()
    outs = [p.communicate(timeout=600) for p in procs]
    t.join()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
        assert "locked" not in err
    assert not reader_errors, reader_errors
    store = open_store(store_url)
    assert store.count_spans() == 4 * n
    assert len(store.query("SELECT DISTINCT span_id FROM spans")) == 4 * n
    for w in range(4):
        assert store.count_spans(project=f"w{w}") == n
    if store.kind == "sqlite":
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
    store.close()


# ------------------------------------------------------------------------------------------ fork
_FORK_CHILD_COUNT = 300


def test_forked_workers_get_their_own_connections(store_url):
    """Batch workers forked after init() (multiprocessing's default on Linux) write through their own
    connections; the parent keeps using its own, undisturbed."""
    import multiprocessing as mp

    ragtrail.init(project="fork", store=store_url, schedule_delay_ms=20)
    try:
        for i in range(50):
            with ragtrail.span(f"parent-before-{i}"):
                pass
        assert ragtrail.flush()  # the parent's connections exist before the fork
        parent_conn = _conn_identity()
        ctx = mp.get_context("fork")
        procs = [ctx.Process(target=_fork_worker, args=(w, parent_conn)) for w in range(2)]
        for p in procs:
            p.start()
        for i in range(50):
            with ragtrail.span(f"parent-during-{i}"):
                pass
        assert ragtrail.flush()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        for i in range(50):
            with ragtrail.span(f"parent-after-{i}"):
                pass
        assert ragtrail.flush()
        assert ragtrail.stats()["failed"] == 0
    finally:
        ragtrail.shutdown()
    store = open_store(store_url)
    assert store.count_spans() == 150 + 2 * _FORK_CHILD_COUNT
    if store.kind == "sqlite":
        assert store.query("PRAGMA integrity_check")[0][0] == "ok"
    store.close()


def _conn_identity() -> object:
    """Which connection this thread's store calls use: the server's backend pid on PostgreSQL (the
    very session), the connection object's id on SQLite."""
    store = ragtrail.tracing.get_config().store
    if store.kind == "postgresql":
        return store.query("SELECT pg_backend_pid()")[0][0]
    return id(store._conn())  # the writer connection


def _fork_worker(w: int, parent_conn: object) -> None:
    if _conn_identity() == parent_conn:
        os._exit(3)  # the child would talk through the parent's connection
    for i in range(_FORK_CHILD_COUNT):
        with ragtrail.span(f"child{w}-{i}"):
            pass
    ok = ragtrail.flush(60)
    st = ragtrail.stats()
    os._exit(0 if ok and st["failed"] == 0 else 1)
