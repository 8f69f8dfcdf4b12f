"""Where the store is: an explicit path or URL, else ``$RAGTRAIL_STORE``, else ``$RAGTRAIL_HOME/ragtrail.db``."""

from __future__ import annotations

import os


def resolve_store_url(store: str | os.PathLike[str] | None = None) -> str:
    """The store location to open: ``store`` itself when given, else ``$RAGTRAIL_STORE``, else
    ``$RAGTRAIL_HOME/ragtrail.db`` (``RAGTRAIL_HOME`` defaults to ``~/.ragtrail``)."""
    if store is not None:
        return os.fspath(store)
    env = os.environ.get("RAGTRAIL_STORE")
    if env:
        return env
    home = os.environ.get("RAGTRAIL_HOME") or os.path.join(os.path.expanduser("~"), ".ragtrail")
    return os.path.join(home, "ragtrail.db")
