"""Aliases (``production``, ``staging``…) that point at a stored thing, moved atomically with history.

One table serves every kind of thing: the ``name`` column holds the evaluation name for runs
(``kind="run"``) and ``<kind>:<name>`` for any other kind (``artifact:my-prompt``); the ``run_id``
column holds the id of what the alias points at. Every statement on ``aliases`` and
``alias_history`` lives here.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from typing import Any

from ragtrail._exceptions import AliasConflictError, ConfigError
from ragtrail.store._store import Store

__all__ = [
    "RESERVED_ALIASES",
    "UNSET",
    "alias_history",
    "alias_key",
    "alias_map",
    "alias_target",
    "aliases_of",
    "aliases_of_target",
    "move_alias",
    "validate_alias",
]

RESERVED_ALIASES: tuple[str, ...] = ("latest",)
"""Aliases nobody may set: ``latest`` always means the newest version."""

UNSET: Any = object()
"""``move_alias(expected=UNSET)`` (the default) moves unconditionally."""

_VERSION_TAG = re.compile(r"^v\d+$")


def validate_alias(alias: Any) -> str:
    """``alias`` if it may be set, else :class:`~ragtrail.ConfigError`: non-empty, no ``:``, not ``vN``
    (a version) and not ``latest`` (always the newest)."""
    if (
        not isinstance(alias, str)
        or not alias.strip()
        or ":" in alias
        or _VERSION_TAG.match(alias)
        or alias in RESERVED_ALIASES
    ):
        raise ConfigError(
            f"alias {alias!r} is not allowed: it must be non-empty, without ':', not 'vN' and not 'latest'"
        )
    return alias


def alias_key(name: str, kind: str = "run") -> str:
    """The value of the ``name`` column: the evaluation name for runs, ``<kind>:<name>`` otherwise."""
    return name if kind == "run" else f"{kind}:{name}"


def _lock_key(key: str, alias: str) -> int:
    h = hashlib.sha256(f"ragtrail-alias\0{key}\0{alias}".encode()).digest()
    return int.from_bytes(h[:8], "big", signed=True)


def alias_target(store: Store, name: str, alias: str, *, kind: str = "run") -> str | None:
    """The id ``name:alias`` points at (None when unset)."""
    rows = store.query("SELECT run_id FROM aliases WHERE name = ? AND alias = ?", (alias_key(name, kind), alias))
    return str(rows[0][0]) if rows else None


def move_alias(
    store: Store,
    name: str,
    alias: str,
    target: str,
    *,
    kind: str = "run",
    by: str | None = None,
    expected: Any = UNSET,
    label: str | None = None,
) -> str | None:
    """Point ``alias`` of ``name`` (of ``kind``) at ``target`` atomically; returns the previous target.

    One transaction reads the alias, updates it and appends the history row (who, when, from which
    target); on PostgreSQL it first takes a transaction-scoped advisory lock on (name, alias), on
    SQLite ``BEGIN IMMEDIATE`` serialises writers. With ``expected`` (an id, or None for "unset") the
    move happens only if the alias still points there, else :class:`~ragtrail.AliasConflictError`
    (compare-and-swap). ``by`` defaults to ``$RAGTRAIL_USER`` / ``$USER``; ``label`` names the target
    in the conflict message.
    """
    validate_alias(alias)
    key = alias_key(name, kind)
    who = by or os.environ.get("RAGTRAIL_USER") or os.environ.get("USER") or os.environ.get("USERNAME")
    with store.transaction() as cur:
        if store.kind == "postgresql":
            cur.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key(key, alias),))
        cur.execute("SELECT run_id FROM aliases WHERE name = ? AND alias = ?", (key, alias))
        row = cur.fetchone()
        previous = row[0] if row else None
        if expected is not UNSET and previous != expected:
            raise AliasConflictError(
                f"{name}:{alias} moved to {previous!r} while promoting {label or target} (expected {expected!r}); "
                "re-check the gates against the new holder"
            )
        now = time.time()
        if previous is None:
            cur.execute(
                "INSERT INTO aliases (name, alias, run_id, set_at, set_by) VALUES (?, ?, ?, ?, ?)",
                (key, alias, target, now, who),
            )
        else:
            cur.execute(
                "UPDATE aliases SET run_id = ?, set_at = ?, set_by = ? WHERE name = ? AND alias = ?",
                (target, now, who, key, alias),
            )
        cur.execute(
            "INSERT INTO alias_history (name, alias, run_id, previous_run_id, set_at, set_by) VALUES (?, ?, ?, ?, ?, ?)",
            (key, alias, target, previous, now, who),
        )
    return previous


def alias_history(store: Store, name: str, alias: str | None = None, *, kind: str = "run") -> list[dict[str, Any]]:
    """Moves of ``name``'s aliases (one alias or all), oldest first: name, alias, run_id (the target),
    previous_run_id, set_at, set_by. ``name`` is given back as passed (without the kind prefix)."""
    sql = "SELECT alias, run_id, previous_run_id, set_at, set_by FROM alias_history WHERE name = ?"
    params: list[Any] = [alias_key(name, kind)]
    if alias:
        sql += " AND alias = ?"
        params.append(alias)
    rows = store.query(sql + " ORDER BY set_at", params)
    keys = ("alias", "run_id", "previous_run_id", "set_at", "set_by")
    return [{"name": name, **dict(zip(keys, r, strict=True))} for r in rows]


def aliases_of(store: Store, name: str, *, kind: str = "run") -> dict[str, str]:
    """``{alias: target}`` of every alias set on ``name``."""
    rows = store.query("SELECT alias, run_id FROM aliases WHERE name = ? ORDER BY alias", (alias_key(name, kind),))
    return {str(a): str(t) for a, t in rows}


def aliases_of_target(store: Store, target: str) -> list[str]:
    """The aliases that point at ``target`` (an id is unique across kinds), sorted."""
    return [r[0] for r in store.query("SELECT alias FROM aliases WHERE run_id = ? ORDER BY alias", (target,))]


def alias_map(store: Store, *, kind: str = "run") -> dict[str, list[str]]:
    """``{target: [alias, …]}`` over every alias of ``kind``."""
    if kind == "run":
        rows = store.query("SELECT run_id, alias FROM aliases WHERE name NOT LIKE ? ORDER BY alias", ("%:%",))
    else:
        rows = store.query("SELECT run_id, alias FROM aliases WHERE name LIKE ? ORDER BY alias", (f"{kind}:%",))
    out: dict[str, list[str]] = {}
    for target, a in rows:
        out.setdefault(str(target), []).append(str(a))
    return out
