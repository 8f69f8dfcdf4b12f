"""The store's shared part: the span columns and :class:`Store`, the base of the SQLite and PostgreSQL
stores (``_sqlite.py``, ``_postgres.py``; ``_store.py`` opens them). The same SQL runs on both: write it with ``?``
placeholders; the PostgreSQL store rewrites them."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlparse

from ragtrail._exceptions import SchemaVersionError
from ragtrail._log import warn_once
from ragtrail.store._migrations import LATEST, MIGRATIONS
from ragtrail.store._storable import _is_transient, _reason, _row_ok, cached_tokens_of_json, reduced_row, storable_row

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

_LOCKED_MARKERS = ("database is locked", "database table is locked", "busy")


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and any(m in str(exc).lower() for m in _LOCKED_MARKERS)


def _redact_url(url: str) -> str:
    p = urlparse(url)
    if p.password:
        netloc = f"{p.username}:***@{p.hostname}" + (f":{p.port}" if p.port else "")
        return p._replace(netloc=netloc).geturl()
    return url
