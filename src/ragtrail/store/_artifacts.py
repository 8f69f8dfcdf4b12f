"""Every SQL statement of artifacts, prompts and their aliases (tables of migration 7).

Tables: ``artifacts`` (name, type), ``artifact_versions`` (one row per content digest of a name, with
its manifest), ``artifact_usage`` (run ↔ artifact version edges: ``input`` = the run used it,
``output`` = the run produced it) and ``prompts`` (one row per content digest of a prompt name).

Aliases of artifacts and prompts live in the same ``aliases`` / ``alias_history`` tables as the aliases
of runs, under a namespaced name (``artifact:<name>``, ``prompt:<name>``); the target column holds the
version's content digest. :func:`move_alias` is the one compare-and-swap move, written in the style of
``ragtrail.evals._gates.move_alias`` and isolated here so that a generic alias repository can replace it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from typing import Any

from ragtrail._exceptions import ConfigError, StoreError
from ragtrail.store._store import Store

ARTIFACT_NS = "artifact:"
"""Prefix of an artifact's name in the ``aliases`` table."""
PROMPT_NS = "prompt:"
"""Prefix of a prompt's name in the ``aliases`` table."""

_VERSION_COLS = (
    "name, version, digest, manifest, n_files, size_bytes, created_at, created_by, run_id, description, metadata"
)
_PROMPT_COLS = "name, version, digest, format, template, model, params, created_at, created_by"


class AliasMovedError(StoreError):
    """A compare-and-swap alias move found the alias pointing somewhere other than expected."""

    def __init__(self, name: str, alias: str, current: str | None, expected: str | None) -> None:
        super().__init__(f"{name}:{alias} points at {current!r}, not {expected!r} as expected; read it again and retry")
        self.current = current
        self.expected = expected


def _lock_key(*parts: str) -> int:
    h = hashlib.sha256("\0".join(("ragtrail", *parts)).encode()).digest()
    return int.from_bytes(h[:8], "big", signed=True)


def _lock(store: Store, cur: Any, *parts: str) -> None:
    """Serialise writers of one key: PostgreSQL takes a transaction advisory lock; SQLite's
    ``BEGIN IMMEDIATE`` already serialises every writer."""
    if store.kind == "postgresql":
        cur.execute("SELECT pg_advisory_xact_lock(?)", (_lock_key(*parts),))


# ------------------------------------------------------------------------------------ artifacts
def _version_dict(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "name": row[0], "version": int(row[1]), "digest": row[2], "manifest": json.loads(row[3]),
        "n_files": int(row[4]), "size_bytes": int(row[5]), "created_at": float(row[6]), "created_by": row[7],
        "run_id": row[8], "description": row[9], "metadata": json.loads(row[10]) if row[10] else {},
    }  # fmt: skip


def artifact_type(store: Store, name: str) -> str | None:
    """The type an artifact name was first logged with (None: never logged)."""
    rows = store.query("SELECT type FROM artifacts WHERE name = ?", (name,))
    return str(rows[0][0]) if rows else None


def insert_artifact_version(
    store: Store,
    name: str,
    type_: str,
    digest: str,
    manifest: str,
    *,
    n_files: int,
    size_bytes: int,
    created_by: str | None,
    run_id: str | None,
    description: str | None,
    metadata: str | None,
) -> tuple[int, bool]:
    """Add a version of ``name`` with this digest unless one exists; returns ``(version, created)``.

    One transaction per call, serialised per name (PostgreSQL advisory lock, SQLite's write lock), so
    concurrent loggers get consecutive version numbers and identical content gets one version.
    """
    with store.transaction() as cur:
        _lock(store, cur, "artifact", name)
        cur.execute("SELECT version FROM artifact_versions WHERE name = ? AND digest = ?", (name, digest))
        row = cur.fetchone()
        if row is not None:
            return int(row[0]), False
        now = time.time()
        cur.execute(
            "INSERT INTO artifacts (name, type, created_at, description) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING",
            (name, type_, now, description),
        )
        cur.execute("SELECT MAX(version) FROM artifact_versions WHERE name = ?", (name,))
        row = cur.fetchone()
        version = int(row[0] or 0) + 1 if row else 1
        cur.execute(
            f"INSERT INTO artifact_versions ({_VERSION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed names
            (name, version, digest, manifest, n_files, size_bytes, now, created_by, run_id, description, metadata),
        )
    return version, True


def _one_version(
    store: Store, table: str, cols: str, name: str, version: int | None, digest: str | None
) -> Sequence[Any] | None:
    """The row of one version of ``name`` in ``table``: by number, by digest, or the newest."""
    sql = f"SELECT {cols} FROM {table} WHERE name = ?"  # noqa: S608 - fixed names
    params: tuple[Any, ...] = (name,)
    if version is not None:
        sql, params = sql + " AND version = ?", (name, int(version))
    elif digest is not None:
        sql, params = sql + " AND digest = ?", (name, digest)
    else:
        sql += " ORDER BY version DESC LIMIT 1"
    rows = store.query(sql, params)
    return rows[0] if rows else None


def artifact_version(
    store: Store, name: str, *, version: int | None = None, digest: str | None = None
) -> dict[str, Any] | None:
    """One version by number or digest, or the newest when both are None."""
    row = _one_version(store, "artifact_versions", _VERSION_COLS, name, version, digest)
    return _version_dict(row) if row is not None else None


def artifact_versions(store: Store, name: str) -> list[dict[str, Any]]:
    """Every version of ``name``, oldest first."""
    rows = store.query(
        f"SELECT {_VERSION_COLS} FROM artifact_versions WHERE name = ? ORDER BY version",  # noqa: S608
        (name,),
    )
    return [_version_dict(r) for r in rows]


def list_artifacts(store: Store, type_: str | None = None) -> list[dict[str, Any]]:
    """One dict per artifact name: name, type, n_versions, latest (version number), size_bytes of the
    latest, updated_at."""
    sql = (
        "SELECT a.name, a.type, COUNT(v.version), MAX(v.version), MAX(v.created_at) FROM artifacts a "
        "JOIN artifact_versions v ON v.name = a.name"
    )
    params: tuple[Any, ...] = ()
    if type_:
        sql += " WHERE a.type = ?"
        params = (type_,)
    rows = store.query(sql + " GROUP BY a.name, a.type ORDER BY a.name", params)
    return [
        {"name": r[0], "type": r[1], "n_versions": int(r[2]), "latest": int(r[3]), "updated_at": float(r[4])}
        for r in rows
    ]


def record_usage(store: Store, run_id: str, name: str, version: int, direction: str) -> None:
    """Record that run ``run_id`` used (``input``) or produced (``output``) ``name`` version ``version``."""
    if direction not in ("input", "output"):
        raise ValueError(f"direction must be 'input' or 'output', not {direction!r}")
    with store.transaction() as cur:
        cur.execute(
            "INSERT INTO artifact_usage (run_id, name, version, direction, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (run_id, name, version, direction) DO NOTHING",
            (run_id, name, int(version), direction, time.time()),
        )


def usage_of_artifact(store: Store, name: str, version: int) -> list[tuple[str, str]]:
    """``(run_id, direction)`` of every run that used or produced this version, oldest first."""
    rows = store.query(
        "SELECT run_id, direction FROM artifact_usage WHERE name = ? AND version = ? ORDER BY created_at, run_id",
        (name, int(version)),
    )
    return [(str(r[0]), str(r[1])) for r in rows]


def usage_of_run(store: Store, run_id: str) -> list[tuple[str, int, str]]:
    """``(name, version, direction)`` of every artifact version run ``run_id`` used or produced."""
    rows = store.query(
        "SELECT name, version, direction FROM artifact_usage WHERE run_id = ? ORDER BY direction, name, version",
        (run_id,),
    )
    return [(str(r[0]), int(r[1]), str(r[2])) for r in rows]


def run_id_for(store: Store, ref: str) -> str | None:
    """The run id of a run reference: a run id, ``name:vN``, ``name:latest``, ``name:<alias>`` or a bare
    evaluation name (its newest run); None when nothing matches."""
    rows = store.query("SELECT run_id FROM runs WHERE run_id = ?", (ref,))
    if not rows:
        name, _, tag = ref.partition(":")
        if tag.startswith("v") and tag[1:].isdigit():
            rows = store.query("SELECT run_id FROM runs WHERE name = ? AND version = ?", (name, int(tag[1:])))
        elif tag in ("", "latest"):
            rows = store.query("SELECT run_id FROM runs WHERE name = ? ORDER BY version DESC LIMIT 1", (name,))
        else:
            rows = store.query("SELECT run_id FROM aliases WHERE name = ? AND alias = ?", (name, tag))
    return str(rows[0][0]) if rows else None


def run_identity(store: Store, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{run_id: {"ref", "dataset_name", "dataset_version"}}`` for the runs that exist."""
    out: dict[str, dict[str, Any]] = {}
    for rid in dict.fromkeys(run_ids):
        rows = store.query("SELECT name, version, dataset_name, dataset_version FROM runs WHERE run_id = ?", (rid,))
        if rows:
            n, v, dn, dv = rows[0]
            out[rid] = {"ref": f"{n}:v{int(v)}", "dataset_name": dn, "dataset_version": dv}
    return out


# -------------------------------------------------------------------------------------- prompts
def _prompt_dict(row: Sequence[Any]) -> dict[str, Any]:
    return {
        "name": row[0], "version": int(row[1]), "digest": row[2], "format": row[3],
        "template": json.loads(row[4]), "model": row[5], "params": json.loads(row[6]) if row[6] else {},
        "created_at": float(row[7]), "created_by": row[8],
    }  # fmt: skip


def insert_prompt_version(
    store: Store,
    name: str,
    digest: str,
    format_: str,
    template: str,
    *,
    model: str | None,
    params: str,
    created_by: str | None,
) -> tuple[int, bool]:
    """Add a prompt version unless one with this digest exists; returns ``(version, created)``."""
    with store.transaction() as cur:
        _lock(store, cur, "prompt", name)
        cur.execute("SELECT version FROM prompts WHERE name = ? AND digest = ?", (name, digest))
        row = cur.fetchone()
        if row is not None:
            return int(row[0]), False
        cur.execute("SELECT MAX(version) FROM prompts WHERE name = ?", (name,))
        row = cur.fetchone()
        version = int(row[0] or 0) + 1 if row else 1
        cur.execute(
            f"INSERT INTO prompts ({_PROMPT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608 - fixed names
            (name, version, digest, format_, template, model, params, time.time(), created_by),
        )
    return version, True


def prompt_version(
    store: Store, name: str, *, version: int | None = None, digest: str | None = None
) -> dict[str, Any] | None:
    """One prompt version by number or digest, or the newest when both are None."""
    row = _one_version(store, "prompts", _PROMPT_COLS, name, version, digest)
    return _prompt_dict(row) if row is not None else None


def prompt_versions(store: Store, name: str) -> list[dict[str, Any]]:
    """Every version of prompt ``name``, oldest first."""
    rows = store.query(f"SELECT {_PROMPT_COLS} FROM prompts WHERE name = ? ORDER BY version", (name,))  # noqa: S608
    return [_prompt_dict(r) for r in rows]


def list_prompts(store: Store) -> list[dict[str, Any]]:
    """One dict per prompt name: name, n_versions, latest, updated_at."""
    rows = store.query("SELECT name, COUNT(*), MAX(version), MAX(created_at) FROM prompts GROUP BY name ORDER BY name")
    return [{"name": r[0], "n_versions": int(r[1]), "latest": int(r[2]), "updated_at": float(r[3])} for r in rows]


# --------------------------------------------------------------------------------- references
_VERSION_TAG = re.compile(r"^v(\d+)$")
_KINDS = {
    "artifact": ("an artifact", ARTIFACT_NS, "`ragtrail artifacts list` shows them"),
    "prompt": ("a prompt", PROMPT_NS, "push one with ragtrail.prompts.push"),
}


class VersionNotFoundError(StoreError):
    """No version of an artifact or prompt matches a reference (the message lists what there is)."""


def resolve_version(store: Store, ref: Any, kind: str) -> dict[str, Any]:
    """The row of the artifact or prompt version (``kind``) that ``ref`` names: ``name``, ``name:vN``,
    ``name:latest``, ``name:<alias>``, or a value with such a ``.ref``. A reference that is not a string
    is a ConfigError; an unknown one a :class:`VersionNotFoundError` that lists the versions and aliases."""
    what, ns, hint = _KINDS[kind]
    ref = ref if isinstance(ref, str) else getattr(ref, "ref", ref)
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{what} reference is 'name', 'name:vN' or 'name:alias', not {ref!r}")
    name, _, tag = ref.strip().partition(":")
    tag = tag or "latest"
    get = artifact_version if kind == "artifact" else prompt_version
    row = None
    if m := _VERSION_TAG.match(tag):
        row = get(store, name, version=int(m.group(1)))
    elif tag == "latest":
        row = get(store, name)
    elif (target := current_alias(store, ns + name, tag)) is not None:
        row = get(store, name, digest=target)
    if row is not None:
        return row
    versions = artifact_versions(store, name) if kind == "artifact" else prompt_versions(store, name)
    if not versions:
        raise VersionNotFoundError(f"no {kind} named {name!r} in the store {store.url}; {hint}")
    listed = ", ".join(f"v{v['version']}" for v in versions)
    aliases = ", ".join(["latest", *sorted(aliases_of(store, ns + name))])
    raise VersionNotFoundError(f"no {kind} version {ref!r}: {name} has versions {listed} and aliases {aliases}")


# -------------------------------------------------------------------------------------- aliases
_ANY: Any = object()


def current_alias(store: Store, name: str, alias: str) -> str | None:
    """The target ``name:alias`` points at (None when unset). ``name`` is namespaced (``artifact:x``)."""
    rows = store.query("SELECT run_id FROM aliases WHERE name = ? AND alias = ?", (name, alias))
    return str(rows[0][0]) if rows else None


def aliases_of(store: Store, name: str) -> dict[str, str]:
    """``{alias: target}`` of a namespaced name."""
    return {str(a): str(t) for a, t in store.query("SELECT alias, run_id FROM aliases WHERE name = ?", (name,))}


def move_alias(
    store: Store, name: str, alias: str, target: str, *, by: str | None = None, expected: Any = _ANY
) -> str | None:
    """Point ``name:alias`` at ``target`` (``name`` namespaced: ``artifact:x`` / ``prompt:x``); returns the
    previous target. With ``expected`` (a target or None for "unset") the move happens only if the alias
    still points there, else :class:`AliasMovedError` (compare-and-swap).

    The one alias mechanism of runs, artifacts and prompts: :func:`ragtrail.store._aliases.move_alias`
    (one transaction, history row, per-alias lock)."""
    from ragtrail._exceptions import AliasConflictError
    from ragtrail.store import _aliases

    kind, _, bare = name.partition(":")
    try:
        return _aliases.move_alias(
            store, bare, alias, target, kind=kind, by=by, expected=_aliases.UNSET if expected is _ANY else expected
        )
    except AliasConflictError:
        raise AliasMovedError(name, alias, current_alias(store, name, alias), expected) from None


def alias_history(store: Store, name: str, alias: str | None = None) -> list[dict[str, Any]]:
    """Moves of a namespaced name's aliases (one alias or all), oldest first: alias, target, previous,
    set_at, set_by."""
    sql = "SELECT alias, run_id, previous_run_id, set_at, set_by FROM alias_history WHERE name = ?"
    params: list[Any] = [name]
    if alias:
        sql += " AND alias = ?"
        params.append(alias)
    rows = store.query(sql + " ORDER BY set_at", params)
    return [dict(zip(("alias", "target", "previous", "set_at", "set_by"), r, strict=True)) for r in rows]


__all__ = [
    "ARTIFACT_NS",
    "PROMPT_NS",
    "AliasMovedError",
    "VersionNotFoundError",
    "alias_history",
    "aliases_of",
    "artifact_type",
    "artifact_version",
    "artifact_versions",
    "current_alias",
    "insert_artifact_version",
    "insert_prompt_version",
    "list_artifacts",
    "list_prompts",
    "move_alias",
    "prompt_version",
    "prompt_versions",
    "record_usage",
    "resolve_version",
    "run_id_for",
    "run_identity",
    "usage_of_artifact",
    "usage_of_run",
]
