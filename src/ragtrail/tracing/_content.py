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
from dataclasses import dataclass
from typing import Any

from ragtrail import semconv
from ragtrail._log import warn_once

DEFAULT_MAX_BYTES = 32_768
_MAX_ITEMS = 200
_MAX_DEPTH = 12
_TRUNC_MARK = "…[truncated]"

# Secrets: the credential families of a mainstream secret scanner's default rules that show up in LLM
# app text. Speed matters (this runs on every content value and on every stored span): each pattern
# runs only when a plain substring test (C speed) says a candidate is present, and most start with a
# literal so the regex engine can jump to candidates. Word boundaries are checked in the replacement
# function instead of with a leading \b, which would make the engine try every position.


def _bounded(repl: str) -> Callable[[re.Match[str]], str]:
    def sub(m: re.Match[str]) -> str:
        i = m.start()
        if i > 0 and (m.string[i - 1].isalnum() or m.string[i - 1] == "_"):
            return m.group(0)  # inside a longer word (task-…, MASIA…): not a key
        return repl

    return sub


def _keep_quote(m: re.Match[str]) -> str:
    """``key: "value"`` → ``key: "***``: the key, the separator and the value's opening quote stay; a bare
    value after a quoted key (``"api_key":123`` in JSON) becomes a quoted ``"***"`` so JSON stays valid."""
    k, v = m.group("k"), m.group("v")
    if v.startswith(('\\"', "\\'")):
        return k + v[:2] + "***"
    if v[:1] in "\"'":
        return k + v[:1] + "***"
    if '\\"' in k:
        return k + '\\"***\\"'
    if '"' in k or "'" in k:
        return k + '"***"'
    return k + "***"


# key names whose value is a secret, matched where the name ends (``db_password``, ``aws_secret_access_key``,
# ``GITHUB_TOKEN``, ``x-api-key``, ``AccountKey``); ``input_tokens`` does not end with one
_CREDENTIAL_NAME_RE = (
    r"(?:passw(?:or)?d|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key"
    r"|account[_-]?key|credentials?|passphrase)"
)
# its value: a JSON / Python-repr / escaped-JSON quoted string (spaces allowed), or a bare word
_CREDENTIAL_VALUE_RE = (
    r"""(?P<v>"(?:[^"\\\r\n]|\\.)+|'(?:[^'\\\r\n]|\\.)+|\\["'](?:[^"'\\\r\n]|\\[^"'])+|[^\s"'\\,;&)}\]\[{]{3,})"""
)

# (needles, pattern, replacement): the pattern is tried only where a needle occurs, anchored there
# (``pattern.match(text, i)``), so the cost of a rule is a few C-speed substring scans, not a regex pass
_CASED: tuple[tuple[tuple[Any, ...], re.Pattern[str], Any], ...] = (
    # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-), OpenRouter (sk-or-), DeepSeek
    (("sk-",), re.compile(r"sk-[A-Za-z0-9_\-]{16,}"), _bounded("sk-***")),
    # AWS access key ids
    (
        (("IA", 2),),
        re.compile(r"A(?:KIA|SIA|BIA)[A-Z0-9]{16}(?![A-Za-z0-9])"),
        _bounded("AKIA***"),
    ),
    # GitHub: classic (ghp_, gho_, ghu_, ghs_, ghr_) and fine-grained (github_pat_)
    (
        ("gh", ("_pat_", 6)),
        re.compile(r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"),
        _bounded("gh_***"),
    ),
    # GitLab personal / pipeline / deploy / runner / … tokens
    (("gl",), re.compile(r"gl(?:pat|ptt|dt|rt|cbt|ft|imt|oas|soat|agent)-[A-Za-z0-9_\-]{20,}"), _bounded("gl-***")),
    # Slack bot / user / app tokens and incoming webhooks
    (("xox", ("p-", 3)), re.compile(r"(?:xox[abposre]|xapp)-[A-Za-z0-9-]{10,}"), _bounded("xox-***")),
    (
        ("hooks.slack.com/",),
        re.compile(r"hooks\.slack\.com/(?:services|workflows)/[A-Za-z0-9/_\-]+"),
        "hooks.slack.com/***",
    ),
    # Stripe secret and restricted keys (live and test), Groq keys
    (
        (("k_", 1), ("k_", 2)),
        re.compile(r"(?:[sr]k_(?:live|test)_[A-Za-z0-9]{10,}|gsk_[A-Za-z0-9_\-]{20,})"),
        _bounded("sk_***"),
    ),
    # Google API keys and OAuth access tokens
    (("AIza",), re.compile(r"AIza[0-9A-Za-z_\-]{30,}"), _bounded("AIza***")),
    (("ya29.",), re.compile(r"ya29\.[0-9A-Za-z_\-]{20,}"), _bounded("ya29.***")),
    # Hugging Face tokens
    (("hf_",), re.compile(r"hf_[A-Za-z0-9]{20,}"), _bounded("hf_***")),
    # other model providers with a prefix: Replicate, Perplexity, xAI, NVIDIA (needles at the dash)
    (
        ("r8_", ("i-", 2), ("i-", 4), ("x-", 3)),
        re.compile(r"(?:r8_|pplx-|xai-|nvapi-)[A-Za-z0-9_\-]{20,}"),
        _bounded("key-***"),
    ),
    # JSON Web Tokens (header.payload.signature, the first two base64url JSON objects)
    (("eyJ",), re.compile(r"eyJ[A-Za-z0-9_\-]{6,}\.eyJ[A-Za-z0-9_\-]{6,}\.[A-Za-z0-9_\-]*"), _bounded("jwt-***")),
    # PEM private keys (to the END line, or to the end of the text when it was cut off)
    (
        ("-----BEGIN",),
        re.compile(
            r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?!\*\*\*)"
            r"(?:.*?-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|(?:[^\"\\]|\\.)*)",
            re.S,
        ),
        "-----BEGIN PRIVATE KEY-----***",
    ),
    # Azure SAS signatures in URLs
    (("sig=",), re.compile(r"(?<=[?&])(sig=)[A-Za-z0-9%+/=]{16,}"), r"\1***"),
    # passwords in URLs of any scheme; the host follows the *last* '@', so passwords holding '@' or
    # '/' are masked whole; ``redis://:pw@host`` (no user) too
    (("://",), re.compile(r"://([^:/\s@\"'<>\\]*):([^\s\"'<>]+)@"), r"://\1:***@"),
)
# matched case-insensitively, needles searched in the lower-cased text
_UNCASED: tuple[tuple[tuple[Any, ...], re.Pattern[str], Any], ...] = (
    # Authorization headers: Bearer, Basic, token, Digest … (and a bare credential after the colon)
    (
        ("authorization",),
        re.compile(
            r"""(?i)(authorization\\?["']?\s*[:=]\s*\\?["']?\s*(?:(?:bearer|basic|token|digest|negotiate)\s+)?)"""
            r"""(?!\*\*\*)(?!(?:bearer|basic|token|digest|negotiate)\s+\*\*\*)[^\s"'\\,;]{4,}"""
        ),
        r"\1***",
    ),
    (("bearer",), re.compile(r"(?i)(bearer)\s+(?!\*\*\*)[A-Za-z0-9_\-\.=:/+~]{8,}"), r"\1 ***"),
    # key-value pairs: k=v, k: v, "k": "v", 'k': 'v', and the same inside escaped JSON; a needle points
    # at where the key name starts ("key" is 3 to 8 characters into apikey, api_key, access_key …)
    (
        ("passw", "passp", "pwd", "secret", "token", "credential", *(("key", n) for n in (3, 4, 6, 7, 8))),
        re.compile(
            r"""(?i)(?P<k>"""
            + _CREDENTIAL_NAME_RE
            + r"""\\?["']?\s*[:=]\s*)(?!\\?["']?\*\*\*)"""
            + _CREDENTIAL_VALUE_RE
        ),
        _keep_quote,
    ),
)

MaskHook = Callable[[str], str]


def _sub_at(text: str, scan: str, needles: tuple[Any, ...], pattern: re.Pattern[str], repl: Any) -> tuple[str, int]:
    """Replace matches of ``pattern`` that start where a needle occurs in ``scan`` (``text`` or its
    lower-cased copy of the same length). A needle is a string (the match starts there) or a
    ``(string, offset)`` pair (the match starts ``offset`` characters before it)."""
    pos: list[int] = []
    for needle in needles:
        if type(needle) is str:
            i = scan.find(needle)
            while i != -1:
                pos.append(i)
                i = scan.find(needle, i + 1)
        else:
            nd, off = needle
            i = scan.find(nd)
            while i != -1:
                if i >= off:
                    pos.append(i - off)
                i = scan.find(nd, i + 1)
    if not pos:
        return text, 0
    if len(pos) > 1:
        pos.sort()
    out: list[str] = []
    last = n = 0
    for i in pos:
        if i < last:
            continue
        m = pattern.match(text, i)
        if m is None:
            continue
        rep = repl(m) if callable(repl) else m.expand(repl)
        if rep == m.group(0):
            continue  # declined (inside a longer word)
        out.append(text[last:i])
        out.append(rep)
        last = m.end()
        n += 1
    if not n:
        return text, 0
    out.append(text[last:])
    return "".join(out), n


def _flat(rules: tuple[tuple[tuple[Any, ...], re.Pattern[str], Any], ...]) -> tuple[tuple[str, int], ...]:
    """(needle text, rule index) pairs, one per distinct needle text of each rule."""
    out: list[tuple[str, int]] = []
    for i, (needles, _p, _r) in enumerate(rules):
        for nd in dict.fromkeys(n if type(n) is str else n[0] for n in needles):
            out.append((nd, i))
    return tuple(out)


_CASED_FLAT = _flat(_CASED)
_UNCASED_FLAT = _flat(_UNCASED)
_CASED_NEEDLES = tuple(n for n, _i in _CASED_FLAT)
_UNCASED_NEEDLES = tuple(n for n, _i in _UNCASED_FLAT)


def mask_secrets(text: str) -> tuple[str, int]:
    """Replace secrets in ``text``; returns the masked text and how many were replaced."""
    short = len(text) <= _CLEAN_LEN
    if short and text in _CLEAN:
        return text, 0
    total = _mask_all(text)
    if short and not total[1]:
        _remember_clean([text])
    return total


def _mask_all(text: str) -> tuple[str, int]:
    total = 0
    # one substring test per needle first, iterated in C: most texts hold none
    hit = -1
    for needle, i in _CASED_FLAT if any(map(text.__contains__, _CASED_NEEDLES)) else ():
        if i != hit and needle in text:
            hit = i
            rule = _CASED[i]
            text, n = _sub_at(text, text, rule[0], rule[1], rule[2])
            total += n
    low = text.lower()
    if len(low) != len(text):  # a few characters change length when lower-cased: positions differ
        for _needles, pattern, repl in _UNCASED:
            before = text
            text = pattern.sub(repl, text)
            total += 0 if text == before else sum(1 for _ in pattern.finditer(before))
        return text, total
    hit = -1
    for needle, i in _UNCASED_FLAT if any(map(low.__contains__, _UNCASED_NEEDLES)) else ():
        if i != hit and needle in low:
            hit = i
            rule = _UNCASED[i]
            text, n = _sub_at(text, low, rule[0], rule[1], rule[2])
            if n:
                total += n
                low = text.lower()
    return text, total


# Content values masked when they were recorded (``content_value``), so the store exporter's last
# line of defence need not scan them again. Keyed by id() and checked by identity (the entry holds the
# string itself, so its id cannot be reused while listed), with a count of the spans that carry it (a
# connector may record the very same text on adjacent spans: a prompt's output is the model's input);
# each span's export takes one. Bounded in count and characters.
_PREMASKED: dict[int, list[Any]] = {}  # id -> [text, spans still to export it]
_premasked_chars = 0
_PREMASKED_MIN = 48  # shorter values are cheaper to rescan than to track
# The entries are the very strings the queued spans hold (no copies): the caps only bound what spans
# dropped before export leave behind. They must cover the export queue's backlog under load, or every
# evicted value is scanned again by the exporter, which then falls further behind (issue 24: at 5,000
# 5 KB spans/s an 8M-character cap covered 0.3 s and most values were rescanned).
_PREMASKED_MAX_CHARS = 128_000_000
_PREMASKED_MAX_ITEMS = 131_072
_premasked_lock = threading.Lock()


def note_masked(text: str) -> None:
    """Remember that ``text`` (this very object) has been through :func:`mask_secrets` and is on one
    more span (call it again for each further span that records the same object)."""
    global _premasked_chars
    if len(text) < _PREMASKED_MIN:
        return
    with _premasked_lock:
        key = id(text)
        entry = _PREMASKED.get(key)
        if entry is not None and entry[0] is text:
            entry[1] += 1
            return
        _PREMASKED[key] = [text, 1]
        _premasked_chars += len(text)
        while _premasked_chars > _PREMASKED_MAX_CHARS or len(_PREMASKED) > _PREMASKED_MAX_ITEMS:
            old = _PREMASKED.pop(next(iter(_PREMASKED)))
            _premasked_chars -= len(old[0])


def take_masked(text: str) -> bool:
    """True when ``text`` is a value :func:`note_masked` saw (one span's claim on it is used up)."""
    global _premasked_chars
    if len(text) < _PREMASKED_MIN:
        return False
    entry = _PREMASKED.get(id(text))
    if entry is None or entry[0] is not text:
        return False
    with _premasked_lock:
        entry = _PREMASKED.get(id(text))
        if entry is None or entry[0] is not text:
            return False
        entry[1] -= 1
        if entry[1] <= 0:
            del _PREMASKED[id(text)]
            _premasked_chars -= len(text)
    return True


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
# attribute names whose whole value is a credential
_SECRET_NAME = re.compile(r"(?i)(?:" + _CREDENTIAL_NAME_RE + r"|authorization|cookie|set-cookie)$")


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


# Short texts known to hold no secret (attribute names, span kinds, model names … repeat on every
# span): not searched again. Bounded; cleared when full.
_CLEAN: dict[str, None] = {}
_CLEAN_LEN = 160
_CLEAN_MAX = 16_384


def _remember_clean(texts: list[str]) -> None:
    if len(_CLEAN) > _CLEAN_MAX:
        _CLEAN.clear()
    for t in texts:
        if len(t) <= _CLEAN_LEN:
            _CLEAN[t] = None


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
