"""Options shared by CLI commands."""

from __future__ import annotations

from typing import Optional

import typer

from ragtrail._text import escape_markup, strip_control

__all__ = ["StoreOpt", "client", "escape_markup", "strip_control"]

StoreOpt = typer.Option(
    None, "--store", "-s", envvar="RAGTRAIL_STORE",
    help="Store path or URL (sqlite path, sqlite:///…, postgresql://…). Default: $RAGTRAIL_HOME/ragtrail.db.",
)  # fmt: skip


def client(store: Optional[str], *, create: bool = False):  # type: ignore[no-untyped-def]
    """A Client on ``store`` (None: the default store). Read commands open an existing store only
    ("no store at PATH"); commands that write pass ``create=True``."""
    from ragtrail._client import Client

    if create:
        from ragtrail.store import open_store

        return Client(open_store(store))
    return Client(store)
