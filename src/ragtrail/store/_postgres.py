"""The PostgreSQL store: a connection pool, spans partitioned by time (``_partitions.py``)."""

from __future__ import annotations

import contextlib
import os
import random
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from ragtrail._exceptions import StoreError
from ragtrail.store._base import (
    SPAN_COLUMNS,
    Store,
    _inherited,
    _inherited_lock,
    _redact_url,
)
from ragtrail.store._partitions import Partitions
from ragtrail.store._pool import Pool


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
