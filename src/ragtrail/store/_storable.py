"""Making span rows storable before they are written, and telling data errors from transient ones.

A span row (``SPAN_COLUMNS`` order) comes from the store exporter or the OTLP receiver. Most rows are
fine and pass :func:`_row_ok` (a few type and range tests). The others are repaired by
:func:`storable_row`: a promoted column whose value cannot be stored (an integer outside int64, NaN or
infinity, a NUL character, a wrong type) is left empty and the raw value is kept, as text, in the
attributes JSON under ``ragtrail.invalid`` (the original attribute stays where it was).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from typing import Any

from ragtrail import semconv

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
# column positions (SPAN_COLUMNS)
_TRACE, _SPAN, _PARENT, _NAME, _KIND, _START, _END, _DUR = 0, 1, 2, 3, 4, 5, 6, 7
_STATUS, _STATUS_MSG, _MODEL, _IN, _OUT, _COST, _PROJECT, _ATTRS, _EVENTS, _RESOURCE = range(8, 18)
_CACHED = 24  # cached_input_tokens (migration 13): the one integer column after the first 18
_TEXT_COLS = (_TRACE, _SPAN, _PARENT, _NAME, _KIND, _STATUS, _STATUS_MSG, _MODEL, _PROJECT, _ATTRS, _EVENTS, _RESOURCE)
_NOT_NULL_TEXT = {_TRACE: "0" * 32, _SPAN: "0" * 16, _NAME: ""}
_COL_NAMES = (
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_time_ns", "end_time_ns", "duration_ms",
    "status", "status_message", "model", "input_tokens", "output_tokens", "cost_usd", "project",
    "attributes", "events", "resource", "session_id", "user_id", "span_kind", "links", "scope_name",
    "scope_version", "cached_input_tokens",
)  # fmt: skip
_WIDTH = 18  # the first 18 columns have the types below; later columns are nullable text, except _CACHED
_TEXT_MAX_CHARS = 64 * 1024 * 1024  # far above any cap: a guard against a runaway value, not a limit


def _int_ok(v: Any) -> bool:
    return type(v) is int and _I64_MIN <= v <= _I64_MAX


def _row_ok(r: Sequence[Any]) -> bool:
    """Cheap test: can ``r`` be written as it is? (types, int64 range, finite floats, no NUL)"""
    if len(r) < _WIDTH or not _int_ok(r[_START]) or not _int_ok(r[_END]):
        return False
    for i in (_IN, _OUT):
        v = r[i]
        if v is not None and not _int_ok(v):
            return False
    for i in (_DUR, _COST):
        v = r[i]
        if v is not None and not ((type(v) is float and math.isfinite(v)) or _int_ok(v)):
            return False
    for i in _TEXT_COLS:
        v = r[i]
        if v is None:
            if i in _NOT_NULL_TEXT:
                return False
            continue
        if type(v) is not str or "\x00" in v:
            return False
    for i in range(_WIDTH, len(r)):
        v = r[i]
        if v is not None and (not _int_ok(v) if i == _CACHED else (type(v) is not str or "\x00" in v)):
            return False
    return True


def _clean_text(v: str, deep: bool) -> str:
    if "\x00" in v:
        v = v.replace("\x00", "\ufffd")
    if deep:  # lone surrogates cannot be encoded as UTF-8 by either driver
        v = v.encode("utf-8", "replace").decode("utf-8") if not v.isascii() else v
        if len(v) > _TEXT_MAX_CHARS:
            v = v[:_TEXT_MAX_CHARS]
    return v


def _as_text(v: Any) -> str:
    try:
        return v if isinstance(v, str) else json.dumps(v, default=str, ensure_ascii=False)
    except Exception:
        return f"<{type(v).__name__}>"


def storable_row(row: Sequence[Any], deep: bool = False) -> tuple[tuple[Any, ...], list[str]]:
    """``row`` with every value storable, and the names of the promoted columns that were emptied.

    ``deep`` also replaces characters that cannot be encoded (lone surrogates) in every text column.
    Never raises.
    """
    r = list(row) + [None] * (_WIDTH - len(row))
    invalid: dict[str, str] = {}
    for i in (_START, _END):
        v = r[i]
        if not _int_ok(v):
            invalid[_COL_NAMES[i]] = _as_text(v)[:64]
            r[i] = None
    if r[_START] is None:
        r[_START] = r[_END] if r[_END] is not None else 0
    if r[_END] is None:
        r[_END] = r[_START]
    if _COL_NAMES[_START] in invalid or _COL_NAMES[_END] in invalid or not _float_ok(r[_DUR]):
        r[_DUR] = (r[_END] - r[_START]) / 1e6
    for i in (_IN, _OUT):
        v = r[i]
        if v is not None and not _int_ok(v):
            invalid[_COL_NAMES[i]] = _as_text(v)[:64]
            r[i] = None
    if len(r) > _CACHED and r[_CACHED] is not None:
        v = r[_CACHED]
        c = count_or_none(v)
        if c is None:
            invalid[_COL_NAMES[_CACHED]] = _as_text(v)[:64]
        r[_CACHED] = c
    v = r[_COST]
    if v is not None and not _float_ok(v):
        invalid[_COL_NAMES[_COST]] = _as_text(v)[:64]
        r[_COST] = None
    for i in (*_TEXT_COLS, *(i for i in range(_WIDTH, len(r)) if i != _CACHED)):
        v = r[i]
        if v is None:
            if i in _NOT_NULL_TEXT:
                r[i] = _NOT_NULL_TEXT[i]
            continue
        if type(v) is not str:
            if i in (_ATTRS, _EVENTS, _RESOURCE) or i in _NOT_NULL_TEXT:
                v = _as_text(v)
            else:  # a promoted text column with a list, a number …: left empty, the raw value marked
                invalid[_COL_NAMES[i] if i < len(_COL_NAMES) else f"column_{i}"] = _as_text(v)[:256]
                r[i] = None
                continue
        r[i] = _clean_text(v, deep)
    if invalid:
        r[_ATTRS] = _mark_invalid(r[_ATTRS], invalid)
    return tuple(r), sorted(invalid)


def count_or_none(v: Any) -> int | None:
    """A token count as a storable int: an int within int64, or a float holding a whole number; None
    for anything else (text, fractions, booleans, values beyond 64 bits). Never raises."""
    if type(v) is int:
        return v if _I64_MIN <= v <= _I64_MAX else None
    if type(v) is float and math.isfinite(v) and v.is_integer() and abs(v) < 2**63:
        return int(v)
    return None


def cached_tokens_of_json(attrs_json: Any) -> int | None:
    """The cached-input-token count in an attributes JSON text (for rows given without the
    ``cached_input_tokens`` column, as migration 13 reads the rows already stored). Never raises."""
    key = semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS
    if type(attrs_json) is not str or key not in attrs_json:
        return None
    try:
        d = json.loads(attrs_json)
    except (ValueError, RecursionError):
        return None
    return count_or_none(d.get(key)) if type(d) is dict else None


def _float_ok(v: Any) -> bool:
    if v is None:
        return True
    if type(v) is float:
        return math.isfinite(v)
    return _int_ok(v) and abs(v) < 2**53


def _mark_invalid(attrs_json: Any, invalid: dict[str, str]) -> str:
    try:
        attrs = json.loads(attrs_json) if isinstance(attrs_json, str) and attrs_json else {}
        if not isinstance(attrs, dict):
            attrs = {"attributes": attrs}
    except ValueError:
        attrs = {"attributes": attrs_json}
    attrs[semconv.INVALID] = invalid
    return _clean_text(json.dumps(attrs, ensure_ascii=False, default=str), True)


def reduced_row(row: Sequence[Any], reason: str) -> tuple[Any, ...]:
    """The smallest form of a span the store can take: ids, name, times and why it was reduced."""
    r = storable_row(row, deep=True)[0]
    name = r[_NAME] if isinstance(r[_NAME], str) else ""
    attrs = json.dumps({semconv.REJECTED_REASON: reason}, ensure_ascii=True)
    return (
        r[_TRACE], r[_SPAN], r[_PARENT], name.encode("ascii", "replace").decode()[:256], None, r[_START], r[_END],
        r[_DUR], "UNSET", None, None, None, None, None,
        r[_PROJECT].encode("ascii", "replace").decode()[:256] if isinstance(r[_PROJECT], str) else None,
        attrs, None, None, *([None] * (len(r) - _WIDTH)),
    )  # fmt: skip


def _reason(exc: BaseException) -> str:
    """A short, stable reason for a refused row: the driver's error class."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    return type(cause).__name__


def _is_transient(exc: BaseException) -> bool:
    """Whether a failed write may succeed as it is when retried later (server down, disk full, lock),
    rather than failing because of what is in the rows."""
    cause: BaseException | None = exc
    if exc.__class__.__name__ == "StoreError":
        cause = exc.__cause__
        if cause is None:
            return True  # our own errors: the file is gone, the connection cannot be opened
    if isinstance(cause, (OverflowError, TypeError, ValueError, UnicodeError)):
        return False
    if isinstance(cause, sqlite3.Error):
        if "closed" in str(cause):
            return True
        return not isinstance(
            cause, (sqlite3.DataError, sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError)
        )
    mod = type(cause).__module__ or ""
    if mod.startswith("psycopg"):
        names = {c.__name__ for c in type(cause).__mro__}
        return not names & {"DataError", "IntegrityError"}
    return True
