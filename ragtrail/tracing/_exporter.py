"""The store as a plain OpenTelemetry ``SpanExporter`` (driven by the stock BatchSpanProcessor).

It never raises into the application: a failing store is retried a bounded number of times, then the
batch is counted as failed and logged once per kind of failure.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from ragtrail import semconv
from ragtrail._log import warn_once
from ragtrail.store import Store
from ragtrail.tracing._classify import classify
from ragtrail.tracing._content import mask_secrets, take_masked
from ragtrail.tracing._otel_fields import otel_fields, resource_json

_SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY  # type: ignore[attr-defined]
_STATUS = {StatusCode.UNSET: "UNSET", StatusCode.OK: "OK", StatusCode.ERROR: "ERROR"}
_std_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode

try:  # orjson (optional) is ~5x faster; the output is the same compact JSON
    import orjson as _orjson

    _OPTS = _orjson.OPT_NON_STR_KEYS | _orjson.OPT_SERIALIZE_NUMPY

    def _dumps(value: Any) -> str:
        try:
            return _orjson.dumps(value, default=str, option=_OPTS).decode("utf-8")
        except (TypeError, ValueError, OverflowError):  # e.g. ints beyond 64 bits, NaN-free edge cases
            return _std_dumps(value)

except ImportError:  # pragma: no cover - orjson not installed

    def _dumps(value: Any) -> str:
        return _std_dumps(value)


def _attr_dict(span: ReadableSpan) -> Any:
    """The span's attributes as a plain dict without copying (the SDK's BoundedAttributes keeps one)."""
    a = getattr(span, "_attributes", None)
    d = getattr(a, "_dict", None)
    if isinstance(d, dict):
        return d
    return dict(span.attributes or {})


def _attrs_json(attrs: Any) -> str:
    if not attrs:
        return "{}"
    return _dumps(attrs)  # tuples (sequence attributes) serialise as JSON arrays


# The last line of defence before storage: secrets that reached a span without set_content() (an
# attribute set directly, an exception message quoting a connection URL). One cheap search of the
# serialised text; only on a hit are the values masked one by one (so the JSON stays valid).
_GUARD_NEEDLES = (
    "sk-", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "AIza", "hf_", "://", "earer", "EARER",
)  # fmt: skip  # precise needles: a hit here re-serialises every value, so false hits must be rare


def _guard_hit(text: str) -> bool:
    """Could ``text`` hold a key, token or URL password? (substring tests only: C speed)"""
    for needle in _GUARD_NEEDLES:
        if needle in text:
            return True
    return False


def _attrs_need_masking(attrs: Any, attrs_json: str) -> bool:
    """The guard over a span's attributes. Long content values that were masked when recorded
    (``set_content``) are not searched again: only the keys and the other values are."""
    pre = {id(v) for v in attrs.values() if type(v) is str and take_masked(v)}
    if not pre:
        return _guard_hit(attrs_json)
    parts: list[str] = list(attrs)
    for v in attrs.values():
        if type(v) is str:
            if id(v) not in pre:
                parts.append(v)
        elif isinstance(v, (tuple, list)):
            parts.extend(x for x in v if isinstance(x, str))
        elif not isinstance(v, (int, float, bool)) and v is not None:
            parts.append(str(v))
    return _guard_hit("\x00".join(parts))


def _mask_value(v: Any) -> Any:
    if isinstance(v, str):
        return mask_secrets(v)[0]
    if isinstance(v, (tuple, list)):
        return [mask_secrets(x)[0] if isinstance(x, str) else x for x in v]
    if isinstance(v, dict):
        return {k: _mask_value(x) for k, x in v.items()}
    return v


def span_to_row(span: ReadableSpan, project: str, *, mask: bool = True) -> tuple[Any, ...]:
    """One store row (SPAN_COLUMNS order) from an ended SDK span.

    With ``mask`` (the default), secrets anywhere in the attributes, events and status message are
    masked, whichever way they got onto the span.
    """
    ctx = span.context
    attrs = _attr_dict(span)
    if _KIND not in attrs:  # a span from another instrumentation: kind, tokens, cost (issue 21)
        attrs = classify(attrs) or attrs
    get = attrs.get
    parent = span.parent
    start = span.start_time or 0
    end = span.end_time or start
    events = getattr(span, "_events", None)
    if events is None:
        events = span.events
    ev_json = None
    if events:
        ev_json = _dumps(
            [{"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})} for e in events]
        )
    model = get(_RESPONSE_MODEL) or get(_REQUEST_MODEL) or get(_EMBEDDING_MODEL)
    status = span.status
    code = status.status_code
    attrs_json = _attrs_json(attrs)
    description = status.description
    if mask:
        if _attrs_need_masking(attrs, attrs_json):
            attrs_json = _attrs_json({k: _mask_value(v) for k, v in attrs.items()})
        if ev_json is not None and _guard_hit(ev_json):
            ev_json = _dumps(
                [{"name": e.name, "time_ns": e.timestamp, "attributes": _mask_value(dict(e.attributes or {}))}
                 for e in events]
            )  # fmt: skip
        if description and _guard_hit(description):
            description = mask_secrets(description)[0]
    return (
        format(ctx.trace_id, "032x"),
        format(ctx.span_id, "016x"),
        format(parent.span_id, "016x") if parent is not None and parent.is_valid else None,
        span.name,
        get(_KIND),
        start,
        end,
        (end - start) / 1e6,
        "ERROR" if code is _ERROR else ("OK" if code is _OK else "UNSET"),
        description,
        model,
        get(_IN_TOKENS),
        get(_OUT_TOKENS),
        get(_COST),
        get(_PROJECT) or project,
        attrs_json,
        ev_json,
        resource_json(span.resource),
        get(_SESSION),
        get(_USER),
        *otel_fields(span, mask),  # span_kind, links, scope_name, scope_version (issue 21)
    )


_RESPONSE_MODEL = semconv.GEN_AI_RESPONSE_MODEL
_REQUEST_MODEL = semconv.GEN_AI_REQUEST_MODEL
_EMBEDDING_MODEL = semconv.EMBEDDING_MODEL
_KIND = semconv.SPAN_KIND
_IN_TOKENS = semconv.GEN_AI_USAGE_INPUT_TOKENS
_OUT_TOKENS = semconv.GEN_AI_USAGE_OUTPUT_TOKENS
_COST = semconv.COST_USD
_PROJECT = semconv.PROJECT
_SESSION = semconv.SESSION_ID
_USER = semconv.USER_ID
_ERROR = StatusCode.ERROR
_OK = StatusCode.OK


class StoreSpanExporter(SpanExporter):
    """Writes spans into a :class:`~ragtrail.store.Store`. Counts exported, failed and errors."""

    def __init__(
        self,
        store: Store,
        project: str = "default",
        *,
        retries: int = 3,
        backoff_s: float = 0.05,
        cooldown_s: float = 5.0,
        mask_secrets: bool = True,
    ) -> None:
        self.store = store
        self.mask_secrets = mask_secrets
        self.cooldown_s = cooldown_s
        self._broken_until = 0.0
        self.project = project
        self.retries = retries
        self.backoff_s = backoff_s
        self.exported = 0
        self.failed = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._shutdown = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_KEY, True))  # never trace ourselves
        try:
            try:
                mask = self.mask_secrets
                rows = [span_to_row(s, self.project, mask=mask) for s in spans]
            except Exception:
                warn_once("export-convert", "ragtrail: could not convert spans for the store", exc_info=True)
                with self._lock:
                    self.failed += len(spans)
                    self.errors += 1
                return SpanExportResult.FAILURE
            delay = self.backoff_s
            # after a batch failed every retry, later batches get one attempt each for a while, so a
            # dead store cannot make flush() (or shutdown at exit) sleep through retries batch by batch
            attempts = 1 if time.monotonic() < self._broken_until else self.retries + 1
            for attempt in range(attempts):
                try:
                    self.store.write_spans(rows)
                    with self._lock:
                        self.exported += len(rows)
                    self._broken_until = 0.0
                    return SpanExportResult.SUCCESS
                except Exception as exc:
                    if attempt == attempts - 1:
                        with self._lock:
                            self.failed += len(rows)
                            self.errors += 1
                        self._broken_until = time.monotonic() + self.cooldown_s
                        warn_once(
                            f"export-fail:{type(exc).__name__}",
                            "ragtrail: could not write %d spans to the store %s after %d attempt(s) (%s); "
                            "the application continues, failed spans are counted in ragtrail.stats()",
                            len(rows),
                            getattr(self.store, "url", "?"),
                            attempts,
                            exc,
                        )
                        return SpanExportResult.FAILURE
                    time.sleep(delay)
                    delay *= 4
            return SpanExportResult.FAILURE  # pragma: no cover
        finally:
            otel_context.detach(token)

    def shutdown(self) -> None:
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
