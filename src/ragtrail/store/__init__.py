"""The embedded store (SQLite by default, PostgreSQL by URL): schema migrations and ALL SQL.

The eval repository (runs, results, datasets, judge cache) is :mod:`ragtrail.store._evals`; aliases
(of runs, and of any other kind of thing) are :mod:`ragtrail.store._aliases`.
"""

from ragtrail.store._partitions import list_partitions, set_partition_interval
from ragtrail.store._retention import PruneResult, prune
from ragtrail.store._store import SPAN_COLUMNS, PostgresStore, SQLiteStore, Store, open_store, span_columns_sql
from ragtrail.store._url import resolve_store_url

__all__ = [
    "SPAN_COLUMNS",
    "PostgresStore",
    "PruneResult",
    "SQLiteStore",
    "Store",
    "list_partitions",
    "open_store",
    "prune",
    "resolve_store_url",
    "set_partition_interval",
    "span_columns_sql",
]
