"""Eval scores written back as telemetry: one ``gen_ai.evaluation.result`` event per score.

Each event carries ``gen_ai.evaluation.name`` (the scorer), ``gen_ai.evaluation.score.value`` (when the
score has a value), ``gen_ai.evaluation.score.label`` (the score's label, else its status),
``gen_ai.evaluation.explanation`` (the reason, when there is one) and ``ragtrail.eval.score.status``.
Any OpenTelemetry back end that receives the trace (the store, OTLP, Phoenix…) shows them.

Where the events go:

* the evaluated trace's root span, when it is still open (the harness scores before ending it):
  the events leave with that span;
* otherwise (the root span has already ended and been exported, so it cannot change), a short
  EVALUATOR span named ``evaluation`` is started as a child of the root span, in the same trace,
  carrying the events (and the run and example ids).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, TraceFlags

from ragtrail import semconv
from ragtrail._log import logger
from ragtrail.tracing import _setup
from ragtrail.tracing._secrets import mask_secrets

_MAX_EXPLANATION = 4096
EVALUATION_SPAN_NAME = "evaluation"
"""Name of the span that carries the events when the evaluated span has already ended."""


def evaluation_event_attributes(
    name: str,
    value: float | None = None,
    label: str | None = None,
    explanation: str | None = None,
    *,
    status: str = "ok",
) -> dict[str, Any]:
    """The attributes of one ``gen_ai.evaluation.result`` event."""
    attrs: dict[str, Any] = {semconv.GEN_AI_EVALUATION_NAME: str(name), semconv.EVAL_SCORE_STATUS: status}
    if value is not None:
        attrs[semconv.GEN_AI_EVALUATION_SCORE_VALUE] = float(value)
    attrs[semconv.GEN_AI_EVALUATION_SCORE_LABEL] = str(label) if label is not None else status
    if explanation:
        text = str(explanation)
        if len(text) > _MAX_EXPLANATION:
            text = text[:_MAX_EXPLANATION] + "…"
        cfg = _setup._config
        if cfg is None or cfg.mask_secrets:
            text, _n = mask_secrets(text)
        attrs[semconv.GEN_AI_EVALUATION_EXPLANATION] = text
    return attrs


def _score_parts(score: Any) -> tuple[float | None, str | None, str | None, str]:
    """(value, label, explanation, status) from a Score, a number, a bool, None or a mapping."""
    if score is None:
        return None, None, None, "undefined"
    if isinstance(score, bool):
        return float(score), "pass" if score else "fail", None, "ok"
    if isinstance(score, (int, float)):
        return float(score), None, None, "ok"
    if isinstance(score, Mapping):
        get = score.get
    else:

        def get(k: str, d: Any = None) -> Any:
            return getattr(score, k, d)

    value = get("value")
    status = str(get("status") or "ok")
    details = get("details") or {}
    label = get("label")
    if label is None and isinstance(details, Mapping):
        label = details.get("label")
    explanation = get("reason", None) or get("explanation", None)
    return (None if value is None else float(value)), label, explanation, status


def _pairs(scores: Mapping[str, Any] | Iterable[Any]) -> list[tuple[str, Any]]:
    if isinstance(scores, Mapping):
        return [(str(k), v) for k, v in scores.items()]
    out = []
    for item in scores:
        if isinstance(item, tuple) and len(item) == 2:
            out.append((str(item[0]), item[1]))
        else:  # an object with a scorer/name attribute (a run result row)
            name = getattr(item, "scorer", None) or getattr(item, "name", None)
            if isinstance(item, Mapping):
                name = item.get("scorer") or item.get("name")
            out.append((str(name), item))
    return out


def _span_context(target: Any) -> SpanContext | None:
    if isinstance(target, SpanContext):
        return target
    ctx = getattr(target, "context", None)
    if isinstance(ctx, SpanContext):  # an SDK span / ReadableSpan
        return ctx
    get_ctx = getattr(target, "get_span_context", None)
    if callable(get_ctx):
        c = get_ctx()
        return c if isinstance(c, SpanContext) else None
    if isinstance(target, tuple) and len(target) == 2:
        trace_id, span_id = target
    else:  # a SpanRecord (hex ids)
        trace_id, span_id = getattr(target, "trace_id", None), getattr(target, "span_id", None)
    if trace_id is None or span_id is None:
        return None
    tid = int(trace_id, 16) if isinstance(trace_id, str) else int(trace_id)
    sid = int(span_id, 16) if isinstance(span_id, str) else int(span_id)
    return SpanContext(tid, sid, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED))


def emit_evaluation_events(
    target: Any,
    scores: Mapping[str, Any] | Iterable[Any],
    *,
    run_id: str | None = None,
    example_id: str | None = None,
    eval_name: str | None = None,
) -> int:
    """Write each score as a ``gen_ai.evaluation.result`` event on the evaluated trace; returns how many.

    Args:
        target: the evaluated span: an open SDK span (events go on it), or an ended span, a
            ``SpanContext``, a stored ``SpanRecord`` or a ``(trace_id_hex, span_id_hex)`` pair (events go
            on a child ``evaluation`` span in the same trace).
        scores: ``{scorer_name: Score | float | bool | None}``, or ``(name, score)`` pairs, or result
            rows with a ``scorer`` field. A ``Score`` gives value, status, reason (explanation) and
            ``details["label"]``.
        run_id / example_id / eval_name: recorded on the carrier span when one is needed.

    Never raises (tracing must not break an eval); does nothing before ``ragtrail.init()``.
    """
    cfg = _setup._config
    if cfg is None:
        return 0
    try:
        events = []
        for name, score in _pairs(scores):
            value, label, explanation, status = _score_parts(score)
            events.append(evaluation_event_attributes(name, value, label, explanation, status=status))
        if not events:
            return 0
        if isinstance(target, Span) and target.is_recording():
            for attrs in events:
                target.add_event(semconv.GEN_AI_EVALUATION_RESULT, attrs)
            return len(events)
        parent = _span_context(target)
        if parent is None or not parent.is_valid:
            logger.debug("ragtrail: emit_evaluation_events got no span to attach to: %r", target)
            return 0
        attributes: dict[str, Any] = {semconv.SPAN_KIND: semconv.EVALUATOR}
        if run_id:
            attributes[semconv.EVAL_RUN_ID] = run_id
        if example_id:
            attributes[semconv.EVAL_EXAMPLE_ID] = example_id
        if eval_name:
            attributes[semconv.EVAL_NAME] = eval_name
        ctx = otel_trace.set_span_in_context(NonRecordingSpan(parent))
        carrier = cfg.tracer.start_span(EVALUATION_SPAN_NAME, context=ctx, attributes=attributes)
        for attrs in events:
            carrier.add_event(semconv.GEN_AI_EVALUATION_RESULT, attrs)
        carrier.end()
        return len(events)
    except Exception:
        logger.debug("ragtrail: could not emit evaluation events", exc_info=True)
        return 0


__all__ = ["EVALUATION_SPAN_NAME", "emit_evaluation_events", "evaluation_event_attributes"]
