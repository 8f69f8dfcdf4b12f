"""Artifacts: named, typed sets of files, versioned by content, with aliases and lineage to runs.

An artifact version is identified by the hash of its manifest (each file's path, size and sha256), so
logging the same content again makes no new version; version numbers (``v1``, ``v2``…) count the
distinct contents of a name. Files are stored once per content hash (:mod:`ragtrail.artifacts._blobs`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragtrail._exceptions import ArtifactError, ConfigError
from ragtrail._store_of import store_of as _store
from ragtrail.artifacts._blobs import Blobs, hash_file, open_blobs
from ragtrail.store import _artifacts as db

if TYPE_CHECKING:
    from ragtrail.store import Store

_NAME = re.compile(r"^[A-Za-z0-9_.\-/]+$")
_VERSION = re.compile(r"^v(\d+)$")
_RESERVED = ("latest",)
_ANY: Any = db._ANY  # the store's "no expectation" marker


def _who(by: str | None) -> str | None:
    return by or os.environ.get("RAGTRAIL_USER") or os.environ.get("USER") or os.environ.get("USERNAME")


def _check_name(name: Any, what: str = "artifact") -> str:
    if not isinstance(name, str) or not _NAME.match(name) or name.startswith(("/", ".")):
        raise ConfigError(
            f"{what} name {name!r} is not allowed: use letters, digits and _ . - / (no ':' and no leading '/' or '.')"
        )
    return name


def check_alias(alias: Any) -> str:
    """Raise :class:`ConfigError` unless ``alias`` is a settable alias name."""
    if not isinstance(alias, str) or not alias.strip() or ":" in alias or _VERSION.match(alias) or alias in _RESERVED:
        raise ConfigError(
            f"alias {alias!r} is not allowed: it must be non-empty, without ':', not 'vN' and not 'latest'"
        )
    return alias


def _clean_path(path: str, where: str) -> str:
    """A manifest path: relative, '/'-separated, without '.' or '..' parts."""
    p = str(path).replace(os.sep, "/")
    parts = [x for x in p.split("/") if x not in ("", ".")]
    if not parts or p.startswith("/") or ".." in parts or any("\0" in x for x in parts):
        raise ConfigError(f"{where}: {path!r} is not a relative path inside the artifact (no '..', not absolute)")
    return "/".join(parts)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def manifest_digest(manifest: list[dict[str, Any]]) -> str:
    """The version digest: sha256 of the canonical JSON of the manifest entries sorted by path."""
    entries = sorted(({"path": e["path"], "size": int(e["size"]), "sha256": e["sha256"]} for e in manifest),
                     key=lambda e: e["path"])  # fmt: skip
    return hashlib.sha256(_canonical(entries).encode()).hexdigest()


# --------------------------------------------------------------------------------------- builder
class Artifact:
    """Files to log as one version of artifact ``name`` (of kind ``type``: ``config``, ``index``,
    ``model``, ``dataset``…).

    >>> art = Artifact("index-config", "config")
    >>> art.add({"chunk_size": 512, "overlap": 64}, "chunking.json")
    >>> art.paths
    ['chunking.json']

    Log it with :func:`log_artifact` (or ``client.log_artifact`` / ``run.log_artifact``).
    """

    def __init__(
        self,
        name: str,
        type: str,  # noqa: A002 - the public name (W&B and MLflow call it type too)
        *,
        description: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = _check_name(name)
        if not isinstance(type, str) or not type.strip():
            raise ConfigError(f"artifact {name!r}: type must be a non-empty string such as 'config' or 'index'")
        self.type = type
        self.description = description
        self.metadata = dict(metadata or {})
        self._entries: dict[str, tuple[str, Any]] = {}

    @property
    def paths(self) -> list[str]:
        """The paths inside the artifact, sorted."""
        return sorted(self._entries)

    def _put(self, path: str, entry: tuple[str, Any], where: str) -> None:
        p = _clean_path(path, where)
        if p in self._entries:
            raise ConfigError(f"{where}: artifact {self.name!r} already has a file {p!r}; give another name")
        self._entries[p] = entry

    def add_file(self, path: str | os.PathLike[str], name: str | None = None) -> Artifact:
        """Add the file at ``path`` (as ``name``, default its base name). Read only when logged."""
        src = os.path.abspath(os.fspath(path))
        if not os.path.isfile(src):
            raise ConfigError(f"add_file: {src!r} is not a file")
        self._put(name if name is not None else os.path.basename(src), ("file", src), f"add_file({path!r})")
        return self

    def add_dir(self, path: str | os.PathLike[str], prefix: str = "") -> Artifact:
        """Add every file under the directory ``path`` (recursively, symlinked directories not followed),
        at its path relative to ``path`` (under ``prefix``)."""
        root = os.path.abspath(os.fspath(path))
        if not os.path.isdir(root):
            raise ConfigError(f"add_dir: {root!r} is not a directory")
        n = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                if not os.path.isfile(full):
                    continue
                rel = os.path.relpath(full, root)
                self._put(f"{prefix}/{rel}" if prefix else rel, ("file", full), f"add_dir({path!r})")
                n += 1
        if n == 0:
            raise ConfigError(f"add_dir: the directory {root!r} has no files")
        return self

    def add(self, obj: Any, name: str) -> Artifact:
        """Add ``obj`` serialised as ``name``: YAML when the name ends in .yaml/.yml, else JSON (sorted keys)."""
        try:
            if name.lower().endswith((".yaml", ".yml")):
                import yaml

                text = yaml.safe_dump(obj, sort_keys=True, allow_unicode=True)
            else:
                text = json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=2) + "\n"
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"add(obj, {name!r}): the object is not JSON/YAML serialisable: {exc}") from exc
        except Exception as exc:  # yaml.representer.RepresenterError
            raise ConfigError(f"add(obj, {name!r}): the object is not YAML serialisable: {exc}") from exc
        self._put(name, ("bytes", text.encode()), f"add(obj, {name!r})")
        return self

    def __repr__(self) -> str:
        return f"Artifact({self.name!r}, {self.type!r}, files={len(self._entries)})"


# --------------------------------------------------------------------------------- stored versions
@dataclass
class ArtifactVersion:
    """One stored version: ``ref`` (``name:vN``), ``digest``, ``manifest``, ``aliases``; ``download()``."""

    name: str
    type: str
    version: int
    digest: str
    manifest: list[dict[str, Any]]
    size_bytes: int
    created_at: float
    created_by: str | None = None
    run_id: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    created: bool = True
    store: Any = field(default=None, repr=False, compare=False)
    blobs: Any = field(default=None, repr=False, compare=False)

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    @property
    def files(self) -> list[str]:
        return [e["path"] for e in self.manifest]

    def __str__(self) -> str:
        return self.ref

    def _blobs(self) -> Blobs:
        if self.blobs is None:
            self.blobs = open_blobs(None, self.store)
        return self.blobs  # type: ignore[no-any-return]

    def _entry(self, path: str) -> dict[str, Any]:
        for e in self.manifest:
            if e["path"] == path:
                return e
        raise ArtifactError(f"{self.ref} has no file {path!r}; it has {', '.join(self.files[:20])}")

    def _stream(self, entry: dict[str, Any], sink: Any) -> None:
        """Copy one file's blob into ``sink`` (a callable taking chunks), verifying size and sha256."""
        blobs = self._blobs()
        loc = blobs.location(entry["sha256"])
        h = hashlib.sha256()
        size = 0
        try:
            for chunk in blobs.iter_chunks(entry["sha256"]):
                h.update(chunk)
                size += len(chunk)
                sink(chunk)
        except FileNotFoundError as exc:
            raise ArtifactError(
                f"{self.ref}: the file {entry['path']!r} is missing from the artifact store (blob sha256 "
                f"{entry['sha256'][:12]}… expected at {loc}). Log the artifact again from its source files "
                "(identical content restores the blob) or point RAGTRAIL_ARTIFACTS at the blobs' location."
            ) from exc
        if h.hexdigest() != entry["sha256"] or size != int(entry["size"]):
            raise ArtifactError(
                f"{self.ref}: the file {entry['path']!r} is corrupted in the artifact store ({loc}): expected "
                f"{entry['size']} bytes with sha256 {entry['sha256'][:12]}…, found {size} bytes with sha256 "
                f"{h.hexdigest()[:12]}…. Log the artifact again from its source files to repair it."
            )

    def read_bytes(self, path: str) -> bytes:
        """One (small) file's verified content."""
        parts: list[bytes] = []
        self._stream(self._entry(path), parts.append)
        return b"".join(parts)

    def load(self, path: str) -> Any:
        """A JSON or YAML file of this version, parsed (the inverse of ``Artifact.add``)."""
        data = self.read_bytes(path)
        if path.lower().endswith((".yaml", ".yml")):
            import yaml

            return yaml.safe_load(data)
        return json.loads(data)

    def verify(self) -> None:
        """Re-hash every blob of this version (streamed); raise :class:`ArtifactError` naming each bad file."""
        problems = []
        for e in self.manifest:
            try:
                self._stream(e, lambda _chunk: None)
            except ArtifactError as exc:
                problems.append(str(exc))
        if problems:
            raise ArtifactError("\n".join(problems))

    def download(self, root: str | os.PathLike[str] | None = None) -> str:
        """Materialise this version's files under ``root`` (default ``./artifacts/<name>-v<N>``), each
        streamed through a temporary file and verified before it is renamed into place. Returns the root."""
        target = os.path.abspath(
            os.fspath(root) if root is not None else os.path.join("artifacts", f"{self.name}-v{self.version}")
        )
        for e in self.manifest:
            rel = _clean_path(e["path"], f"{self.ref} manifest")  # never trust a stored path
            dest = os.path.join(target, *rel.split("/"))
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            tmp = f"{dest}.ragtrail-{os.getpid()}.tmp"
            try:
                with open(tmp, "wb") as f:
                    self._stream(e, f.write)
                os.replace(tmp, dest)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        return target

    def lineage(self) -> dict[str, Any]:
        return lineage(self.ref, store=self.store)

    def set_alias(self, alias: str, **kwargs: Any) -> str | None:
        return set_alias(self.ref, alias, store=self.store, **kwargs)


def _from_row(row: Mapping[str, Any], type_: str, store: Store, blobs: Any) -> ArtifactVersion:
    aliases = sorted(a for a, t in db.aliases_of(store, db.ARTIFACT_NS + row["name"]).items() if t == row["digest"])
    return ArtifactVersion(
        name=row["name"], type=type_, version=row["version"], digest=row["digest"], manifest=row["manifest"],
        size_bytes=row["size_bytes"], created_at=row["created_at"], created_by=row["created_by"],
        run_id=row["run_id"], description=row["description"], metadata=row["metadata"], aliases=aliases,
        store=store, blobs=blobs,
    )  # fmt: skip


def _resolve(store: Store, ref: Any) -> dict[str, Any]:
    try:
        return db.resolve_version(store, ref, "artifact")
    except db.VersionNotFoundError as exc:
        raise ArtifactError(str(exc)) from None


# ------------------------------------------------------------------------------------------ API
def log_artifact(
    artifact: Artifact,
    *,
    aliases: Iterable[str] = (),
    run: Any = None,
    store: Any = None,
    blobs: str | os.PathLike[str] | Blobs | None = None,
    by: str | None = None,
) -> ArtifactVersion:
    """Store ``artifact``'s files (streamed, each content once) and record its version: an existing
    version when the same content was logged before, else the next ``vN``. ``run`` (a run, its
    reference or id) is recorded as the run that produced it; ``aliases`` are moved to it."""
    if not isinstance(artifact, Artifact):
        raise ConfigError(f"log_artifact expects a ragtrail.Artifact, not {type(artifact).__name__}")
    if not artifact._entries:
        raise ConfigError(f"artifact {artifact.name!r} has no files; add some with add_file/add_dir/add")
    alias_list = [check_alias(a) for a in aliases]
    st = _store(store)
    known_type = db.artifact_type(st, artifact.name)
    if known_type is not None and known_type != artifact.type:
        raise ConfigError(
            f"artifact {artifact.name!r} has type {known_type!r} in the store, not {artifact.type!r}; "
            "use another name or the same type"
        )
    run_id = _run_id(st, run) if run is not None else None
    bl = open_blobs(blobs, st)
    manifest: list[dict[str, Any]] = []
    hashed: list[tuple[str, tuple[str, Any], str]] = []
    for path in sorted(artifact._entries):
        kind, src = artifact._entries[path]
        if kind == "file":
            try:
                digest, size = hash_file(src)
            except OSError as exc:
                raise ArtifactError(f"artifact {artifact.name!r}: cannot read {src!r}: {exc.strerror}") from exc
        else:
            digest, size = hashlib.sha256(src).hexdigest(), len(src)
        manifest.append({"path": path, "size": size, "sha256": digest})
        hashed.append((path, (kind, src), digest))
    for path, (kind, src), digest in hashed:  # blobs first: a version row always has its files
        if kind == "file":
            bl.put_file(src, digest, label=f"artifact {artifact.name!r} file {path!r}")
        else:
            bl.put_bytes(src, digest)
    vdigest = manifest_digest(manifest)
    who = _who(by)
    version, created = db.insert_artifact_version(
        st, artifact.name, artifact.type, vdigest, _canonical(manifest), n_files=len(manifest),
        size_bytes=sum(e["size"] for e in manifest), created_by=who, run_id=run_id,
        description=artifact.description, metadata=_canonical(artifact.metadata) if artifact.metadata else None,
    )  # fmt: skip
    if run_id is not None:
        db.record_usage(st, run_id, artifact.name, version, "output")
    for a in alias_list:
        db.move_alias(st, db.ARTIFACT_NS + artifact.name, a, vdigest, by=who)
    row = db.artifact_version(st, artifact.name, version=version)
    assert row is not None
    out = _from_row(row, known_type or artifact.type, st, bl)
    out.created = created
    return out


def get_artifact(
    ref: Any, *, store: Any = None, blobs: str | os.PathLike[str] | Blobs | None = None
) -> ArtifactVersion:
    """A stored version: ``name:vN``, ``name:<alias>``, ``name:latest`` or ``name`` (its newest)."""
    st = _store(store)
    row = _resolve(st, ref)
    type_ = db.artifact_type(st, row["name"]) or ""
    return _from_row(row, type_, st, open_blobs(blobs, st) if blobs is not None else None)


def use_artifact(ref: Any, *, run: Any, store: Any = None) -> ArtifactVersion:
    """The version ``ref`` resolves to now, recorded as an input of ``run`` (so the run's lineage keeps
    the exact version even after the alias moves)."""
    st = _store(store)
    version = get_artifact(ref, store=st)
    db.record_usage(st, _run_id(st, run), version.name, version.version, "input")
    return version


def list_artifacts(*, type: str | None = None, store: Any = None) -> list[dict[str, Any]]:  # noqa: A002
    """One dict per artifact: name, type, n_versions, latest, updated_at, aliases."""
    st = _store(store)
    out = db.list_artifacts(st, type)
    for a in out:
        versions = {v["digest"]: v["version"] for v in db.artifact_versions(st, a["name"])}
        a["aliases"] = {
            al: f"v{versions.get(t, '?')}" for al, t in sorted(db.aliases_of(st, db.ARTIFACT_NS + a["name"]).items())
        }
    return out


def versions(name: str, *, store: Any = None) -> list[ArtifactVersion]:
    """Every version of artifact ``name``, oldest first."""
    st = _store(store)
    type_ = db.artifact_type(st, name) or ""
    return [_from_row(r, type_, st, None) for r in db.artifact_versions(st, name)]


def move_version_alias(
    st: Store,
    ns: str,
    resolve: Callable[[Store, Any], dict[str, Any]],
    ref: Any,
    alias: str,
    expected: Any,
    by: str | None,
    moved: Callable[[str, db.AliasMovedError], Exception],
) -> tuple[str, str | None]:
    """Point ``alias`` of an artifact or prompt (``ns``: ``db.ARTIFACT_NS`` / ``db.PROMPT_NS``) at version
    ``ref`` (looked up with ``resolve``); with ``expected`` (a version reference, or None for "unset")
    only if the alias still points there, else ``moved(name, error)`` is raised. Returns ``(name,
    previous digest)``."""
    check_alias(alias)
    row = resolve(st, ref)
    name = row["name"]
    exp: Any = _ANY
    if expected is not _ANY:
        exp = (
            None
            if expected is None
            else resolve(st, expected if ":" in str(expected) else f"{name}:{expected}")["digest"]
        )
    try:
        return name, db.move_alias(st, ns + name, alias, row["digest"], by=_who(by), expected=exp)
    except db.AliasMovedError as exc:
        raise moved(name, exc) from exc


def set_alias(ref: Any, alias: str, *, store: Any = None, by: str | None = None, expected: Any = _ANY) -> str | None:
    """Point ``alias`` of the artifact at version ``ref`` (atomic, with a history row). With
    ``expected`` (a version reference, or None for "unset") it is a compare-and-swap: the move happens
    only if the alias still points at that version. Returns the previous version's reference."""
    st = _store(store)

    def moved(name: str, exc: db.AliasMovedError) -> Exception:
        now = _digest_ref(st, name, exc.current)
        return ArtifactError(
            f"{name}:{alias} points at {now}, not {expected} as expected (it moved meanwhile); read it again and retry"
        )

    name, prev = move_version_alias(st, db.ARTIFACT_NS, _resolve, ref, alias, expected, by, moved)
    return _digest_ref(st, name, prev)


def _digest_ref(store: Store, name: str, digest: str | None) -> str | None:
    if digest is None:
        return None
    row = db.artifact_version(store, name, digest=digest)
    return f"{name}:v{row['version']}" if row else f"{name}@{digest[:12]}"


def alias_history(name: str, alias: str | None = None, *, store: Any = None) -> list[dict[str, Any]]:
    """Moves of artifact ``name``'s aliases, oldest first: alias, version, previous, set_at, set_by."""
    st = _store(store)
    out = []
    for h in db.alias_history(st, db.ARTIFACT_NS + name, alias):
        out.append({"alias": h["alias"], "version": _digest_ref(st, name, h["target"]),
                    "previous": _digest_ref(st, name, h["previous"]), "set_at": h["set_at"], "set_by": h["set_by"]})  # fmt: skip
    return out


@dataclass
class ArtifactPromotion:
    """What :func:`promote` did: ``moved``, the gate ``report`` it relied on and the previous version."""

    version: ArtifactVersion
    alias: str
    moved: bool
    report: Any
    previous: str | None


def promote(
    ref: Any, alias: str = "production", *, report: Any, store: Any = None, by: str | None = None
) -> ArtifactPromotion:
    """Move ``alias`` to artifact version ``ref`` only if ``report`` — the gate report of the run that
    evaluated it, from ``ragtrail.evals.check_gates`` (the gates of ``ragtrail gate`` and of run
    promotion) — passed. The run is recorded as having used this version, and the alias history says
    which run's gates allowed the move."""
    check_alias(alias)
    st = _store(store)
    version = get_artifact(ref, store=st)
    passed = getattr(report, "passed", None)
    run_info = getattr(report, "run", None)
    if not isinstance(passed, bool) or run_info is None:
        raise ConfigError("promote(report=...) takes the GateReport of check_gates(store, run, gates)")
    if not passed:
        return ArtifactPromotion(version, alias, False, report, None)
    db.record_usage(st, run_info.run_id, version.name, version.version, "input")
    holder = db.current_alias(st, db.ARTIFACT_NS + version.name, alias)
    if holder == version.digest:
        return ArtifactPromotion(version, alias, False, report, version.ref)
    who = f"{_who(by) or 'unknown'} (gates passed by {run_info.ref})"
    prev = db.move_alias(st, db.ARTIFACT_NS + version.name, alias, version.digest, by=who)
    return ArtifactPromotion(version, alias, True, report, _digest_ref(st, version.name, prev))


def diff(a: Any, b: Any, *, store: Any = None) -> dict[str, Any]:
    """Files ``added``, ``removed`` and ``changed`` (with sizes and hashes) from version ``a`` to ``b``."""
    st = _store(store)
    ra, rb = _resolve(st, a), _resolve(st, b)
    ma = {e["path"]: e for e in ra["manifest"]}
    mb = {e["path"]: e for e in rb["manifest"]}
    changed = [
        {"path": p, "size_a": ma[p]["size"], "size_b": mb[p]["size"], "sha256_a": ma[p]["sha256"],
         "sha256_b": mb[p]["sha256"]}
        for p in sorted(ma.keys() & mb.keys()) if ma[p]["sha256"] != mb[p]["sha256"]
    ]  # fmt: skip
    return {
        "a": f"{ra['name']}:v{ra['version']}",
        "b": f"{rb['name']}:v{rb['version']}",
        "added": [mb[p] for p in sorted(mb.keys() - ma.keys())],
        "removed": [ma[p] for p in sorted(ma.keys() - mb.keys())],
        "changed": changed,
        "unchanged": sum(1 for p in ma.keys() & mb.keys() if ma[p]["sha256"] == mb[p]["sha256"]),
    }


def lineage(ref: Any, *, store: Any = None) -> dict[str, Any]:
    """The runs around a version: ``producers`` (runs that produced it, with their dataset and input
    artifacts) and ``consumers`` (runs that used it, with their dataset and outputs); ``paths`` are the
    chains ``dataset → run → artifact → run`` as text."""
    st = _store(store)
    row = _resolve(st, ref)
    me = f"{row['name']}:v{row['version']}"
    edges = db.usage_of_artifact(st, row["name"], row["version"])
    if row["run_id"] and (row["run_id"], "output") not in edges:
        edges.insert(0, (row["run_id"], "output"))
    ids = db.run_identity(st, [r for r, _ in edges])

    def run_info(rid: str) -> dict[str, Any]:
        ident = ids.get(rid, {"ref": rid, "dataset_name": None, "dataset_version": None})
        usage = db.usage_of_run(st, rid)
        ds = f"{ident['dataset_name']}:{ident['dataset_version']}" if ident["dataset_name"] else None
        return {
            "run_id": rid, "run": ident["ref"], "dataset": ds,
            "inputs": [f"{n}:v{v}" for n, v, d in usage if d == "input"],
            "outputs": [f"{n}:v{v}" for n, v, d in usage if d == "output"],
        }  # fmt: skip

    producers = [run_info(r) for r, d in edges if d == "output"]
    consumers = [run_info(r) for r, d in edges if d == "input"]
    paths = []
    none: list[dict[str, Any] | None] = [None]
    for p in producers or none:
        head = ""
        if p is not None:
            sources = [f"dataset {p['dataset']}"] if p["dataset"] else []
            sources += [f"artifact {x}" for x in p["inputs"]]
            head = (f"{' + '.join(sources)} → " if sources else "") + f"run {p['run']} → "
        for c in consumers or none:
            tail = (
                ""
                if c is None
                else f" → run {c['run']}" + (f" → artifact {', '.join(c['outputs'])}" if c["outputs"] else "")
            )
            paths.append(f"{head}artifact {me}{tail}")
    return {"artifact": me, "digest": row["digest"], "producers": producers, "consumers": consumers, "paths": paths}


def _run_id(store: Store, run: Any) -> str:
    rid = getattr(run, "run_id", None)
    if rid is not None:
        return str(rid)
    found = db.run_id_for(store, str(run).strip()) if isinstance(run, str) and run.strip() else None
    if found is None:
        raise ArtifactError(f"no run {run!r} in the store {store.url}; give 'name:vN', 'name:alias' or a run id")
    return found


def artifacts_of_run(run: Any, *, store: Any = None) -> dict[str, list[str]]:
    """``{"inputs": [...], "outputs": [...]}``: the artifact versions a run used and produced."""
    st = _store(store)
    usage = db.usage_of_run(st, _run_id(st, run))
    return {
        "inputs": [f"{n}:v{v}" for n, v, d in usage if d == "input"],
        "outputs": [f"{n}:v{v}" for n, v, d in usage if d == "output"],
    }
