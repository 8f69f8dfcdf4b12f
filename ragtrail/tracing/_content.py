"""Turning arbitrary Python values into bounded, masked JSON text for span attributes.

* Never raises: objects, bytes, numpy arrays, cycles all become a readable representation.
* Bounded: the result is at most ``max_bytes`` UTF-8 bytes *and still valid JSON*; a value that had to
  be cut is reported so the caller can add the attribute name to ``ragtrail.truncated``.
* Masked: API keys, bearer tokens and passwords in URLs are replaced before anything is stored, then a
  user ``mask`` hook (if configured) gets the final say.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_MAX_BYTES = 32_768
_MAX_ITEMS = 200
_MAX_DEPTH = 12
_TRUNC_MARK = "…[truncated]"

# Secrets: provider API keys, bearer tokens, passwords embedded in URLs, generic key=value secrets.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bsk-(?:proj-|ant-|or-)?[A-Za-z0-9_\-]{16,}"), "sk-***"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), "AKIA***"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b"), "gh_***"),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), "xox-***"),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), "AIza***"),
    (re.compile(r"\bhf_[A-Za-z0-9]{20,}\b"), "hf_***"),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9_\-\.=:/+]{8,}"), r"\1 ***"),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^:/\s@]+):[^@\s/]+@"), r"\1:***@"),
    (
        re.compile(
            r"(?i)\b(api[_-]?key|apikey|secret|password|passwd|access[_-]?token)"
            r"(\"?\s*[:=]\s*\"?)([^\s\"',;&]{4,})"
        ),
        r"\1\2***",
    ),
)
# Cheap pre-check so that the common case (no secret-looking text) costs one scan.
_SECRET_HINT = re.compile(r"sk-|AKIA|ASIA|gh[pousr]_|xox|AIza|hf_|(?i:bearer)|://[^\s/]*@|(?i:key|secret|passw|token)")

MaskHook = Callable[[str], str]


# A superset test of _SECRET_HINT made of C-level substring scans: each secret pattern above needs a
# rare character or a literal, checked first so that ordinary text costs a handful of scans
# (~10 µs per KiB, against ~300 µs per KiB for the regex alternation tried at every position).
def _maybe_secret(text: str) -> bool:
    if "IA" in text and ("AKIA" in text or "ASIA" in text):  # AWS keys (case-sensitive patterns)
        return True
    if "AIz" in text:  # Google API keys
        return True
    low = text.lower()
    if "-" in low and ("sk-" in low or "xox" in low):  # sk-…, xox?-…
        return True
    if "_" in low and ("gh" in low or "hf_" in low):  # gh?_…, hf_…
        return True
    if "@" in low and "://" in low:  # passwords in URLs
        return True
    if "bearer" in low:
        return True
    # key=value secrets need the keyword followed by ':' or '='
    if ":" in low or "=" in low:
        return "key" in low or "token" in low or "secret" in low or "passw" in low
    return False


def mask_secrets(text: str) -> tuple[str, int]:
    """Replace secrets in ``text``; returns the masked text and how many were replaced."""
    if not _maybe_secret(text):
        return text, 0
    total = 0
    for pattern, repl in _SECRET_PATTERNS:
        text, n = pattern.subn(repl, text)
        total += n
    return text, total


def _default(obj: Any, seen: set[int], depth: int) -> Any:
    """Convert ``obj`` into JSON-compatible data, bounded in depth and size; never raises."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        if isinstance(obj, float) and obj != obj:  # NaN is not JSON
            return "NaN"
        if isinstance(obj, float) and obj in (float("inf"), float("-inf")):
            return str(obj)
        return obj
    if depth > _MAX_DEPTH:
        return f"<{type(obj).__name__}: max depth>"
    oid = id(obj)
    if oid in seen:
        return f"<cycle: {type(obj).__name__}>"
    try:
        if isinstance(obj, Mapping):
            seen.add(oid)
            out: dict[str, Any] = {}
            for i, (k, v) in enumerate(obj.items()):
                if i >= _MAX_ITEMS:
                    out["…"] = f"{len(obj) - _MAX_ITEMS} more items"
                    break
                out[str(k)] = _default(v, seen, depth + 1)
            seen.discard(oid)
            return out
        if isinstance(obj, (list, tuple, set, frozenset)):
            seen.add(oid)
            items = list(obj)
            res = [_default(v, seen, depth + 1) for v in items[:_MAX_ITEMS]]
            if len(items) > _MAX_ITEMS:
                res.append(f"… {len(items) - _MAX_ITEMS} more items")
            seen.discard(oid)
            return res
        if isinstance(obj, (bytes, bytearray, memoryview)):
            raw = bytes(obj)
            try:  # text that happens to be bytes reads best as text
                return {"__bytes__": len(raw), "text": raw[:512].decode("utf-8")}
            except UnicodeDecodeError:
                return {"__bytes__": len(raw), "base64": base64.b64encode(raw[:96]).decode("ascii")}
        # numpy / torch tensors: shape + dtype + a head of values
        shape = getattr(obj, "shape", None)
        if shape is not None and hasattr(obj, "dtype") and hasattr(obj, "tolist"):
            try:
                flat = obj.reshape(-1)[:16].tolist()
            except Exception:
                flat = None
            return {"__array__": type(obj).__name__, "shape": list(shape), "dtype": str(obj.dtype), "head": flat}
        # pydantic v2 / v1, dataclasses, LangChain documents and messages
        dump = getattr(obj, "model_dump", None)
        if callable(dump):
            seen.add(oid)
            try:
                return _default(dump(), seen, depth + 1)
            finally:
                seen.discard(oid)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            seen.add(oid)
            try:
                return _default({f.name: getattr(obj, f.name, None) for f in dataclasses.fields(obj)}, seen, depth + 1)
            finally:
                seen.discard(oid)
        if hasattr(obj, "isoformat"):
            return obj.isoformat()
        return repr(obj)[:1024]
    except Exception as exc:  # a broken __repr__ or property must not break tracing
        return f"<unserialisable {type(obj).__name__}: {type(exc).__name__}>"


def _cut_str(s: str, max_bytes: int) -> str:
    b = s.encode("utf-8")
    if len(b) <= max_bytes:
        return s
    return b[: max(0, max_bytes)].decode("utf-8", errors="ignore") + _TRUNC_MARK


def to_json(value: Any, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[str, bool]:
    """Serialise ``value`` to JSON text of at most ``max_bytes`` bytes; returns (text, truncated).

    Strings are stored as-is (not JSON-quoted) because that is what users want to read; everything else
    is JSON. The result is always valid: a structure too large to keep whole becomes a JSON string
    holding the start of its serialisation, followed by a truncation mark.
    """
    if isinstance(value, str):
        if len(value) * 4 <= max_bytes or len(value.encode("utf-8")) <= max_bytes:
            return value, False
        return _cut_str(value, max_bytes - len(_TRUNC_MARK.encode())), True
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError):
        text = json.dumps(_default(value, set(), 0), ensure_ascii=False, separators=(",", ":"))
    if len(text) * 4 <= max_bytes or len(text.encode("utf-8")) <= max_bytes:
        return text, False
    # Too large: keep the structure when shrinking strings is enough, else keep a JSON string prefix.
    data = _default(value, set(), 0)
    shrunk = _shrink(data, max(64, max_bytes // 8))
    text = json.dumps(shrunk, ensure_ascii=False, separators=(",", ":"))
    if len(text.encode("utf-8")) <= max_bytes:
        return text, True
    budget = max(16, max_bytes - 32)
    prefix = _cut_str(text, budget)
    out = json.dumps(prefix, ensure_ascii=False)
    while len(out.encode("utf-8")) > max_bytes and budget > 16:
        budget = int(budget * 0.8)
        out = json.dumps(_cut_str(text, budget), ensure_ascii=False)
    return out, True


def _shrink(data: Any, str_cap: int) -> Any:
    if isinstance(data, str):
        return _cut_str(data, str_cap) if len(data) > str_cap // 4 else data
    if isinstance(data, dict):
        return {k: _shrink(v, str_cap) for k, v in data.items()}
    if isinstance(data, list):
        return [_shrink(v, str_cap) for v in data[:50]] + ([f"… {len(data) - 50} more"] if len(data) > 50 else [])
    return data


def safe_json(value: Any) -> Any:
    """JSON-compatible copy of ``value`` (no size bound); for callers that embed it in larger JSON."""
    return _default(value, set(), 0)
