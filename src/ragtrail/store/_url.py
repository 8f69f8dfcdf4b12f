"""Where the store is: an explicit path or URL, else ``$RAGTRAIL_STORE``, else ``$RAGTRAIL_HOME/ragtrail.db``."""

from __future__ import annotations

import os


def resolve_store_url(store: str | os.PathLike[str] | None = None) -> str:
    """The store location to open: ``store`` itself when given, else ``$RAGTRAIL_STORE``, else
    ``$RAGTRAIL_HOME/ragtrail.db`` (``RAGTRAIL_HOME`` defaults to ``~/.ragtrail``)."""
    if store is not None:
        text = os.fspath(store) if isinstance(store, (str, os.PathLike)) else None
        if not isinstance(text, str):
            from ragtrail._exceptions import ConfigError

            raise ConfigError(
                f"store={store!r} ({type(store).__name__}) is not a store location; pass a path (str or "
                "pathlib.Path), a sqlite:///… or postgresql://… URL, or a ragtrail Store"
            )
        return text
    env = os.environ.get("RAGTRAIL_STORE")
    if env:
        return env
    home = os.environ.get("RAGTRAIL_HOME") or os.path.join(os.path.expanduser("~"), ".ragtrail")
    return os.path.join(home, "ragtrail.db")
