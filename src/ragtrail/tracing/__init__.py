"""Tracing core: SDK setup, span helpers, usage/cost, content capture, the store exporter.

The public connector API is here too (connectors import nothing else from ragtrail but ``semconv``):
:func:`get_config`, :func:`start_span`, :func:`is_enabled`, :func:`set_content`,
:func:`content_value` (and :func:`reuse_content`), :func:`capture_content`, :func:`record_exception`, :func:`record_usage`,
:func:`record_documents`, :func:`model_display_name` (a stable model name instead of a local path),
:func:`active_llm_span` / :data:`LLM_SPAN_KEY`, :class:`FailureCounter`
(with its ``guard`` decorator), background spans for hot paths (:func:`start_background_span`,
:func:`finish_background_span`, :func:`defer_attributes`, :class:`Recorder`) and :mod:`gpu`
(GPU sampling around a call).
"""

from __future__ import annotations

from opentelemetry import trace as _otel_trace

from ragtrail.tracing import _gpu as gpu
from ragtrail.tracing._background import Recorder, defer_attributes
from ragtrail.tracing._background import finish as finish_background_span
from ragtrail.tracing._background import start as start_background_span
from ragtrail.tracing._collector import SpanCollector, collector
from ragtrail.tracing._connector import FailureCounter, instrumented_connectors, note_instrumented, start_span
from ragtrail.tracing._content import Sanitizer, mask_value, safe_json, to_json
from ragtrail.tracing._context import (
    CONTEXT_KEY,
    ContextSpanProcessor,
    ContextValues,
    context,
    current_context,
    with_framework_context,
)
from ragtrail.tracing._dedupe import LLM_SPAN_KEY, active_llm_span, llm_span_active
from ragtrail.tracing._evalevents import emit_evaluation_events
from ragtrail.tracing._exporter import StoreSpanExporter, span_to_row
from ragtrail.tracing._feedback import current_trace_id, log_feedback
from ragtrail.tracing._gpu import sampler_settings as gpu_sampler_settings
from ragtrail.tracing._messages import (
    message_text,
    read_input_messages,
    read_messages,
    read_output_messages,
    to_message,
)
from ragtrail.tracing._model import SpanRecord, Trace
from ragtrail.tracing._model_name import model_display_name
from ragtrail.tracing._sampling import make_sampler
from ragtrail.tracing._secrets import mask_secrets
from ragtrail.tracing._setup import Config, flush, get_config, init, shutdown, stats
from ragtrail.tracing._spans import (
    capture_content,
    content_value,
    current_span,
    is_enabled,
    is_suppressed,
    message_attributes,
    record_exception,
    record_messages,
    reuse_content,
    set_content,
    span,
    trace,
)
from ragtrail.tracing._usage import PriceTable, compute_cost, gpu_cost, load_prices, record_documents, record_usage


def get_tracer() -> _otel_trace.Tracer:
    """The tracer connectors start spans with (a no-op tracer before ``ragtrail.init()``)."""
    cfg = get_config()
    return cfg.tracer if cfg is not None else _otel_trace.NoOpTracer()


def suppress_instrumentation():  # type: ignore[no-untyped-def]
    """Context manager: no connector creates spans inside it (store writes, judge internals)."""
    from opentelemetry.instrumentation.utils import suppress_instrumentation as _s

    return _s()


__all__ = [
    "CONTEXT_KEY",
    "LLM_SPAN_KEY",
    "Config",
    "ContextSpanProcessor",
    "ContextValues",
    "FailureCounter",
    "PriceTable",
    "Recorder",
    "Sanitizer",
    "SpanCollector",
    "SpanRecord",
    "StoreSpanExporter",
    "Trace",
    "active_llm_span",
    "capture_content",
    "collector",
    "compute_cost",
    "content_value",
    "context",
    "current_context",
    "current_span",
    "current_trace_id",
    "defer_attributes",
    "emit_evaluation_events",
    "finish_background_span",
    "flush",
    "get_config",
    "get_tracer",
    "gpu",
    "gpu_cost",
    "gpu_sampler_settings",
    "init",
    "instrumented_connectors",
    "is_enabled",
    "is_suppressed",
    "llm_span_active",
    "load_prices",
    "log_feedback",
    "make_sampler",
    "mask_secrets",
    "mask_value",
    "message_attributes",
    "message_text",
    "model_display_name",
    "note_instrumented",
    "read_input_messages",
    "read_messages",
    "read_output_messages",
    "record_documents",
    "record_exception",
    "record_messages",
    "record_usage",
    "reuse_content",
    "safe_json",
    "set_content",
    "shutdown",
    "span",
    "span_to_row",
    "start_background_span",
    "start_span",
    "stats",
    "suppress_instrumentation",
    "to_json",
    "to_message",
    "trace",
    "with_framework_context",
]
