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
import threading
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_MAX_BYTES = 32_768
_MAX_ITEMS = 200
_MAX_DEPTH = 12
_TRUNC_MARK = "…[truncated]"

# Secrets: provider API keys, bearer tokens, passwords embedded in URLs, generic key=value secrets.
# Speed matters (this runs on every content value and on every stored span): each pattern starts
# with a literal so the regex engine can jump to candidates, and runs only when a plain substring
# test (C speed) says a candidate is present. Word boundaries are checked in the replacement
# function instead of with a leading \b, which would make the engine try every position.


def _bounded(repl: str) -> Callable[[re.Match[str]], str]:
    def sub(m: re.Match[str]) -> str:
        i = m.start()
        if i > 0 and (m.string[i - 1].isalnum() or m.string[i - 1] == "_"):
            return m.group(0)  # inside a longer word (task-…, MASIA…): not a key
        return repl

    return sub


# (substrings any of which must occur, pattern, replacement)
_CASED: tuple[tuple[tuple[str, ...], re.Pattern[str], Any], ...] = (
    (("sk-",), re.compile(r"sk-(?:proj-|ant-|or-)?[A-Za-z0-9_\-]{16,}"), _bounded("sk-***")),
    # one short needle per pattern where it can be ("IA" for AKIA/ASIA, "gh" for ghp_/gho_/…): each
    # needle is a full scan of the text, and a false hit only costs one regex pass
    (("IA",), re.compile(r"A[KS]IA[A-Z0-9]{16}(?![A-Za-z0-9])"), _bounded("AKIA***")),
    (("gh",), re.compile(r"gh[pousr]_[A-Za-z0-9]{20,}"), _bounded("gh_***")),
    (("xox",), re.compile(r"xox[abposr]-[A-Za-z0-9-]{10,}"), _bounded("xox-***")),
    (("AIza",), re.compile(r"AIza[0-9A-Za-z_\-]{30,}"), _bounded("AIza***")),
    (("hf_",), re.compile(r"hf_[A-Za-z0-9]{20,}"), _bounded("hf_***")),
    (("://",), re.compile(r"://([^:/\s@\"']+):[^@\s/\"']+@"), r"://\1:***@"),
)
# matched case-insensitively: (lower-case substrings, pattern, replacement)
_UNCASED: tuple[tuple[tuple[str, ...], re.Pattern[str], Any], ...] = (
    (("bearer",), re.compile(r"(?i)(bearer)\s+[A-Za-z0-9_\-\.=:/+]{8,}"), r"\1 ***"),
    (
        ("key", "secret", "passw", "token"),
        re.compile(
            r"(?i)(api[_-]?key|apikey|secret|password|passwd|access[_-]?token)"
            r"(\"?\s*[:=]\s*\"?)([^\s\"',;&]{4,})"
        ),
        r"\1\2***",
    ),
)

MaskHook = Callable[[str], str]


def mask_secrets(text: str) -> tuple[str, int]:
    """Replace secrets in ``text``; returns the masked text and how many were replaced."""
    total = 0
    for needles, pattern, repl in _CASED:
        for needle in needles:
            if needle in text:
                if callable(repl):
                    before = text
                    text = pattern.sub(repl, text)
                    if text != before:
                        total += _count_changes(pattern, before)
                else:
                    text, n = pattern.subn(repl, text)
                    total += n
                break
    low: str | None = None
    for needles, pattern, repl in _UNCASED:
        if low is None:
            low = text.lower()
        for needle in needles:
            if needle in low:
                text, n = pattern.subn(repl, text)
                total += n
                if n:
                    low = None
                break
    return text, total


# Content values masked when they were recorded (``content_value``), so the store exporter's last
# line of defence need not scan them again. Keyed by id() and checked by identity (the entry holds the
# string itself, so its id cannot be reused while listed); bounded in count and characters.
_PREMASKED: dict[int, str] = {}
_premasked_chars = 0
_PREMASKED_MIN = 256  # shorter values are cheaper to rescan than to track
# The entries are the very strings the queued spans hold (no copies): the caps only bound what spans
# dropped before export leave behind. They must cover the export queue's backlog under load, or every
# evicted value is scanned again by the exporter, which then falls further behind (issue 24: at 5,000
# 5 KB spans/s an 8M-character cap covered 0.3 s and most values were rescanned).
_PREMASKED_MAX_CHARS = 128_000_000
_PREMASKED_MAX_ITEMS = 131_072
_premasked_lock = threading.Lock()


def note_masked(text: str) -> None:
    """Remember that ``text`` (this very object) has been through :func:`mask_secrets`."""
    global _premasked_chars
    if len(text) < _PREMASKED_MIN:
        return
    with _premasked_lock:
        key = id(text)
        if key in _PREMASKED:
            return
        _PREMASKED[key] = text
        _premasked_chars += len(text)
        while _premasked_chars > _PREMASKED_MAX_CHARS or len(_PREMASKED) > _PREMASKED_MAX_ITEMS:
            old = _PREMASKED.pop(next(iter(_PREMASKED)))
            _premasked_chars -= len(old)


def take_masked(text: str) -> bool:
    """True (and forget it) when ``text`` is a value :func:`note_masked` saw."""
    global _premasked_chars
    if len(text) < _PREMASKED_MIN or _PREMASKED.get(id(text)) is not text:
        return False
    with _premasked_lock:
        if _PREMASKED.get(id(text)) is text:
            del _PREMASKED[id(text)]
            _premasked_chars -= len(text)
    return True


def _count_changes(pattern: re.Pattern[str], text: str) -> int:
    """How many matches of ``pattern`` in ``text`` are real secrets (start at a word boundary)."""
    n = 0
    for m in pattern.finditer(text):
        i = m.start()
        if i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"):
            n += 1
    return n


def _secret_hint(text: str) -> bool:
    """Cheap test: could ``text`` hold a secret at all?"""
    for needles, _p, _r in _CASED:
        for needle in needles:
            if needle in text:
                return True
    low = text.lower()
    return any(n in low for needles, _p, _r in _UNCASED for n in needles)


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
