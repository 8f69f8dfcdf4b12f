"""The SQLite store: a file, WAL, one writer per process and a small reader pool."""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ragtrail._exceptions import SchemaVersionError, StoreError
from ragtrail.store import _codec
from ragtrail.store._base import (
    _ATTRS_AT,
    _INSERT_SPANS_CONTENT,
    SPAN_COLUMNS,
    Store,
    _inherited,
    _inherited_lock,
    _is_locked,
)
from ragtrail.store._pool import Pool

_PROJECT_AT = SPAN_COLUMNS.index("project")
_INSERT_DICT = (
    "INSERT OR IGNORE INTO content_dicts (id, project, created_ns, codec, dict, samples, sample_bytes, plain_bytes, "
    "dict_bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class SQLiteStore(Store):
    """A SQLite file in WAL mode. Safe with several threads and processes writing at once.

    Per process: one writer connection (transactions take turns on it, whichever thread calls) and a
    small pool of reader connections (``readers``, default 4), so threads that come and go (each one
    that calls ``ragtrail.flush()`` exports on itself) never leave connections behind.
    """

    kind = "sqlite"

    def attributes_sql(self, alias: str = "") -> str:
        # rows without compressed content (small spans, rows from before migration 12) never call Python
        a, c = f"{alias}attributes", f"{alias}content"
        return f"(CASE WHEN {c} IS NULL THEN {a} ELSE ragtrail_attributes({a}, {c}) END)"

    def __init__(self, path: str, *, busy_timeout_s: float = 60.0, readers: int = 4) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.url = self.path
        self.busy_timeout_s = busy_timeout_s
        self.readers = max(1, int(readers))
        self._pid = os.getpid()
        self.codec = _codec.ContentCodec(self._load_dicts)  # content compression, with trained dictionaries
        self._setup_connections()
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)  # prompts and outputs are private data
        except OSError as exc:
            raise StoreError(
                f"cannot create the directory {parent!r} for the SQLite store {self.path!r}: {exc.strerror}. "
                "Pass a writable path to init(store=...) / Client(store=...) or set RAGTRAIL_STORE / RAGTRAIL_HOME."
            ) from exc
        if os.path.isdir(self.path):
            raise StoreError(
                f"the store path {self.path!r} is a directory; pass a file path such as {self.path}/ragtrail.db"
            )
        if not os.path.exists(self.path):  # a new store file: owner-only before anything is written
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            self._migrate()
        except SchemaVersionError:
            raise
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"cannot open the SQLite store {self.path!r}: {exc}. Check that it is a ragtrail SQLite file "
                "and writable, or pass another path to init(store=...)."
            ) from exc

    def _load_dicts(self) -> list[tuple[int, str, bytes]]:
        """The store's content dictionaries, oldest first, read on a connection of their own (this runs
        inside ``ragtrail_attributes`` too, where the calling connection is busy)."""
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s)
        try:
            return conn.execute("SELECT id, project, dict FROM content_dicts ORDER BY created_ns, id").fetchall()
        finally:
            conn.close()

    def _setup_connections(self) -> None:
        self._writer: sqlite3.Connection | None = None
        self._writer_ident: tuple[int, int] | None = None
        self._writer_lock = threading.RLock()  # one write transaction at a time in this process
        self._writer_owner = threading.local()  # set on the thread inside a write transaction
        self._pool = Pool(self._open_reader, _close_sqlite, size=self.readers)

    def _after_fork(self) -> None:
        with _inherited_lock:  # never touch the parent's handles (see Store._after_fork)
            _inherited.append(self._writer)
            _inherited.extend(self._pool._idle)
        self._setup_connections()
        self.codec = _codec.ContentCodec(self._load_dicts)  # its lock may have been held at the fork
        self._pid = os.getpid()

    def _open(self, cache_kib: int) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA page_size=8192")  # takes effect only when the file is created
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
                conn.execute("PRAGMA foreign_keys=OFF")
                conn.execute(f"PRAGMA cache_size=-{cache_kib}")
                # checkpoint the WAL every ~80 MB instead of every 8 MB: fewer copies during ingest
                conn.execute("PRAGMA wal_autocheckpoint=10000")
                # the whole attributes JSON of a span whose large text attributes are compressed
                conn.create_function("ragtrail_attributes", 2, self.codec.join, deterministic=True)
            except BaseException:
                conn.close()
                raise
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(
                f"cannot open the SQLite store {self.path!r}: {exc}. Check that the directory exists and "
                "is writable, or pass another path to init(store=...) / Client(store=...)."
            ) from exc
        return conn

    def _open_reader(self) -> sqlite3.Connection:
        return self._open(16_384)  # 16 MiB page cache per reader

    def _conn(self) -> sqlite3.Connection:
        """The process's writer connection (opened on first use)."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._writer_lock:
            conn = self._writer
            if conn is None:
                conn = self._open(32_768)  # 32 MiB page cache: large batches
                try:
                    st = os.stat(self.path)
                except OSError as exc:
                    conn.close()
                    raise StoreError(f"the SQLite store {self.path!r} is gone ({exc.strerror})") from exc
                self._writer = conn
                self._writer_ident = (st.st_dev, st.st_ino)
            return conn

    @property
    def open_connections(self) -> int:
        """Connections this store holds open now (the writer and the pooled readers)."""
        return (self._writer is not None) + self._pool.open_connections

    def _check_file(self) -> None:
        """Refuse to write into a file that was deleted or replaced since it was opened: SQLite would
        carry on writing into the unlinked inode and the data would silently vanish."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._drop_connections()
            raise StoreError(
                f"the SQLite store {self.path!r} is gone ({exc.strerror}); it was deleted or its directory "
                "removed while in use. Restore it or point init(store=...) at another path."
            ) from exc
        if self._writer_ident is not None and self._writer_ident != (st.st_dev, st.st_ino):
            self._drop_connections()
            raise StoreError(
                f"the SQLite store {self.path!r} was replaced by another file while in use; the next write reopens it"
            )

    def _drop_connections(self) -> None:
        """Close the writer and the idle readers; the next call opens the file again."""
        conn, self._writer, self._writer_ident = self._writer, None, None
        if conn is not None:
            _close_sqlite(conn)
        self._pool.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        if self._pid != os.getpid():
            self._after_fork()
        with self._writer_lock:
            conn = self._conn()
            self._check_file()
            deadline = time.monotonic() + self.busy_timeout_s
            while True:  # BEGIN IMMEDIATE takes the write lock up front; retry it while another process has it
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if not _is_locked(exc) or time.monotonic() > deadline:
                        raise StoreError(f"SQLite store {self.path}: {exc}") from exc
                    time.sleep(0.005 + random.random() * 0.02)
            cur = conn.cursor()
            self._writer_owner.conn = conn
            try:
                yield cur
            except BaseException as exc:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(f"SQLite store {self.path}: {exc}") from exc
                raise
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                    raise StoreError(f"SQLite store {self.path}: commit failed: {exc}") from exc
            finally:
                self._writer_owner.conn = None
                cur.close()

    def _insert_spans(self, rows: Sequence[Sequence[Any]]) -> int:
        """Rows with their large text attributes moved, compressed, to ``content`` (store/_codec.py)."""
        split = _codec.split_attributes
        codec = self.codec
        at = _ATTRS_AT
        out = []
        for r in rows:
            attrs = r[at]
            if attrs is not None and len(attrs) >= _codec.MIN_JSON:
                small, blob = split(attrs, codec, r[_PROJECT_AT] or "")
                out.append((*r[:at], small, *r[at + 1 :], blob))
            else:
                out.append((*r, None))
        dicts = codec.pending()  # a dictionary is stored with the first rows that name it
        with self.transaction() as cur:
            if dicts:
                cur.executemany(_INSERT_DICT, dicts)
            cur.executemany(_INSERT_SPANS_CONTENT, out)
            n = int(getattr(cur, "rowcount", len(rows)))
        if dicts:
            codec.persisted(dicts)
        return n

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        """A reader from the pool, or the writer when this thread is inside a write transaction (so
        it reads its own uncommitted writes)."""
        if self._pid != os.getpid():
            self._after_fork()
        own = getattr(self._writer_owner, "conn", None)
        if own is not None:
            yield own
            return
        with self._pool.connection() as conn:
            yield conn

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._reader() as conn:
            deadline = time.monotonic() + self.busy_timeout_s
            while True:
                try:
                    return conn.execute(sql, tuple(params)).fetchall()
                except sqlite3.OperationalError as exc:
                    if not _is_locked(exc) or time.monotonic() > deadline:
                        _codec.raise_if_codec_missing(exc)
                        raise StoreError(f"SQLite store {self.path}: {exc}") from exc
                    time.sleep(0.01)
                except sqlite3.Error as exc:
                    raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def iter_query(self, sql: str, params: Sequence[Any] = (), batch: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        """Yield rows of a read query in batches (bounded memory for large exports)."""
        with self._reader() as conn:
            try:
                cur = conn.execute(sql, tuple(params))
                try:
                    while True:
                        rows = cur.fetchmany(batch)
                        if not rows:
                            return
                        yield rows
                finally:
                    cur.close()
            except sqlite3.Error as exc:
                _codec.raise_if_codec_missing(exc)
                raise StoreError(f"SQLite store {self.path}: {exc}") from exc

    def info(self) -> dict[str, Any]:
        data = super().info()
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.path.getsize(self.path + suffix)
        data["size_bytes"] = size
        return data

    def close(self) -> None:
        """Close the writer and the pooled readers (the next call opens them again)."""
        if self._pid != os.getpid():
            self._after_fork()
        with self._writer_lock:
            self._drop_connections()


def _close_sqlite(conn: sqlite3.Connection) -> None:
    with contextlib.suppress(Exception):
        conn.close()


# --------------------------------------------------------------------------------------- PostgreSQL
