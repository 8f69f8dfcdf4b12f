"""``ragtrail.log_feedback()`` and ``ragtrail.current_trace_id()``: feedback on traces and spans.

A feedback record is written to the store (table ``feedback``; history, never overwritten) and, when
spans also leave the process (OTLP, extra exporters) or no store is configured, carried as a
``gen_ai.evaluation.result`` event (the OTel GenAI evaluation event) so that Phoenix, Langfuse or a
``ragtrail serve`` receiver in another process see it too. Each record has an id, so one that reaches
the store both ways is stored once.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from ragtrail import semconv
from ragtrail._exceptions import ConfigError
from ragtrail._log import logger
from ragtrail.tracing import _setup

SOURCES: tuple[str, ...] = ("human", "app", "scorer")
"""Who gave a feedback record."""
VALUE_TYPES: tuple[str, ...] = ("numeric", "boolean", "categorical")
_MAX_TEXT = 4096


def current_trace_id() -> str | None:
    """The id (32 hex digits) of the trace being recorded here, or None outside any span. Keep it to
    attach feedback later: ``ragtrail.log_feedback(trace_id, "thumbs", False)``."""
    ctx = otel_trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def _target(target: Any) -> tuple[str, str | None, Any]:
    """(trace_id hex, span_id hex or None, the live span to put the event on or None)."""
    if isinstance(target, str):
        tid = target.strip().lower()
        if len(tid) != 32 or any(c not in "0123456789abcdef" for c in tid):
            raise ConfigError(
                f"log_feedback: {target!r} is not a trace id (32 hex digits); pass ragtrail.current_trace_id(), "
                "a span, a Trace or a stored span"
            )
        return tid, None, None
    get_ctx = getattr(target, "get_span_context", None)
    if callable(get_ctx):  # a live OTel span
        c = get_ctx()
        if isinstance(c, SpanContext) and c.is_valid:
            live = target if getattr(target, "is_recording", lambda: False)() else None
            return format(c.trace_id, "032x"), format(c.span_id, "016x"), live
    ctx = getattr(target, "context", None)
    if isinstance(ctx, SpanContext) and ctx.is_valid:  # an ended SDK span
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"), None
    rec_tid = getattr(target, "trace_id", None)
    if isinstance(rec_tid, str) and rec_tid:
        sid = getattr(target, "span_id", None)  # a stored SpanRecord; a Trace has no span_id
        return rec_tid.lower(), sid if isinstance(sid, str) else None, None
    raise ConfigError(
        f"log_feedback: cannot tell which trace {type(target).__name__} is; pass a trace id, a span, a Trace "
        "or a stored span"
    )


def feedback_value(value: Any) -> tuple[str, float | None, str | None]:
    """(value_type, numeric value, text value) of a feedback value; raises ConfigError for other types."""
    if isinstance(value, bool):
        return "boolean", 1.0 if value else 0.0, "true" if value else "false"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        if math.isnan(v) or math.isinf(v):
            raise ConfigError(f"log_feedback: value {value!r} is not a finite number")
        return "numeric", v, None
    if isinstance(value, str):
        if not value:
            raise ConfigError("log_feedback: a categorical value must be a non-empty string")
        return "categorical", None, value[:_MAX_TEXT]
    raise ConfigError(f"log_feedback: value must be a number, a bool or a string (a label), not {type(value).__name__}")


def feedback_row(
    trace_id: str,
    span_id: str | None,
    name: str,
    value: Any,
    *,
    comment: str | None = None,
    source: str = "human",
    by: str | None = None,
    created_at: float | None = None,
    cost_usd: float | None = None,
    details: str | None = None,
    feedback_id: str | None = None,
) -> tuple[Any, ...]:
    """One ``feedback`` row (``ragtrail.store`` FEEDBACK_COLUMNS order), validated."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("log_feedback: name must be a non-empty string such as 'thumbs' or 'correctness'")
    if source not in SOURCES:
        raise ConfigError(f"log_feedback: source must be one of {', '.join(SOURCES)}, not {source!r}")
    if comment is not None and not isinstance(comment, str):
        raise ConfigError("log_feedback: comment must be a string")
    if by is not None and not isinstance(by, str):
        raise ConfigError("log_feedback: by must be a string (who gave the feedback)")
    vtype, num, text = feedback_value(value)
    return (
        feedback_id or uuid.uuid4().hex, trace_id, span_id, name.strip(), vtype, num, text,
        comment[:_MAX_TEXT] if comment else None, source, by, time.time() if created_at is None else created_at,
        cost_usd, details,
    )  # fmt: skip


def event_attributes(row: tuple[Any, ...]) -> dict[str, Any]:
    """The ``gen_ai.evaluation.result`` event attributes that carry a feedback row."""
    fid, _tid, sid, name, vtype, num, text, comment, source, by, created = row[:11]
    attrs: dict[str, Any] = {
        semconv.GEN_AI_EVALUATION_NAME: name,
        semconv.FEEDBACK_ID: fid,
        semconv.FEEDBACK_SOURCE: source,
        semconv.FEEDBACK_VALUE_TYPE: vtype,
        semconv.FEEDBACK_CREATED_AT: float(created),
    }
    if num is not None:
        attrs[semconv.GEN_AI_EVALUATION_SCORE_VALUE] = num
    if text is not None:
        attrs[semconv.GEN_AI_EVALUATION_SCORE_LABEL] = text
    if comment:
        attrs[semconv.GEN_AI_EVALUATION_EXPLANATION] = comment
    if by:
        attrs[semconv.FEEDBACK_BY] = by
    if sid:
        attrs[semconv.FEEDBACK_SPAN_ID] = sid
    return attrs


def rows_from_events(trace_id: str, span_id: str | None, events: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """Feedback rows from stored/received span events (``{"name", "attributes"}``): only evaluation events
    that carry a feedback id (eval-harness scores are not feedback). Malformed events are skipped."""
    out = []
    for e in events:
        if e.get("name") != semconv.GEN_AI_EVALUATION_RESULT:
            continue
        a = e.get("attributes") or {}
        fid = a.get(semconv.FEEDBACK_ID)
        if not isinstance(fid, str) or not fid:
            continue
        vtype = a.get(semconv.FEEDBACK_VALUE_TYPE)
        if vtype == "numeric":
            value: Any = a.get(semconv.GEN_AI_EVALUATION_SCORE_VALUE)
        elif vtype == "boolean":
            value = a.get(semconv.GEN_AI_EVALUATION_SCORE_LABEL) == "true"
        else:
            value = a.get(semconv.GEN_AI_EVALUATION_SCORE_LABEL)
        try:
            created = a.get(semconv.FEEDBACK_CREATED_AT)
            out.append(
                feedback_row(
                    trace_id,
                    a.get(semconv.FEEDBACK_SPAN_ID) or None,
                    str(a.get(semconv.GEN_AI_EVALUATION_NAME)),
                    value,
                    comment=a.get(semconv.GEN_AI_EVALUATION_EXPLANATION),
                    source=str(a.get(semconv.FEEDBACK_SOURCE) or "human"),
                    by=a.get(semconv.FEEDBACK_BY),
                    created_at=float(created) if isinstance(created, (int, float)) else None,
                    feedback_id=fid,
                )
            )
        except (ConfigError, TypeError, ValueError):
            logger.debug("ragtrail: skipped a malformed feedback event", exc_info=True)
    return out


def rows_from_span_rows(span_rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Feedback rows carried by store span rows (SPAN_COLUMNS order; e.g. spans received over OTLP)."""
    import json

    out: list[tuple[Any, ...]] = []
    for r in span_rows:
        ev = r[16]
        if not ev or semconv.FEEDBACK_ID not in ev:  # one substring test per span: feedback is rare
            continue
        try:
            events = json.loads(ev)
        except ValueError:
            continue
        if isinstance(events, list):
            out.extend(rows_from_events(r[0], r[1], [e for e in events if isinstance(e, dict)]))
    return out


def _emit(row: tuple[Any, ...], live: Any, parent_span_id: str | None) -> bool:
    """Carry the record as an event: on the live span, else on a short ``feedback`` span in the trace."""
    cfg = _setup._config
    if cfg is None:
        return False
    attrs = event_attributes(row)
    try:
        if live is not None:
            live.add_event(semconv.GEN_AI_EVALUATION_RESULT, attrs)
            return True
        tid = int(row[1], 16)
        sid = int(parent_span_id, 16) if parent_span_id else (int(row[1][16:], 16) or 1)
        parent = SpanContext(tid, sid, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        ctx = otel_trace.set_span_in_context(NonRecordingSpan(parent))
        carrier = cfg.tracer.start_span(
            semconv.FEEDBACK_SPAN_NAME, context=ctx, attributes={semconv.SPAN_KIND: semconv.EVALUATOR}
        )
        carrier.add_event(semconv.GEN_AI_EVALUATION_RESULT, attrs)
        carrier.end()
        return True
    except Exception:  # tracing never raises: the stored record is what counts
        logger.debug("ragtrail: could not emit a feedback event", exc_info=True)
        return False


def log_feedback(
    trace_id_or_span: Any,
    name: str,
    value: bool | float | int | str,
    *,
    comment: str | None = None,
    source: str = "human",
    by: str | None = None,
    store: Any = None,
) -> str:
    """Attach feedback to a trace (or one span of it); returns the feedback id.

    Args:
        trace_id_or_span: a trace id (``ragtrail.current_trace_id()``), a live or ended span, a stored
            span or a :class:`~ragtrail.tracing.Trace`.
        name: what is rated (``"thumbs"``, ``"correctness"``, ``"corrected_answer"``…).
        value: a number (numeric), a bool (boolean) or a string (categorical: a label or a text).
        comment: free text. source: ``human`` | ``app`` | ``scorer``. by: who gave it.
        store: where to write it (default: the store of ``ragtrail.init()``, else the default store).

    Every call adds a record (history is kept; the latest per name is what DataFrames show). With a
    store it is written at once (one small transaction); when spans also go out over OTLP (or no store
    is configured) it also travels as a ``gen_ai.evaluation.result`` event.

    Raises:
        ConfigError: a bad argument; StoreError: the store cannot be written.
    """
    tid, sid, live = _target(trace_id_or_span)
    row = feedback_row(tid, sid, name, value, comment=comment, source=source, by=by)
    cfg = _setup._config
    st = store
    if st is None and cfg is not None:
        st = cfg.store  # None when init(store_exporter=False): the event is the way out
    elif st is None:
        from ragtrail.store import open_store

        st = open_store(None)
    elif not hasattr(st, "transaction"):
        from ragtrail.store import open_store

        st = open_store(st)
    parent = sid
    if st is not None:
        from ragtrail.store._feedback import insert_feedback, root_span_id

        insert_feedback(st, [row])
        if parent is None and live is None:
            parent = root_span_id(st, tid)
    if cfg is not None:
        leaves_process = len(cfg.processors) > (1 if cfg.store_exporter is not None else 0)
        if live is not None or leaves_process or st is None:
            _emit(row, live, parent)
    return str(row[0])


__all__ = [
    "SOURCES",
    "VALUE_TYPES",
    "current_trace_id",
    "feedback_row",
    "log_feedback",
    "rows_from_events",
    "rows_from_span_rows",
]
