"""The store: SQLite by default (a file, WAL, one writer per process), PostgreSQL by URL.

The same SQL runs on both: write it with ``?`` placeholders; the PostgreSQL store rewrites them.
Every public method raises :class:`~ragtrail.StoreError` (with the store's location and what to do),
never a driver's own exception.
"""

from __future__ import annotations

import os
import threading

from ragtrail._exceptions import ConfigError, StoreError
from ragtrail.store._base import (
    SPAN_COLUMNS,
    Store,
    _redact_url,
    span_columns_sql,
)
from ragtrail.store._postgres import PostgresStore
from ragtrail.store._sqlite import SQLiteStore
from ragtrail.store._url import resolve_store_url

__all__ = ["SPAN_COLUMNS", "PostgresStore", "SQLiteStore", "Store", "open_store", "span_columns_sql"]

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
