"""What counts as a secret, and the scan that masks it (``mask_secrets``).

The rules (credential families, ``Authorization`` headers, ``key=value`` pairs named like a credential,
passwords in URLs), the needle-guided scan that applies them, the cache of short texts found clean, and
``_SECRET_NAME`` (attribute names whose whole value is a credential). The sanitising step that runs the
scan on span attributes, with the user's ``mask`` hook and the byte cap, is :mod:`ragtrail.tracing._content`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

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


# With the optional ``ahocorasick-rs`` (extra ``ragtrail[fast]``), a long text is searched for every
# needle in one pass instead of one substring pass per needle (~28): 4-5x less CPU on a 5 KB passage
# (issue 24). Same rules, same order, same result; only which rules run is found faster.
_AC_MIN = 512  # shorter texts: the per-needle passes are as cheap as the automaton's call
try:
    import ahocorasick_rs as _ac

    _AC_CASED: Any = _ac.BytesAhoCorasick([n.encode() for n in _CASED_NEEDLES])
    _AC_UNCASED: Any = _ac.BytesAhoCorasick([n.encode() for n in _UNCASED_NEEDLES])
except Exception:
    _AC_CASED = _AC_UNCASED = None


def _rules_in(scan: str, ac: Any, flat: tuple[tuple[str, int], ...], needles: tuple[str, ...]) -> list[int]:
    """Indices, in rule order, of the rules one of whose needles occurs in ``scan``: one automaton pass
    for a long text when ``ahocorasick-rs`` is there, else one substring test per needle (iterated in C
    first: most texts hold none)."""
    if ac is not None and len(scan) >= _AC_MIN:
        found = ac.find_matches_as_indexes(scan.encode("utf-8", "surrogatepass"), overlapping=True)
        return sorted({flat[k][1] for k, _s, _e in found})
    if not any(map(scan.__contains__, needles)):
        return []
    return list(dict.fromkeys(i for needle, i in flat if needle in scan))


def _mask_all(text: str) -> tuple[str, int]:
    total = 0
    for i in _rules_in(text, _AC_CASED, _CASED_FLAT, _CASED_NEEDLES):
        rule = _CASED[i]
        text, n = _sub_at(text, text, rule[0], rule[1], rule[2])
        total += n
    low = text.lower()
    if len(low) != len(text):  # a few characters change length when lower-cased: positions differ
        return _mask_uncased_by_regex(text, total)
    for i in _rules_in(low, _AC_UNCASED, _UNCASED_FLAT, _UNCASED_NEEDLES):
        rule = _UNCASED[i]
        text, n = _sub_at(text, low, rule[0], rule[1], rule[2])
        if n:
            total += n
            low = text.lower()
    return text, total


def _mask_uncased_by_regex(text: str, total: int) -> tuple[str, int]:
    """The uncased rules as whole-text regex passes (a text whose lower-casing changes its length)."""
    for _needles, pattern, repl in _UNCASED:
        before = text
        text = pattern.sub(repl, text)
        total += 0 if text == before else sum(1 for _ in pattern.finditer(before))
    return text, total


# attribute names whose whole value is a credential
_SECRET_NAME = re.compile(r"(?i)(?:" + _CREDENTIAL_NAME_RE + r"|authorization|cookie|set-cookie)$")

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
