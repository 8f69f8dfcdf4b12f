"""Turning arbitrary Python values into bounded, masked JSON text for span attributes.

* Never raises: objects, bytes, numpy arrays, cycles all become a readable representation.
* Bounded: the result is at most ``max_bytes`` UTF-8 bytes *and still valid JSON*; a value that had to
  be cut is reported so the caller can add the attribute name to ``ragtrail.truncated``.
* Masked: API keys, bearer tokens and passwords in URLs are replaced before anything is stored, then a
  user ``mask`` hook (if configured) gets the final say.

The secret rules and their scan live in :mod:`ragtrail.tracing._secrets`, the note of values masked
when recorded in :mod:`ragtrail.tracing._premasked`; this module holds the serialisation and the one
sanitising step (:class:`Sanitizer`, the byte cap, ``sanitize_attributes``, ``mask_value``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ragtrail import semconv
from ragtrail._log import warn_once
from ragtrail.tracing._secrets import _CLEAN, _CLEAN_LEN, _SECRET_NAME, _remember_clean, mask_secrets

DEFAULT_MAX_BYTES = 32_768
_MAX_ITEMS = 200
_MAX_DEPTH = 12
_TRUNC_MARK = "…[truncated]"

MaskHook = Callable[[str], str]


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


# --------------------------------------------------------------------------- the sanitising step
# One step for everything ragtrail writes: spans made in-process (the store exporter), spans received
# over OTLP (``ragtrail serve``) and eval data. Secrets are masked first, then the user's ``mask`` hook
# runs, then the byte cap cuts: a secret is never half-kept by a cut.

_MASK_WINDOW = 8_192  # characters past the cap masked before cutting: longer than any key, PEM included
_NAME_MAX_CHARS = 1_024


@dataclass(frozen=True)
class Sanitizer:
    """What the sanitising step does: mask secrets (``mask_secrets``), run the user's ``hook``, cap
    each text at ``max_bytes`` UTF-8 bytes."""

    mask_secrets: bool = True
    hook: MaskHook | None = None
    max_bytes: int = DEFAULT_MAX_BYTES

    def text(self, s: str) -> tuple[str, int]:
        """``s`` masked (secrets, then the hook), uncapped; returns (text, secrets masked)."""
        n = 0
        if self.mask_secrets:
            s, n = mask_secrets(s)
        if self.hook is not None:
            try:
                out = self.hook(s)
                s = out if isinstance(out, str) else "<masked: mask hook returned no str>"
            except Exception:
                warn_once("mask-hook", "ragtrail: the user mask hook raised; the value was dropped", exc_info=True)
                s = "<masked: mask hook failed>"
        return s, n

    def capped(self, s: str, max_bytes: int | None = None) -> tuple[str, bool, int]:
        """``s`` masked, then cut to the byte cap: (text, truncated, secrets masked)."""
        cap = self.max_bytes if max_bytes is None else max_bytes
        if len(s) * 4 <= cap or len(s.encode("utf-8", "surrogatepass")) <= cap:
            out, n = self.text(s)
            if len(out) * 4 <= cap or len(out.encode("utf-8", "surrogatepass")) <= cap:
                return out, False, n
            return _cut_str(out, cap - _TRUNC_BYTES), True, n
        out, n = self.text(s[: cap + _MASK_WINDOW])  # mask what can be kept, and a margin past the cut
        return _cut_str(out, cap - _TRUNC_BYTES), True, n


_TRUNC_BYTES = len(_TRUNC_MARK.encode("utf-8"))
DEFAULT_SANITIZER = Sanitizer()


def use_config(cfg: Any) -> None:
    """Called by ``ragtrail.init()`` / ``shutdown()`` with the active configuration (or None): the
    masking settings are read from it (``mask_secrets``, ``mask``, ``max_attribute_bytes``)."""
    global _active_cfg
    _active_cfg = cfg


def active_config() -> Any:
    """The configuration ``ragtrail.init()`` pushed (None before it and after ``shutdown()``)."""
    return _active_cfg


def active_sanitizer(mask: bool = True) -> Sanitizer:
    """The sanitiser of the active ``ragtrail.init()`` configuration (defaults before it)."""
    global _cached
    cfg = _active_cfg
    if cfg is None:
        return DEFAULT_SANITIZER if mask else _NO_MASK
    hit = _cached
    if hit[0] is cfg and hit[1] == (mask, cfg.mask_secrets, cfg.mask, cfg.max_attribute_bytes):
        return hit[2]
    key = (mask, cfg.mask_secrets, cfg.mask, cfg.max_attribute_bytes)
    pol = Sanitizer(mask_secrets=mask and cfg.mask_secrets, hook=cfg.mask, max_bytes=cfg.max_attribute_bytes)
    _cached = (cfg, key, pol)
    return pol


_active_cfg: Any = None


def _nothing_watched() -> bool:
    return False


# Whether the eval harness reads some trace's spans in-process now: set by ragtrail.tracing._collector when
# it is imported (kept here, a module below both, so that ragtrail.init's config needs no import of it).
collector_watching: Callable[[], bool] = _nothing_watched
_NO_MASK = Sanitizer(mask_secrets=False)
_cached: tuple[Any, Any, Sanitizer] = (None, None, DEFAULT_SANITIZER)


def sanitize_attributes(
    attrs: Mapping[str, Any], policy: Sanitizer, skip: set[int] | None = None, name: str | None = None
) -> tuple[dict[str, Any] | None, list[str], int]:
    """The sanitising step over one attribute mapping: returns (new mapping or None when nothing
    changes, names of attributes the cap truncated, secrets masked).

    ``skip`` holds the ids of text values already sanitised when recorded (``set_content``): they
    are neither scanned nor changed again. ``name`` (the span's) is searched with the attributes, so
    that one search covers a span; when it returns None, the name holds no secret either.
    Attributes named like a credential (``db_password``, ``x-api-key``, ``authorization``) are
    replaced whole.
    """
    cap = policy.max_bytes
    work = policy.hook is not None
    if not work:
        for v in attrs.values():
            if type(v) is str and len(v) * 4 > cap and not (skip and id(v) in skip):
                work = True
                break
    if not work and policy.mask_secrets:
        work = _holds_secret(attrs, skip, name)
    if not work:
        return None, [], 0
    out: dict[str, Any] = {}
    truncated: list[str] = []
    total = 0
    for k, v in attrs.items():
        if skip and type(v) is str and id(v) in skip:
            out[k] = v
            continue
        if policy.mask_secrets and isinstance(k, str) and _SECRET_NAME.search(k) and v not in (None, "", True, False):
            out[k] = "***"
            total += 1
            continue
        v2, cut, n = _sanitize_value(v, policy, cap)
        out[k] = v2
        total += n
        if cut:
            truncated.append(str(k))
    return out, truncated, total


def _holds_secret(attrs: Mapping[str, Any], skip: set[int] | None, name: str | None) -> bool:
    """Whether the attributes (or ``name``) hold a secret: one search over the texts not seen clean
    before, values masked when recorded left out; a credential-named attribute counts at once."""
    clean = _CLEAN
    novel: list[str] = []
    for k, v in attrs.items():
        if k not in clean:
            if type(k) is not str:
                k = str(k)
            if _SECRET_NAME.search(k) and v not in (None, "", True, False):
                return True
            novel.append(k)
        if type(v) is str:
            if not ((skip and id(v) in skip) or (len(v) <= _CLEAN_LEN and v in clean)):
                novel.append(v)
        elif isinstance(v, (tuple, list)):
            novel.extend(x if isinstance(x, str) else str(x) for x in v if not (type(x) is str and x in clean))
        elif v is not None and not isinstance(v, (int, float)):
            novel.append(str(v))
    if name is not None and not (len(name) <= _CLEAN_LEN and name in clean):
        novel.append(name)
    if not novel:
        return False
    if mask_secrets("\x00".join(novel))[1]:
        return True
    _remember_clean(novel)
    return False


def _sanitize_value(v: Any, policy: Sanitizer, cap: int) -> tuple[Any, bool, int]:
    if type(v) is str or isinstance(v, str):
        return policy.capped(str(v), cap)
    if isinstance(v, (tuple, list)):
        items: list[Any] = []
        cut_any = False
        total = 0
        for x in v:
            x2, cut, n = _sanitize_value(x, policy, cap)
            items.append(x2)
            cut_any = cut_any or cut
            total += n
        return items, cut_any, total
    if isinstance(v, Mapping):
        new, cut_names, n = sanitize_attributes({str(a): b for a, b in v.items()}, policy)
        return (dict(v) if new is None else new), bool(cut_names), n
    return v, False, 0


def sanitize_name(name: Any, policy: Sanitizer) -> str:
    """A span or event name through the sanitising step (masked, at most 1,024 characters)."""
    s = name if isinstance(name, str) else str(name)
    if len(s) > _NAME_MAX_CHARS:
        s = s[:_NAME_MAX_CHARS] + _TRUNC_MARK
    return policy.text(s)[0] if (policy.mask_secrets or policy.hook is not None) else s


def sanitize_events(events: list[dict[str, Any]], policy: Sanitizer) -> list[dict[str, Any]] | None:
    """Events as ``{"name", "time_ns", "attributes"}`` dicts through the sanitising step; None when
    nothing changes."""
    changed = False
    out: list[dict[str, Any]] = []
    for e in events:
        name = e.get("name") or ""
        new_name = sanitize_name(name, policy)
        attrs, _cut, _n = sanitize_attributes(e.get("attributes") or {}, policy)
        if attrs is not None or new_name != name:
            changed = True
            e = {**e, "name": new_name, "attributes": attrs if attrs is not None else e.get("attributes") or {}}
        out.append(e)
    return out if changed else None


def mask_value(obj: Any, policy: Sanitizer | None = None) -> Any:
    """``obj`` with every text in it through the masking step (secrets, then the ``mask`` hook): strings,
    and the strings inside lists, tuples and dicts (keys named like a credential get ``***``). Other
    values are returned as they are. Uncapped: for eval data (examples, outputs, errors, reasons,
    details, judge cache, run configs) and reports, which are written whole. Never raises."""
    p = policy if policy is not None else active_sanitizer()
    if not p.mask_secrets and p.hook is None:
        return obj
    try:
        return _mask_obj(obj, p, 0)
    except Exception:  # pragma: no cover - masking must never break a write
        warn_once("mask-value", "ragtrail: could not mask a value; it was replaced", exc_info=True)
        return "<masked: unmaskable value>"


def _mask_obj(obj: Any, p: Sanitizer, depth: int) -> Any:
    if isinstance(obj, str):
        return p.text(obj)[0]
    if depth > 64:
        return obj
    if isinstance(obj, Mapping):
        out: dict[Any, Any] = {}
        for k, v in obj.items():
            if p.mask_secrets and isinstance(k, str) and _SECRET_NAME.search(k) and isinstance(v, (str, int, float)):
                out[k] = "***" if v not in ("", None) and not isinstance(v, bool) else v
            else:
                out[k] = _mask_obj(v, p, depth + 1)
        return out
    if isinstance(obj, list):
        return [_mask_obj(v, p, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_mask_obj(v, p, depth + 1) for v in obj)
    return obj


def mark_sanitized(clean: dict[str, Any], original: Mapping[str, Any], cut: list[str], n: int) -> dict[str, Any]:
    """``clean`` with the markers of what the sanitising step did: the names the cap truncated added to
    ``ragtrail.truncated`` and the secrets masked added to ``ragtrail.masked``."""
    if cut:
        prev = original.get(semconv.TRUNCATED)
        names = [str(x) for x in prev] if isinstance(prev, (list, tuple)) else []
        clean[semconv.TRUNCATED] = names + [c for c in cut if c not in names]
    if n:
        prev_n = original.get(semconv.MASKED)
        clean[semconv.MASKED] = (prev_n if type(prev_n) is int else 0) + n
    return clean
