"""A stock ``BatchSpanProcessor`` whose drops are counted through public API only.

The SDK's batch processor keeps a bounded queue and, when it is full, silently drops a span; it
exposes neither the queue nor a drop count. :class:`CountedBatchProcessor` wraps it and keeps its own
books instead: spans handed to the batch processor (``accepted``) and spans that reached the exporter
(``exported``, counted by a thin wrapper around the exporter when ``export()`` is called). The
difference is what the batch processor still holds (queued, or being taken out for the next batch);
when it reaches ``max_queue_size`` the span is not handed over and is counted in ``dropped``. The
batch processor's own queue therefore never overflows, and every drop is one ragtrail made and counted.

Unlike the SDK's own overflow (which evicts the oldest queued span) this drops the newest one; either
way the count is exact. Spans that are not sampled are not handed over (the batch processor ignores
them too), so they never count as queued.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult


class _CountingExporter(SpanExporter):
    """Passes every batch on to ``inner``; counts the spans it was given."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.received = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self.received += len(spans)
        return self.inner.export(spans)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class CountedBatchProcessor(SpanProcessor):
    """``BatchSpanProcessor(exporter, ...)`` plus exact counts: ``accepted``, ``exported``, ``dropped``."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int,
        max_export_batch_size: int,
        schedule_delay_millis: int,
    ) -> None:
        self.exporter = exporter
        self.max_queue_size = max_queue_size
        self._counter = _CountingExporter(exporter)
        self._batch = BatchSpanProcessor(
            self._counter,
            max_queue_size=max_queue_size,
            max_export_batch_size=max_export_batch_size,
            schedule_delay_millis=schedule_delay_millis,
        )
        self._lock = threading.Lock()
        self._closed = False
        self.accepted = 0
        self.dropped = 0
        # called every 1,024 spans accepted (writer="auto" watches the rate with it: ProcessWriter.pulse)
        self.pulse: Callable[[], None] | None = None

    @property
    def exported(self) -> int:
        """Spans that reached the exporter (whatever the exporter then made of them)."""
        return self._counter.received

    @property
    def queued(self) -> int:
        """Spans the batch processor holds now (accepted, not yet given to the exporter)."""
        return self.accepted - self._counter.received

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass  # the batch processor does nothing on start

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None or not ctx.trace_flags.sampled or self._closed:
            return  # the batch processor would ignore it: not queued, not a drop
        with self._lock:
            if self.accepted - self._counter.received >= self.max_queue_size:
                self.dropped += 1  # the queue is full: this span is not handed over, and counted
                return
            self.accepted += 1
            n = self.accepted
        self._batch.on_end(span)
        if not n & 1023 and self.pulse is not None:
            try:
                self.pulse()
            except Exception:  # pragma: no cover - never raise into the traced code
                pass

    def shutdown(self) -> None:
        self._closed = True
        self._batch.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._batch.force_flush(timeout_millis)


__all__ = ["CountedBatchProcessor"]
