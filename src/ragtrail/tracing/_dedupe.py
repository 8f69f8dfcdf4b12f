"""One LLM span per model call when a framework connector and a client-library connector are both on.

A framework connector (the LangChain handler) opens its LLM span and makes it current with
:func:`with_llm_span`, which also marks the context. A client-library connector (OpenAI, vLLM…) asks
:func:`active_llm_span` before it starts its own span::

    from ragtrail.tracing._dedupe import active_llm_span

    outer = active_llm_span()
    if outer is not None:
        # A framework already records this model call: add what only the client knows (response
        # id, server address…) to ``outer`` and start no second LLM span.
        ...
    else:
        ...  # start the usual LLM span

The mark is honoured only while the marked span is the *current* span and still recording, so a
model call made inside some other span nested below the framework's LLM span (a tool, a retriever)
gets its own span as usual.
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.trace import Span

from ragtrail import semconv

LLM_SPAN_KEY = otel_context.create_key(semconv.LLM_SPAN_CONTEXT_KEY)
"""The context key whose value is the framework's open LLM span."""


def with_llm_span(span: Span, context: Context | None = None) -> Context:
    """A context where ``span`` is current and marked as the open LLM span of a framework."""
    ctx = otel_trace.set_span_in_context(span, context)
    return otel_context.set_value(LLM_SPAN_KEY, span, ctx)


def active_llm_span(context: Context | None = None) -> Span | None:
    """The framework LLM span that already records the model call made here, or None."""
    marked = otel_context.get_value(LLM_SPAN_KEY, context)
    if marked is None:
        return None
    if otel_trace.get_current_span(context) is not marked or not marked.is_recording():  # type: ignore[attr-defined]
        return None
    return marked  # type: ignore[no-any-return]


def llm_span_active(context: Context | None = None) -> bool:
    """True when a framework LLM span already records the model call made in this context."""
    return active_llm_span(context) is not None


__all__ = ["LLM_SPAN_KEY", "active_llm_span", "llm_span_active", "with_llm_span"]
