"""An in-process span collector: the eval harness reads each example's spans from here (no DB round trip).

``collector().watch(trace_id)`` starts keeping the ended spans of that trace; ``take(trace_id)``
returns them as a :class:`Trace` and forgets them. Spans of unwatched traces cost one dict lookup.
"""

from __future__ import annotations

import threading
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ragtrail.tracing import _background, _content
from ragtrail.tracing._model import SpanRecord, Trace


class SpanCollector(SpanProcessor):
    """Keeps ended spans of watched trace ids in memory."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: dict[int, list[ReadableSpan]] = {}

    def watch(self, trace_id: int) -> None:
        with self._lock:
            self._spans.setdefault(trace_id, [])

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        lst = self._spans.get(span.context.trace_id)
        if lst is not None:
            with self._lock:
                lst.append(span)

    def take(self, trace_id: int, project: str | None = None) -> Trace:
        # spans of this trace may still be queued for the background builder (a Chroma query the
        # pipeline made): build them now, so the example is scored from its whole trace
        _background.drain_all()
        with self._lock:
            spans = self._spans.pop(trace_id, [])
        return Trace([SpanRecord.from_readable(s, project) for s in spans])

    def discard(self, trace_id: int) -> None:
        with self._lock:
            self._spans.pop(trace_id, None)

    def shutdown(self) -> None:
        with self._lock:
            self._spans.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


_collector: SpanCollector | None = None
_lock = threading.Lock()


def collector(provider: Any = None) -> SpanCollector:
    """The process-wide collector, attached (once) to ``provider`` or the active ragtrail provider."""
    global _collector
    from ragtrail.tracing import _setup

    with _lock:
        if _collector is None:
            _collector = SpanCollector()
        prov = provider or (_setup._config.provider if _setup._config else None)
        # remembered on the provider itself (an id() of a collected provider can be reused)
        if prov is not None and getattr(prov, "_ragtrail_collector", None) is not _collector:
            prov.add_span_processor(_collector)
            setattr(prov, "_ragtrail_collector", _collector)  # noqa: B010
        return _collector


def watching() -> bool:
    """Whether the eval harness is reading some trace's spans in-process now (content recorded then is
    masked when recorded, not only by the writer process)."""
    c = _collector
    return c is not None and bool(c._spans)


_content.collector_watching = watching
