"""The embedded store (SQLite by default, PostgreSQL by URL): schema migrations and queries."""

from ragtrail.store._retention import PruneResult, prune
from ragtrail.store._store import SPAN_COLUMNS, PostgresStore, SQLiteStore, Store, open_store

__all__ = ["SPAN_COLUMNS", "PostgresStore", "PruneResult", "SQLiteStore", "Store", "open_store", "prune"]
