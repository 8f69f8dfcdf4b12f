"""The store: SQLite by default (a file, WAL, one writer per process), PostgreSQL by URL.

The same SQL runs on both: write it with ``?`` placeholders; the PostgreSQL store rewrites them.
Every public method raises :class:`~ragtrail.StoreError` (with the store's location and what to do),
never a driver's own exception.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

from ragtrail._exceptions import ConfigError, SchemaVersionError, StoreError
from ragtrail._log import warn_once
from ragtrail.store import _codec
from ragtrail.store._migrations import LATEST, MIGRATIONS
from ragtrail.store._partitions import Partitions
from ragtrail.store._pool import Pool
from ragtrail.store._storable import _is_transient, _reason, _row_ok, cached_tokens_of_json, reduced_row, storable_row
from ragtrail.store._url import resolve_store_url

SPAN_COLUMNS: tuple[str, ...] = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_time_ns", "end_time_ns", "duration_ms",
    "status", "status_message", "model", "input_tokens", "output_tokens", "cost_usd", "project",
    "attributes", "events", "resource", "session_id", "user_id", "span_kind", "links", "scope_name",
    "scope_version", "cached_input_tokens",
)  # fmt: skip
_CACHED_AT = SPAN_COLUMNS.index("cached_input_tokens")


def _full_rows(rows: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
    """Rows padded with NULLs for the columns a writer did not give (the 18-column layout from before
    migration 4, the 20-column one from before migration 10, the 24-column one from before migration
    13): those still write. A row without the cached-input-token column gets it from its attributes
    JSON, as migration 13 filled the rows already stored."""
    n = len(SPAN_COLUMNS)
    if all(len(r) == n for r in rows):
        return rows
    out = []
    for r in rows:
        if len(r) < n:
            r = (*r, *(None,) * (n - len(r) - 1), cached_tokens_of_json(r[_ATTRS_AT] if len(r) > _ATTRS_AT else None))
        out.append(r)
    return out


_ATTRS_AT = SPAN_COLUMNS.index("attributes")
_INSERT_SPANS = (
    f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}) VALUES ({', '.join('?' * len(SPAN_COLUMNS))}) "  # noqa: S608 - fixed column names
    "ON CONFLICT (trace_id, span_id) DO NOTHING"
)
# SQLite: the same with the compressed content column last (store/_codec.py)
_INSERT_SPANS_CONTENT = (
    f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}, content) "  # noqa: S608 - fixed column names
    f"VALUES ({', '.join('?' * (len(SPAN_COLUMNS) + 1))}) ON CONFLICT (trace_id, span_id) DO NOTHING"
)


def span_columns_sql(store: Store, alias: str = "") -> str:
    """The SELECT list of :data:`SPAN_COLUMNS` for ``store``: ``attributes`` read whole (the small
    attributes and the compressed content joined again, see store/_codec.py)."""
    return ", ".join(store.attributes_sql(alias) if c == "attributes" else alias + c for c in SPAN_COLUMNS)


class Store:
    """Base class of the SQLite and PostgreSQL stores."""

    def attributes_sql(self, alias: str = "") -> str:
        """A SQL expression giving a span's whole attributes JSON (``alias`` like ``"s."``)."""
        return f"{alias}attributes"

    kind: str = "base"
    url: str = ""

    # -- SQL --------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:  # pragma: no cover - abstract
        """A write transaction; yields a cursor whose ``execute(sql, params)`` takes ``?`` placeholders."""
        raise NotImplementedError
        yield

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:  # pragma: no cover
        """Run a read query (``?`` placeholders) and return all rows."""
        raise NotImplementedError

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement in its own transaction; returns the row count."""
        with self.transaction() as cur:
            cur.execute(sql, params)
            return int(getattr(cur, "rowcount", 0) or 0)

    def close(self) -> None:  # pragma: no cover - abstract
        """Close the store's connections (a later call opens them again)."""

    # -- spans ------------------------------------------------------------------------------------
    def write_spans(self, rows: Sequence[Sequence[Any]]) -> int:
        """Insert span rows (SPAN_COLUMNS order); re-inserting a span is a no-op. Returns how many rows
        were stored (spans already stored are not counted).

        One bad row never costs the others: values are made storable first (:func:`storable_row`), and
        if the write still fails for a data reason the batch is split until the bad rows are found; a
        bad row is stored in reduced form (ids, name, times, the reason) or, if even that fails, counted
        by reason in :attr:`rejected`. Transient failures (server down, disk full, lock) raise
        :class:`StoreError` as before, for the caller's bounded retry.
        """
        if not rows:
            return 0
        rows = _full_rows(rows)
        fixed = [r if _row_ok(r) else self._repaired(r) for r in rows]
        return self._write_split(fixed)

    def _insert_spans(self, rows: Sequence[Sequence[Any]]) -> int:
        """One transaction inserting ``rows`` (the fast path; subclasses may override)."""
        with self.transaction() as cur:
            cur.executemany(_INSERT_SPANS, rows)
            return int(getattr(cur, "rowcount", len(rows)))

    def _write_split(self, rows: Sequence[Sequence[Any]]) -> int:
        try:
            return self._insert_spans(rows)
        except Exception as exc:
            if _is_transient(exc):
                raise
            err: BaseException = exc
        if len(rows) > 1:
            mid = len(rows) // 2
            return self._write_split(rows[:mid]) + self._write_split(rows[mid:])
        return self._write_bad_row(rows[0], err)

    def _write_bad_row(self, row: Sequence[Any], err: BaseException) -> int:
        reason = _reason(err)
        for label, candidate in (("repaired", storable_row(row, deep=True)[0]), ("reduced", reduced_row(row, reason))):
            try:
                n = self._insert_spans([candidate])
            except Exception as exc:
                if _is_transient(exc):
                    raise
                continue
            with self._counts_lock:
                self.span_counts[label] = self.span_counts.get(label, 0) + 1
            return n
        with self._counts_lock:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
        warn_once(f"span-rejected:{reason}", "ragtrail: the store %s refused a span (%s); it is counted in "
                  "ragtrail.stats() and not stored", self.url, reason)  # fmt: skip
        return 0

    def _repaired(self, row: Sequence[Any]) -> tuple[Any, ...]:
        fixed, columns = storable_row(row)
        if columns:
            with self._counts_lock:
                self.span_counts["repaired"] = self.span_counts.get("repaired", 0) + 1
        return fixed

    _counts_lock = threading.Lock()

    @property
    def rejected(self) -> dict[str, int]:
        """Spans the store refused even in reduced form, by reason."""
        d = self.__dict__.get("_rejected")
        if d is None:
            d = self.__dict__["_rejected"] = {}
        return d

    def span_stats(self) -> dict[str, int]:
        """``repaired``, ``reduced`` and ``rejected`` span counts, and ``rejected.<reason>`` per reason."""
        with self._counts_lock:
            out = {"repaired": 0, "reduced": 0, **self.span_counts, "rejected": sum(self.rejected.values())}
            out.update({f"rejected.{k}": v for k, v in self.rejected.items()})
        return out

    @property
    def span_counts(self) -> dict[str, int]:
        """Spans written with columns emptied (``repaired``) or in reduced form (``reduced``)."""
        d = self.__dict__.get("_span_counts")
        if d is None:
            d = self.__dict__["_span_counts"] = {}
        return d

    def count_spans(self, project: str | None = None) -> int:
        if project is None:
            return int(self.query("SELECT COUNT(*) FROM spans")[0][0])
        return int(self.query("SELECT COUNT(*) FROM spans WHERE project = ?", (project,))[0][0])

    def info(self) -> dict[str, Any]:
        """Location, schema version and row counts."""
        counts = {}
        for t in ("spans", "datasets", "runs", "run_results"):
            counts[t] = int(self.query(f"SELECT COUNT(*) FROM {t}")[0][0])  # noqa: S608 - fixed names
        traces = int(self.query("SELECT COUNT(DISTINCT trace_id) FROM spans")[0][0])
        projects = [r[0] for r in self.query("SELECT DISTINCT project FROM spans ORDER BY 1")]
        return {
            "kind": self.kind,
            "url": self.url,
            "schema_version": self.schema_version(),
            "traces": traces,
            "projects": projects,
            **counts,
        }

    def schema_version(self) -> int:
        rows = self.query("SELECT MAX(version) FROM ragtrail_migrations")
        return int(rows[0][0] or 0)

    # -- migrations -------------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self.transaction() as cur:
            self._lock_for_migration(cur)
            cur.execute(
                "CREATE TABLE IF NOT EXISTS ragtrail_migrations "
                "(version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            cur.execute("SELECT version FROM ragtrail_migrations")
            done = {int(r[0]) for r in cur.fetchall()}
            if done and max(done) > LATEST:
                raise SchemaVersionError(
                    f"the store at {self.url} has schema version {max(done)}, newer than this ragtrail "
                    f"understands ({LATEST}); upgrade ragtrail (pip install -U ragtrail) or use another store"
                )
            for version, name, sqlite_sql, pg_sql in MIGRATIONS:
                if version in done:
                    continue
                sql = sqlite_sql if self.kind == "sqlite" else pg_sql
                if callable(sql):
                    sql(cur)
                    sql = ""
                for stmt in (s.strip() for s in sql.split(";")):
                    if stmt:
                        cur.execute(stmt)
                cur.execute(
                    "INSERT INTO ragtrail_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, time.time()),
                )

    def _lock_for_migration(self, cur: Any) -> None:
        """Serialise concurrent migrations (SQLite: BEGIN IMMEDIATE already does)."""

    _pid: int = -1

    def _after_fork(self) -> None:  # pragma: no cover - abstract
        """In a forked child: never touch the parent's connections (a SQLite handle or a PostgreSQL
        socket shared across fork corrupts both sides). They are kept referenced, unclosed, in
        ``_inherited`` so that garbage collection cannot close them under the parent either; the child
        opens its own."""

    @property
    def open_connections(self) -> int:  # pragma: no cover - abstract
        """Connections this store holds open now (bounded per process, whichever threads call)."""
        return 0


_inherited: list[Any] = []  # connections a forked child got from its parent (see Store._after_fork)
_inherited_lock = threading.Lock()

# ------------------------------------------------------------------------------------------- SQLite
_LOCKED_MARKERS = ("database is locked", "database table is locked", "busy")


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and any(m in str(exc).lower() for m in _LOCKED_MARKERS)


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
                conn.create_function("ragtrail_attributes", 2, _codec.sql_join, deterministic=True)
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
        at = _ATTRS_AT
        out = []
        for r in rows:
            attrs = r[at]
            if attrs is not None and len(attrs) >= _codec.MIN_JSON:
                small, blob = split(attrs)
                out.append((*r[:at], small, *r[at + 1 :], blob))
            else:
                out.append((*r, None))
        with self.transaction() as cur:
            cur.executemany(_INSERT_SPANS_CONTENT, out)
            return int(getattr(cur, "rowcount", len(rows)))

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
class _PgCursor:
    """Adapts a psycopg cursor to ``?`` placeholders."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self._cur.execute(_pg_sql(sql), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> Any:
        return self._cur.executemany(_pg_sql(sql), rows)

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._cur.fetchall())

    def fetchone(self) -> tuple[Any, ...] | None:
        row = self._cur.fetchone()
        return None if row is None else tuple(row)

    @property
    def rowcount(self) -> int:
        return int(self._cur.rowcount or 0)


_pg_cache: dict[str, str] = {}


def _pg_sql(sql: str) -> str:
    out = _pg_cache.get(sql)
    if out is None:
        out = sql.replace("%", "%%").replace("?", "%s")
        out = out.replace("INSERT OR IGNORE INTO", "INSERT INTO")
        _pg_cache[sql] = out
    return out


class PostgresStore(Store):
    """A PostgreSQL database (``postgresql://user@host:port/db``).

    Connections come from a bounded pool per process (``pool_size``, default 4) whichever threads
    call; a broken connection (server restarted, network cut) is dropped and replaced on next use.
    """

    kind = "postgresql"

    def __init__(self, url: str, *, connect_timeout_s: int = 10, pool_size: int = 4) -> None:
        from ragtrail._deps import require

        self._psycopg = require("psycopg", extra="postgres")
        self.url = _redact_url(url)
        self._dsn = url
        self.connect_timeout_s = connect_timeout_s
        self.pool_size = max(1, int(pool_size))
        self._pid = os.getpid()
        self._setup_connections()
        self._migrate()
        self._partitions = Partitions(self)  # spans by time (migration 11): the ones ahead now
        self._partitions.ensure_ahead()

    def _setup_connections(self) -> None:
        self._pool = Pool(self._connect, _close_pg, size=self.pool_size, usable=_pg_usable)
        self._temp_ready: weakref.WeakSet[Any] = weakref.WeakSet()  # connections with the COPY table

    def _after_fork(self) -> None:
        with _inherited_lock:  # never touch the parent's sockets (see Store._after_fork)
            _inherited.extend(self._pool._idle)
        self._setup_connections()
        self._pid = os.getpid()

    def _connect(self) -> Any:
        try:
            return self._psycopg.connect(self._dsn, connect_timeout=self.connect_timeout_s, autocommit=False)
        except self._psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the PostgreSQL store {self.url}: {str(exc).strip()}. "
                "Check the URL (postgresql://user@host:port/database) and that the server is running."
            ) from exc

    @contextlib.contextmanager
    def _connection(self) -> Iterator[tuple[Any, bool]]:
        """A pooled connection, and whether this thread already held it (an enclosing block owns it)."""
        if self._pid != os.getpid():
            self._after_fork()
        nested = self._pool.held() is not None
        with self._pool.connection() as conn:
            yield conn, nested

    @property
    def open_connections(self) -> int:
        """Pooled connections open now."""
        return self._pool.open_connections

    def _lock_for_migration(self, cur: Any) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(727271)")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        pg = self._psycopg
        with self._connection() as (conn, _nested):
            try:
                with conn.transaction():
                    cur = conn.cursor()
                    try:
                        yield _PgCursor(cur)
                    finally:
                        cur.close()
            except pg.Error as exc:
                raise StoreError(f"PostgreSQL store {self.url}: {str(exc).strip()}") from exc
            finally:
                # leave no idle transaction behind on a connection going back to the pool
                if not _nested and not conn.closed and conn.info.transaction_status != pg.pq.TransactionStatus.IDLE:
                    with contextlib.suppress(Exception):
                        conn.rollback()

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._connection() as (conn, nested):
            try:
                with conn.cursor() as cur:
                    cur.execute(_pg_sql(sql), tuple(params))
                    rows = cur.fetchall() if cur.description else []
                if not nested:
                    conn.rollback()  # end the implicit read transaction
                return [tuple(r) for r in rows]
            except self._psycopg.Error as exc:
                if not nested:
                    with contextlib.suppress(Exception):
                        conn.rollback()
                raise StoreError(f"PostgreSQL store {self.url}: {str(exc).strip()}") from exc

    def iter_query(self, sql: str, params: Sequence[Any] = (), batch: int = 50_000) -> Iterator[list[tuple[Any, ...]]]:
        with self._connection() as (conn, nested):
            try:
                with conn.cursor(name=f"ragtrail_iter_{random.randrange(1 << 30)}") as cur:
                    cur.itersize = batch
                    cur.execute(_pg_sql(sql), tuple(params))
                    while True:
                        rows = cur.fetchmany(batch)
                        if not rows:
                            break
                        yield [tuple(r) for r in rows]
                if not nested:
                    conn.rollback()
            except self._psycopg.Error as exc:
                if not nested:
                    with contextlib.suppress(Exception):
                        conn.rollback()
                raise StoreError(f"PostgreSQL store {self.url}: {str(exc).strip()}") from exc
            finally:
                if not nested and not conn.closed:
                    with contextlib.suppress(Exception):
                        conn.rollback()  # a generator closed early leaves no open read transaction

    def _insert_spans(self, rows: Sequence[Sequence[Any]]) -> int:
        """COPY the rows into a session temporary table, then ``INSERT … SELECT … ON CONFLICT DO
        NOTHING`` (re-inserting a span stays a no-op): 1.3-1.6x executemany's rate (benchmarks/store_load).
        Returns how many rows were stored."""
        cols = ", ".join(SPAN_COLUMNS)
        self._partitions.ensure_rows(rows)  # a late or future span's partition, before the insert
        with self._connection() as (conn, _nested):
            try:
                with self.transaction() as cur:
                    raw = cur._cur
                    if conn not in self._temp_ready:
                        raw.execute(
                            "CREATE TEMP TABLE IF NOT EXISTS ragtrail_spans_in (LIKE spans) ON COMMIT DELETE ROWS"
                        )
                    with raw.copy(f"COPY ragtrail_spans_in ({cols}) FROM STDIN") as cp:
                        for r in rows:
                            cp.write_row(r)
                    raw.execute(
                        f"INSERT INTO spans ({cols}) SELECT {cols} FROM ragtrail_spans_in "  # noqa: S608 - fixed names
                        "ON CONFLICT DO NOTHING"  # the key holds start_time_ns (migration 11): see _partitions
                    )
                    stored = int(raw.rowcount if raw.rowcount is not None and raw.rowcount >= 0 else len(rows))
            except BaseException:
                self._temp_ready.discard(conn)  # created again (IF NOT EXISTS) on the next call
                raise
            self._temp_ready.add(conn)
        return stored

    def close(self) -> None:
        """Close the pooled connections (the next call opens new ones)."""
        if self._pid != os.getpid():
            self._after_fork()
        self._pool.close()


def _pg_usable(conn: Any) -> bool:
    return not conn.closed and not getattr(conn, "broken", False)


def _close_pg(conn: Any) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _redact_url(url: str) -> str:
    p = urlparse(url)
    if p.password:
        netloc = f"{p.username}:***@{p.hostname}" + (f":{p.port}" if p.port else "")
        return p._replace(netloc=netloc).geturl()
    return url


_stores: dict[str, Store] = {}
_stores_lock = threading.Lock()


def open_store(url: str | os.PathLike[str] | Store | None = None, *, create: bool = True) -> Store:
    """Open (creating and migrating if needed) the store at ``url``: a path, ``sqlite:///path``, or
    ``postgresql://…``. ``None`` resolves ``$RAGTRAIL_STORE``, else ``$RAGTRAIL_HOME/ragtrail.db``.

    With ``create=False`` (read commands, :class:`~ragtrail.Client`) a SQLite file that does not exist
    is an error ("no store at PATH") instead of a new empty store."""
    if isinstance(url, Store):
        return url
    if url is None:
        url = resolve_store_url(None)
    text = resolve_store_url(url)  # a path or URL given as str/PathLike, else a ConfigError naming it
    if not text.strip():
        raise ConfigError("the store location is empty; pass a path or a postgresql:// URL")
    if "\x00" in text:
        shown = text.replace("\x00", "\\0")
        raise ConfigError(f"the store location {shown!r} contains a NUL character; pass a valid path")
    if text.lower().startswith("file:"):
        raise ConfigError(
            f"file: URLs are not supported as a store ({_redact_url(text)!r}); pass the file path itself "
            "or sqlite:///path/to/file.db"
        )
    low = text.lower()
    if low.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return PostgresStore(text.replace("postgresql+psycopg://", "postgresql://", 1))
    if low.startswith("sqlite:///"):
        text = text[len("sqlite:///") :]
        if not text.startswith("/") and low.startswith("sqlite:////"):
            text = "/" + text
    elif low.startswith("sqlite://"):
        text = text[len("sqlite://") :]
    elif "://" in text:
        scheme = text.split("://", 1)[0]
        raise ConfigError(
            f"unsupported store URL scheme {scheme!r} in {_redact_url(text)!r}; use a file path, "
            "sqlite:///path/to/file.db or postgresql://user@host:port/database"
        )
    if text == ":memory:":
        raise ConfigError("':memory:' cannot be shared between threads; pass a file path (a temp file is fine)")
    if not create:
        path = os.path.abspath(os.path.expanduser(text))
        if not os.path.isfile(path):
            raise StoreError(
                f"no store at {path}; check the path (--store / RAGTRAIL_STORE / RAGTRAIL_HOME), or write to it "
                "first (ragtrail.init(store=...) creates it)"
            )
    return SQLiteStore(text)
