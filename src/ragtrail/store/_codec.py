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
library, used when ``zstandard`` is not installed). A store written with zstd needs ``zstandard`` to
read its content; one written with zlib reads everywhere.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson

from ragtrail._exceptions import MissingDependencyError

ENABLED = True  # False writes rows whole, as before migration 12 (benchmarks compare both in one run)
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


def split_attributes(attrs_json: str) -> tuple[str, bytes | None]:
    """(the small attributes as JSON, the compressed large ones or None when nothing moves)."""
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
    return orjson.dumps(small).decode("utf-8"), compress(orjson.dumps(big))


def join_attributes(attrs_json: str | None, blob: bytes | None) -> str | None:
    """The whole attributes JSON of a stored row (the small attributes and the decompressed large
    ones); rows without a blob come back unchanged. Never parses the small part."""
    if not blob:
        return attrs_json
    big = decompress(bytes(blob)).decode("utf-8")
    if not attrs_json or attrs_json == "{}":
        return big
    if big == "{}":
        return attrs_json
    return attrs_json[:-1] + "," + big[1:]


def sql_join(attributes: str | None, content: bytes | None) -> str | None:
    """``ragtrail_attributes(attributes, content)`` in SQLite."""
    return join_attributes(attributes, content)
