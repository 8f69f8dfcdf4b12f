"""Compact storage of span content (issue 24): the large text attributes of a span (messages,
documents, prompts, inputs and outputs) are kept compressed in the ``content`` column; the small ones
stay in the ``attributes`` JSON, where SQL reads them (feedback tags, the UI's filters).

* Written by the SQLite store (``SQLiteStore._insert_spans``, under ``write_spans``): an attributes
  JSON of at least :data:`MIN_JSON` characters is split; attribute values that are strings of at
  least :data:`MIN_VALUE` characters go to ``content``.
* Read through ``ragtrail_attributes(attributes, content)``, a SQL function the SQLite store registers
  on each of its connections: it gives back the whole attributes JSON, so every reader (Client,
  UI, server, monitor, datasets from traces, exports) reads old and new rows alike.
* PostgreSQL compresses large values itself (TOAST); its rows are never split.

The blob is one codec byte and the compressed JSON object of the moved attributes: ``z`` zstd (with
the optional ``zstandard`` package, ``pip install 'ragtrail[zstd]'``), ``d`` zlib (the standard
library, used when ``zstandard`` is not installed), ``D`` zstd with a dictionary trained on the
project's own spans (then the 4-byte id of the dictionary, little-endian, before the frame). A store
written with zstd needs ``zstandard`` to read its content; one written with zlib reads everywhere.

Dictionaries (:class:`ContentCodec`, one per SQLite store): the first :data:`DICT_SAMPLES` content
objects a process writes for a project (when the store holds no dictionary for it yet) are kept as
samples; a :data:`DICT_BYTES` dictionary is trained on them and adopted only if it pays, i.e. makes
the samples at least :data:`DICT_MIN_GAIN` smaller than zstd alone. It is stored in ``content_dicts``
in the same transaction as the first rows compressed with it, so no row ever names a dictionary the
store does not hold. Small passages gain most (a 5 KB passage of prose-like text: ~3.3 KB → ~2.1 KB).
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any

import orjson

from ragtrail._exceptions import MissingDependencyError

ENABLED = True  # False writes rows whole, as before migration 12 (benchmarks compare both in one run)
DICTIONARIES = True  # False: plain zstd only, no trained dictionaries (benchmarks compare both in one run)
MIN_JSON = 1_024  # attributes JSON shorter than this is stored as it is
MIN_VALUE = 256  # string attributes at least this long are moved to the compressed column
ZSTD_LEVEL = 3
ZLIB_LEVEL = 6

_UNSET: Any = object()
_zstd: Any = _UNSET  # the zstandard module, None when it is not installed; imported on first use


def _zstd_module() -> Any:
    """zstandard (optional: smaller and several times faster than zlib), or None."""
    global _zstd
    if _zstd is _UNSET:
        try:
            import zstandard

            _zstd = zstandard
        except ImportError:  # pragma: no cover - depends on the environment
            _zstd = None
    return _zstd


_local_c: Any = None
_local_d: Any = None


def _zc() -> Any:
    global _local_c
    if _local_c is None:
        import threading

        _local_c = threading.local()
    c = getattr(_local_c, "c", None)
    if c is None:
        c = _local_c.c = _zstd_module().ZstdCompressor(level=ZSTD_LEVEL)
    return c


def _zd() -> Any:
    global _local_d
    if _local_d is None:
        import threading

        _local_d = threading.local()
    d = getattr(_local_d, "d", None)
    if d is None:
        d = _local_d.d = _zstd_module().ZstdDecompressor()
    return d


def codec() -> str:
    """The codec new rows are written with: ``zstd`` or ``zlib``."""
    return "zstd" if _zstd_module() is not None else "zlib"


def compress(data: bytes) -> bytes:
    if _zstd_module() is not None:
        return b"z" + _zc().compress(data)
    return b"d" + zlib.compress(data, ZLIB_LEVEL)


_MISSING = (
    "this store's span content was compressed with zstd; install it to read it: "
    "pip install 'ragtrail[zstd]' (or pip install zstandard)"
)


def raise_if_codec_missing(exc: BaseException) -> None:
    """SQLite reports an exception inside ``ragtrail_attributes`` only as "user-defined function raised
    exception": when zstandard is missing, say what is wrong and what to do instead."""
    if "user-defined function" in str(exc) and _zstd_module() is None:
        raise MissingDependencyError(_MISSING) from exc


def decompress(blob: bytes) -> bytes:
    tag, body = blob[:1], blob[1:]
    if tag == b"z":
        if _zstd_module() is None:
            raise MissingDependencyError(_MISSING)
        return bytes(_zd().decompress(body))
    if tag == b"d":
        return zlib.decompress(body)
    raise ValueError(f"unknown span content codec {tag!r}")


def split_attributes(attrs_json: str, codec: ContentCodec | None = None, project: str = "") -> tuple[str, bytes | None]:
    """(the small attributes as JSON, the compressed large ones or None when nothing moves); with a
    ``codec`` (the store's), compressed with the project's dictionary when it has one."""
    if not ENABLED or len(attrs_json) < MIN_JSON:
        return attrs_json, None
    try:
        attrs = orjson.loads(attrs_json)
    except orjson.JSONDecodeError:
        return attrs_json, None
    if type(attrs) is not dict:
        return attrs_json, None
    big = {k: v for k, v in attrs.items() if type(v) is str and len(v) >= MIN_VALUE}
    if not big:
        return attrs_json, None
    small = {k: v for k, v in attrs.items() if k not in big}
    data = orjson.dumps(big)
    return orjson.dumps(small).decode("utf-8"), (codec.compress(data, project) if codec else compress(data))


def join_attributes(
    attrs_json: str | None, blob: bytes | None, unpack: Callable[[bytes], bytes] | None = None
) -> str | None:
    """The whole attributes JSON of a stored row (the small attributes and the decompressed large
    ones, through ``unpack``: a store's :meth:`ContentCodec.decompress`, default :func:`decompress`);
    rows without a blob come back unchanged. Never parses the small part."""
    if not blob:
        return attrs_json
    big = (unpack or decompress)(bytes(blob)).decode("utf-8")
    if not attrs_json or attrs_json == "{}":
        return big
    if big == "{}":
        return attrs_json
    return attrs_json[:-1] + "," + big[1:]


def sql_join(attributes: str | None, content: bytes | None) -> str | None:
    """``ragtrail_attributes(attributes, content)`` in SQLite (a store without dictionaries)."""
    return join_attributes(attributes, content)


DICT_TAG = b"D"
DICT_SAMPLES = 1_000  # content objects of a project a dictionary is trained on
DICT_MIN_SAMPLE_BYTES = 256 * 1024  # ... holding at least this much text
DICT_BYTES = 64 * 1024
DICT_MIN_GAIN = 0.10  # adopted only when the samples come out at least this much smaller with it
_ID = struct.Struct("<I")


class ContentCodec:
    """One SQLite store's content compression: zstd (or zlib), and zstd dictionaries trained on each
    project's own spans (see the module's docstring). ``load`` reads ``(id, project, dict)`` rows of
    ``content_dicts`` on a connection of its own (it may be called from inside a SQL function)."""

    def __init__(self, load: Callable[[], list[tuple[int, str, bytes]]]) -> None:
        self._load = load
        self._lock = threading.Lock()
        self._dicts: dict[int, Any] = {}  # id -> zstandard.ZstdCompressionDict
        self._active: dict[str, int | None] = {}  # project -> dictionary id, None: none pays (or no zstd)
        self._samples: dict[str, list[bytes]] = {}
        self._pending: list[tuple[Any, ...]] = []  # content_dicts rows to insert with the next write
        self._loaded = False
        self._local = threading.local()  # per thread: compressors and decompressors by dictionary id
        self.trained = 0

    # -- writing
    def compress(self, data: bytes, project: str) -> bytes:
        zstd = _zstd_module()
        if zstd is None or not DICTIONARIES:
            return compress(data)
        if not self._loaded:
            self._reload()
        did = self._active.get(project, 0)
        if did == 0:  # not decided yet: a sample for the project's dictionary
            did = self._sample(project, data)
        if did is None or did == 0:
            return compress(data)
        cs = self._per_thread("c")
        c = cs.get(did)
        if c is None:
            c = cs[did] = zstd.ZstdCompressor(level=ZSTD_LEVEL, dict_data=self._dicts[did], write_dict_id=False)
        return DICT_TAG + _ID.pack(did) + c.compress(data)

    def _sample(self, project: str, data: bytes) -> int | None:
        with self._lock:
            if self._active.get(project, 0) != 0:
                return self._active[project]
            samples = self._samples.setdefault(project, [])
            samples.append(data)
            if len(samples) < DICT_SAMPLES or sum(map(len, samples)) < DICT_MIN_SAMPLE_BYTES:
                return 0
            del self._samples[project]
            self._active[project] = did = self._train(project, samples)
            return did

    def _train(self, project: str, samples: list[bytes]) -> int | None:
        zstd = _zstd_module()
        try:
            d = zstd.train_dictionary(DICT_BYTES, samples, level=ZSTD_LEVEL)
        except Exception:
            return None
        plain = sum(len(_zc().compress(x)) for x in samples)
        dc = zstd.ZstdCompressor(level=ZSTD_LEVEL, dict_data=d, write_dict_id=False)
        with_dict = sum(len(dc.compress(x)) + 5 for x in samples)
        if with_dict > plain * (1 - DICT_MIN_GAIN):
            return None  # it does not pay
        did = int(d.dict_id()) or 1
        while did in self._dicts:  # a dictionary id is random; two of one store never share one
            did = did % 0xFFFFFFFF + 1
        self._dicts[did] = d
        self._pending.append(
            (did, project, time.time_ns(), "zstd", d.as_bytes(), len(samples), sum(map(len, samples)), plain, with_dict)
        )
        self.trained += 1
        return did

    def pending(self) -> list[tuple[Any, ...]]:
        """``content_dicts`` rows that rows about to be written may name: insert them in the same
        transaction, then call :meth:`persisted`."""
        with self._lock:
            return list(self._pending)

    def persisted(self, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            done = {r[0] for r in rows}
            self._pending = [r for r in self._pending if r[0] not in done]

    # -- reading
    def _reload(self) -> None:
        zstd = _zstd_module()
        try:
            rows = self._load()
        except Exception:
            rows = []
        with self._lock:
            newest: dict[str, int] = {}
            for did, project, raw in rows:  # oldest first
                if did not in self._dicts and zstd is not None:
                    self._dicts[did] = zstd.ZstdCompressionDict(bytes(raw))
                newest[project] = did
            for project, did in newest.items():
                if not self._active.get(project) and did in self._dicts:  # a project of no dictionary yet
                    self._active[project] = did
                    self._samples.pop(project, None)
            self._loaded = True

    def _per_thread(self, kind: str) -> dict[int, Any]:
        got = getattr(self._local, kind, None)
        if got is None:
            got = {}
            setattr(self._local, kind, got)
        return got

    def decompress(self, blob: bytes) -> bytes:
        if blob[:1] != DICT_TAG:
            return decompress(blob)
        zstd = _zstd_module()
        if zstd is None:
            raise MissingDependencyError(_MISSING)
        (did,) = _ID.unpack_from(blob, 1)
        ds = self._per_thread("d")
        d = ds.get(did)
        if d is None:
            if did not in self._dicts:
                self._reload()
            if did not in self._dicts:
                raise ValueError(f"span content compressed with dictionary {did}, which this store does not hold")
            d = ds[did] = zstd.ZstdDecompressor(dict_data=self._dicts[did])
        return bytes(d.decompress(blob[5:]))

    def join(self, attrs_json: str | None, blob: bytes | None) -> str | None:
        """``ragtrail_attributes(attributes, content)``: :func:`join_attributes` with this store's dictionaries."""
        return join_attributes(attrs_json, blob, self.decompress)
