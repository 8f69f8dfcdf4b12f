"""The store a library API works on (evals, artifacts, prompts): the one passed in, else the one ``ragtrail.init()`` opened,
else the default location (``$RAGTRAIL_STORE`` / ``$RAGTRAIL_HOME``)."""

from __future__ import annotations

from typing import Any

from ragtrail.store import Store, open_store


def store_of(store: Any = None) -> Store:
    """``store`` as a :class:`~ragtrail.store.Store` (a Store, a path, a URL, or None: see the module doc)."""
    if isinstance(store, Store):
        return store
    if store is None:
        from ragtrail.tracing import get_config

        cfg = get_config()
        if cfg is not None and cfg.store is not None:
            return cfg.store  # type: ignore[no-any-return]
    return open_store(store)
