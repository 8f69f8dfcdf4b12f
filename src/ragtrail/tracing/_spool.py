"""A bounded local spool for span rows the store could not take (an outage, a full disk, a restart).

While the store is unavailable the exporter appends each batch here instead of dropping it; when the
store answers again the batches are written back oldest first, in the order they were spooled, and
every later batch waits behind them, so the store receives spans in the order they ended. Writes are
idempotent on (trace id, span id), so a batch replayed twice (a crash between its write and its
removal) is still stored once.

Layout: one directory per store (a hash of its location) and process, holding numbered segment files
of length-prefixed records (a record is one batch of rows as compact JSON). Bounded by ``max_bytes``:
when a new batch would pass the cap, whole oldest segments are removed and their spans counted as
dropped (the only way spans are dropped here). Segments left behind by a process that died are adopted
by the next process that spools for the same store, and replayed before its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ragtrail._log import logger

try:
    import orjson as _orjson

    def _encode(rows: Sequence[Sequence[Any]]) -> bytes:
        try:
            return _orjson.dumps(rows)
        except TypeError:  # e.g. an int beyond 64 bits: the standard encoder takes it
            return json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    _decode: Callable[[bytes], Any] = _orjson.loads
except ImportError:  # pragma: no cover - orjson is a core dependency

    def _encode(rows: Sequence[Sequence[Any]]) -> bytes:
        return json.dumps(rows, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    _decode = json.loads

_HEADER = struct.Struct("<II")  # payload bytes, number of rows
DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024


def default_spool_dir() -> str:
    """``$RAGTRAIL_SPOOL_DIR``, else ``$XDG_CACHE_HOME/ragtrail/spool`` (``~/.cache/ragtrail/spool``):
    outside the store's own directory, so an outage of that directory does not take the spool too."""
    env = os.environ.get("RAGTRAIL_SPOOL_DIR")
    if env:
        return env
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "ragtrail", "spool")


class _Segment:
    __slots__ = ("nbytes", "offset", "path", "rows")

    def __init__(self, path: str, nbytes: int = 0, rows: int = 0) -> None:
        self.path = path
        self.nbytes = nbytes  # bytes written to the file
        self.rows = rows  # rows in it not yet replayed
        self.offset = 0  # bytes already replayed


class Spool:
    """Span rows waiting for the store, on local disk, bounded by ``max_bytes``.

    Not thread-safe by itself: the exporter calls it under its own write lock.
    """

    def __init__(
        self,
        directory: str,
        store_key: str,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        self.max_bytes = int(max_bytes)
        self.segment_bytes = max(4096, min(int(segment_bytes), self.max_bytes // 4 or 4096))
        key = hashlib.sha256(store_key.encode("utf-8")).hexdigest()[:16]
        self.root = os.path.join(os.path.abspath(os.path.expanduser(directory)), key)
        self.dir = os.path.join(self.root, f"{os.getpid()}-{os.urandom(3).hex()}")
        self._segments: deque[_Segment] = deque()
        self._writing: Any = None  # the open file of the newest segment
        self._seq = 0
        self.pending = 0  # rows on disk waiting to be replayed
        self.bytes = 0  # bytes on disk not yet replayed
        self.dropped = 0  # rows evicted at the cap
        self.spooled = 0  # rows ever appended
        self.replayed = 0  # rows written back to the store
        self._lock = threading.Lock()
        self._adopted = False

    # ------------------------------------------------------------------------------------ writing
    def append(self, rows: Sequence[Sequence[Any]]) -> bool:
        """Spool one batch; False when it could not be written (counted by the caller)."""
        if not rows:
            return True
        payload = _encode(rows)
        record = _HEADER.pack(len(payload), len(rows)) + payload
        if len(record) > self.max_bytes:
            self.dropped += len(rows)
            return False
        with self._lock:
            try:
                while self.bytes + len(record) > self.max_bytes and self._segments:
                    self._evict_oldest()
                seg = self._segments[-1] if self._segments and self._writing is not None else None
                if seg is None or seg.nbytes + len(record) > self.segment_bytes:
                    seg = self._new_segment()
                self._writing.write(record)
                self._writing.flush()
                seg.nbytes += len(record)
                seg.rows += len(rows)
            except OSError:
                logger.warning("ragtrail: could not write to the spool %s", self.dir, exc_info=True)
                self._close_writing()
                return False
            self.bytes += len(record)
            self.pending += len(rows)
            self.spooled += len(rows)
            return True

    def _new_segment(self) -> _Segment:
        self._close_writing()
        os.makedirs(self.dir, exist_ok=True)
        self._seq += 1
        seg = _Segment(os.path.join(self.dir, f"{self._seq:09d}.seg"))
        self._writing = open(seg.path, "ab")  # kept open across appends
        self._segments.append(seg)
        return seg

    def _close_writing(self) -> None:
        if self._writing is not None:
            with contextlib.suppress(OSError):
                self._writing.close()
            self._writing = None

    def _evict_oldest(self) -> None:
        seg = self._segments.popleft()
        if not self._segments:
            self._close_writing()
        self.dropped += seg.rows
        self.pending -= seg.rows
        self.bytes -= seg.nbytes - seg.offset
        with contextlib.suppress(OSError):
            os.remove(seg.path)
        logger.warning(
            "ragtrail: the span spool reached its cap (%d bytes); %d of the oldest spooled spans were dropped",
            self.max_bytes,
            seg.rows,
        )

    # ---------------------------------------------------------------------------------- replaying
    def adopt_orphans(self) -> None:
        """Take over segments that a process which has exited left for this store (once)."""
        if self._adopted:
            return
        self._adopted = True
        try:
            names = sorted(os.listdir(self.root))
        except OSError:
            return
        found: list[_Segment] = []
        for name in names:
            d = os.path.join(self.root, name)
            if d == self.dir or not _owner_gone(name):
                continue
            try:
                files = sorted(f for f in os.listdir(d) if f.endswith(".seg"))
            except OSError:
                continue
            for f in files:
                path = os.path.join(d, f)
                rows, nbytes = _scan(path)
                if rows:
                    found.append(_Segment(path, nbytes, rows))
                else:
                    with contextlib.suppress(OSError):
                        os.remove(path)
        if found:
            with self._lock:
                self._segments.extendleft(reversed(found))
                self.pending += sum(s.rows for s in found)
                self.bytes += sum(s.nbytes for s in found)
            logger.warning("ragtrail: replaying %d spans spooled by an earlier process", sum(s.rows for s in found))

    def replay(self, write: Callable[[list[Any]], object], max_batches: int | None = None) -> bool:
        """Write spooled batches back with ``write`` (the store's ``write_spans``), oldest first.
        Returns True when the spool is empty; stops at the first failing write (it propagates) or
        after ``max_batches``."""
        done = 0
        while True:
            with self._lock:
                if not self._segments:
                    return True
                seg = self._segments[0]
                if self._writing is not None and len(self._segments) == 1:
                    self._close_writing()  # seal the newest segment: it is read now
            if max_batches is not None and done >= max_batches:
                return False
            got = _read_record(seg.path, seg.offset)
            if got is None:  # end of this segment (or a torn last record of a crashed writer)
                self._finish(seg)
                continue
            rows, n, size = got
            write(rows)
            done += 1
            with self._lock:
                seg.offset += size
                seg.rows -= n
                self.pending -= n
                self.bytes -= size
                self.replayed += n

    def _finish(self, seg: _Segment) -> None:
        with self._lock:
            if self._segments and self._segments[0] is seg:
                self._segments.popleft()
            self.pending -= seg.rows  # rows of a torn record that cannot be read back
            self.dropped += seg.rows
            self.bytes -= seg.nbytes - seg.offset
            seg.rows = 0
        with contextlib.suppress(OSError):
            os.remove(seg.path)
        with contextlib.suppress(OSError):
            if not os.listdir(os.path.dirname(seg.path)):
                os.rmdir(os.path.dirname(seg.path))

    def close(self) -> None:
        """Close the open segment; spooled rows stay on disk for the next process."""
        with self._lock:
            self._close_writing()


def _read_record(path: str, offset: int) -> tuple[list[Any], int, int] | None:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                return None
            size, n = _HEADER.unpack(head)
            payload = f.read(size)
            if len(payload) < size:
                return None
    except OSError:
        return None
    try:
        rows = _decode(payload)
    except ValueError:
        return None
    return rows, n, _HEADER.size + size


def _scan(path: str) -> tuple[int, int]:
    """Rows and bytes of the complete records in a segment file."""
    rows = nbytes = 0
    while True:
        got = _read_record(path, nbytes)
        if got is None:
            return rows, nbytes
        rows += got[1]
        nbytes += got[2]


def _owner_gone(dirname: str) -> bool:
    try:
        pid = int(dirname.split("-", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, owned by someone else
        return False
    return False


def make_spool(store: Any, options: Mapping[str, Any]) -> Spool | None:
    """The spool ``ragtrail.init`` options ask for (``spool_dir``, ``spool_max_bytes``; 0 turns it off)."""
    from ragtrail._exceptions import ConfigError

    raw = options.get("spool_max_bytes", DEFAULT_MAX_BYTES)
    try:
        max_bytes = int(raw)
    except (TypeError, ValueError):
        max_bytes = -1
    if max_bytes < 0:
        raise ConfigError(f"ragtrail.init(spool_max_bytes={raw!r}) must be a number of bytes >= 0 (0: no spool)")
    if max_bytes == 0:
        return None
    directory = os.fspath(options.get("spool_dir") or default_spool_dir())
    return Spool(directory, f"{getattr(store, 'kind', '')}:{getattr(store, 'url', '')}", max_bytes=max_bytes)
