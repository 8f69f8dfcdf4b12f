"""Kept for code that adds ``compare``/``alias``/``promote`` to its own Typer app with :func:`register`;
the commands live in :mod:`ragtrail.cli._runs` (the ``runs`` group)."""

from __future__ import annotations

import typer

from ragtrail.cli._runs import alias_cmd, compare_cmd, promote_cmd


def register(runs_app: typer.Typer) -> None:
    """Add ``compare``, ``alias`` and ``promote`` to ``runs_app``."""
    runs_app.command("compare")(compare_cmd)
    runs_app.command("alias")(alias_cmd)
    runs_app.command("promote")(promote_cmd)
