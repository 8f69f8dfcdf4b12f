"""Content-addressed blob storage for artifact files: ``<root>/sha256/<ab>/<sha256 hex>``.

A file is stored once per content hash, whichever artifacts and versions contain it. Everything is
streamed in fixed-size chunks: hashing, storing and materialising never hold a whole file in memory.

Where the blobs live:

* ``blobs=`` / ``$RAGTRAIL_ARTIFACTS``: a directory (local or a shared mount) or, with the
  ``artifacts`` extra (``fsspec``), any fsspec URL (``s3://bucket/prefix``, ``gs://…``, ``memory://…``);
* otherwise, for a SQLite store, the ``artifacts/`` directory beside the store file;
* a PostgreSQL store has no directory of its own: a team sets ``$RAGTRAIL_ARTIFACTS`` to a location
  everyone reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from typing import IO, Any

from ragtrail._exceptions import ArtifactError, ConfigError

CHUNK = 1 << 20
"""Bytes read and written per step (1 MiB)."""

_HEX = re.compile(r"^[0-9a-f]{64}$")


def hash_file(path: str) -> tuple[str, int]:
    """``(sha256 hex, size)`` of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    size = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


class Blobs:
    """Base class: where blobs are, and how to read and write them."""

    url: str = ""

    def location(self, digest: str) -> str:  # pragma: no cover - abstract
        """Where the blob of ``digest`` is (for messages)."""
        raise NotImplementedError

    def exists(self, digest: str) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def _open_write(self, digest: str) -> tuple[IO[bytes], Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _commit(self, token: Any, digest: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _abort(self, token: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def open_read(self, digest: str) -> IO[bytes]:  # pragma: no cover - abstract
        """The blob opened for reading; ``FileNotFoundError`` when it is missing."""
        raise NotImplementedError

    def put_file(self, src: str, digest: str, *, label: str) -> bool:
        """Copy the file ``src`` into the blob of ``digest`` unless that blob exists; the copy is hashed
        as it is written and refused when the file changed since it was hashed. Returns whether a
        blob was written."""
        if self.exists(digest):
            return False
        h = hashlib.sha256()
        out, token = self._open_write(digest)
        try:
            buf = bytearray(CHUNK)
            view = memoryview(buf)
            with out, open(src, "rb", buffering=0) as f:
                while True:
                    n = f.readinto(buf)
                    if not n:
                        break
                    h.update(view[:n])
                    out.write(view[:n])
            if h.hexdigest() != digest:
                raise ArtifactError(
                    f"{label}: the file {src!r} changed while it was being logged (sha256 {digest[:12]}… when "
                    f"hashed, {h.hexdigest()[:12]}… when copied); log the artifact again once it stops changing"
                )
        except BaseException:
            self._abort(token)
            raise
        self._commit(token, digest)
        return True

    def put_bytes(self, data: bytes, digest: str) -> bool:
        """Store small in-memory content (``Artifact.add``); returns whether a blob was written."""
        if self.exists(digest):
            return False
        out, token = self._open_write(digest)
        try:
            with out:
                out.write(data)
        except BaseException:
            self._abort(token)
            raise
        self._commit(token, digest)
        return True

    def iter_chunks(self, digest: str) -> Iterator[bytes]:
        with self.open_read(digest) as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    return
                yield chunk


def _check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _HEX.match(digest):
        raise ArtifactError(f"{digest!r} is not a sha256 hex digest; the manifest is damaged")
    return digest


class LocalBlobs(Blobs):
    """Blobs in a local (or mounted) directory. Writes go to a temporary file renamed into place, so a
    blob is either absent or complete, also with several processes storing the same content."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(os.path.expanduser(root))
        self.url = self.root

    def location(self, digest: str) -> str:
        d = _check_digest(digest)
        return os.path.join(self.root, "sha256", d[:2], d)

    def exists(self, digest: str) -> bool:
        return os.path.isfile(self.location(digest))

    def _open_write(self, digest: str) -> tuple[IO[bytes], Any]:
        final = self.location(digest)
        parent = os.path.dirname(final)
        try:
            os.makedirs(parent, exist_ok=True)
            tmp = os.path.join(parent, f".{digest[:16]}.{uuid.uuid4().hex}.tmp")
            return open(tmp, "wb"), tmp
        except OSError as exc:
            raise ArtifactError(
                f"cannot write artifact blobs under {self.root!r}: {exc.strerror}. Check that the directory is "
                "writable, or set RAGTRAIL_ARTIFACTS (or blobs=) to another location."
            ) from exc

    def _commit(self, token: Any, digest: str) -> None:
        os.replace(token, self.location(digest))

    def _abort(self, token: Any) -> None:
        with contextlib.suppress(OSError):
            os.unlink(token)

    def open_read(self, digest: str) -> IO[bytes]:
        return open(self.location(digest), "rb")


class FsspecBlobs(Blobs):
    """Blobs at an fsspec URL (object storage, ``memory://`` in tests)."""

    def __init__(self, url: str) -> None:
        from ragtrail._deps import require

        fsspec = require("fsspec", extra="artifacts")
        self.url = url.rstrip("/")
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"cannot use the artifact location {url!r}: {exc}") from exc

    def location(self, digest: str) -> str:
        d = _check_digest(digest)
        return f"{self.root}/sha256/{d[:2]}/{d}"

    def exists(self, digest: str) -> bool:
        return bool(self.fs.exists(self.location(digest)))

    def _open_write(self, digest: str) -> tuple[IO[bytes], Any]:
        final = self.location(digest)
        tmp = f"{final}.{uuid.uuid4().hex}.tmp"
        with contextlib.suppress(Exception):
            self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
        return self.fs.open(tmp, "wb"), tmp

    def _commit(self, token: Any, digest: str) -> None:
        self.fs.mv(token, self.location(digest))

    def _abort(self, token: Any) -> None:
        with contextlib.suppress(Exception):
            self.fs.rm(token)

    def open_read(self, digest: str) -> IO[bytes]:
        try:
            return self.fs.open(self.location(digest), "rb")  # type: ignore[no-any-return]
        except FileNotFoundError:
            raise
        except OSError as exc:  # some filesystems report a missing key differently
            if not self.exists(digest):
                raise FileNotFoundError(self.location(digest)) from exc
            raise


def open_blobs(location: str | os.PathLike[str] | Blobs | None, store: Any) -> Blobs:
    """The blob storage for ``store``: ``location`` if given, else ``$RAGTRAIL_ARTIFACTS``, else the
    ``artifacts/`` directory beside a SQLite store's file."""
    if isinstance(location, Blobs):
        return location
    text = os.fspath(location) if location is not None else os.environ.get("RAGTRAIL_ARTIFACTS", "")
    if text.strip():
        if text.startswith("file://"):
            return LocalBlobs(text[len("file://") :])
        if "://" in text:
            return FsspecBlobs(text)
        return LocalBlobs(text)
    path = getattr(store, "path", None)
    if store.kind == "sqlite" and path:
        return LocalBlobs(os.path.join(os.path.dirname(path), "artifacts"))
    raise ConfigError(
        f"artifact files need a blob location for the {store.kind} store {store.url}: set RAGTRAIL_ARTIFACTS "
        "(or pass blobs=) to a directory every user can read (a shared mount) or to an object-storage URL "
        "such as s3://bucket/ragtrail (pip install 'ragtrail[artifacts]')"
    )
