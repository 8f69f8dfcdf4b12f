"""Background spans: a span whose expensive part is done off the traced call's thread.

A Chroma query over an in-memory index takes about a millisecond. Turning its result into attributes
(documents as capped, secret-masked JSON) and ending the span (every processor's ``on_end``) would
cost the caller several percent of that. Connectors on such hot paths use :func:`start` /
:func:`finish` instead of ``tracer.start_span``, with only OpenTelemetry's public API:

* On the caller's thread: the span is started with the public tracer (the sampler decides, the ids
  and parent are the SDK's own), and a :class:`BackgroundSpan` standing for it becomes the current
  span while the call runs (child spans get the right parent; code that annotates the current span
  writes into it). At the end the end time is read and a *snapshot* of the result (plain data, copied
  so the application cannot change it afterwards) is queued with a function that turns it into
  attributes.
* On a background thread (or in :func:`ragtrail.flush`, whichever comes first): the attributes are
  computed and set, and the span is ended with the recorded end time (``span.end(end_time=…)``), so
  every span processor and exporter sees an ordinary span, at most ``_WAKE_S`` seconds later.

Nothing is lost: :func:`ragtrail.flush`, ``TracerProvider.force_flush``, :func:`ragtrail.shutdown` and
the exit hook drain the queue first (ragtrail's processor is the first one of a provider that
ragtrail created, so the provider's own flush and shutdown drain before any other processor runs);
if the queue ever holds ``_MAX_QUEUE`` spans the caller finishes its own span instead of queueing
more. Background mode is used only on a provider ragtrail created (see :func:`enable`): on an
application's own provider ragtrail's processor comes after the application's, whose flush or
shutdown would run before the drain, so spans there are finished on the caller's thread, with the
same attributes.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanContext

from ragtrail import semconv
from ragtrail._log import logger

__all__ = ["BackgroundSpan", "Recorder", "defer_attributes", "enable", "finish", "merge_attributes", "start"]

Compute = Callable[[], Mapping[str, Any]]
_WAKE_S = 0.05  # the worker's longest sleep
_WAKE_AT = 256  # queued spans that wake the worker at once
_MAX_QUEUE = 65_536  # beyond this the caller finishes its span itself (backpressure, never a drop)


class Recorder:
    """A stand-in span that collects attributes, so helpers that write to a span (``set_content``,
    ``record_documents``) can build the attribute dict of a deferred function."""

    def __init__(self) -> None:
        self.attributes: dict[str, Any] = {}

    def is_recording(self) -> bool:
        return True

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.attributes.update(attributes)


def merge_attributes(current: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``new`` as it should be written over ``current``: secret counts add up, the lists of truncated
    attributes are joined; everything else is replaced."""
    out = dict(new)
    if semconv.MASKED in out and current.get(semconv.MASKED):
        out[semconv.MASKED] = int(current[semconv.MASKED]) + int(out[semconv.MASKED])
    if semconv.TRUNCATED in out and current.get(semconv.TRUNCATED):
        names = list(current[semconv.TRUNCATED])
        names += [n for n in out[semconv.TRUNCATED] if n not in names]
        out[semconv.TRUNCATED] = names
    return out


class BackgroundSpan(otel_trace.Span):
    """What a connector holds between :func:`start` and :func:`finish`, and the current span meanwhile:
    it stands for the SDK span ``span`` (started with the public tracer) until the worker ends it.

    ``attributes`` holds the start attributes and those set during the call (a plain dict: what runs
    inside the call may read it); the new ones go to the SDK span in one ``set_attributes`` when it is
    ended. Events, status and exceptions go to the SDK span at once."""

    __slots__ = ("attributes", "computes", "end_ns", "initial", "on_error", "span", "start_ns", "worker")

    def __init__(self, span: Any, worker: _Worker, initial: dict[str, Any]) -> None:
        self.span = span
        self.worker = worker
        self.initial = initial
        self.attributes: dict[str, Any] = dict(initial)
        self.start_ns: int = span.start_time or time.time_ns()
        self.end_ns = 0
        self.computes: list[Compute] | None = None
        self.on_error: Callable[[str], None] | None = None

    @property
    def name(self) -> str:
        return str(self.span.name)

    def is_recording(self) -> bool:
        return self.end_ns == 0

    def get_span_context(self) -> SpanContext:
        return self.span.get_span_context()  # type: ignore[no-any-return]

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_ns == 0:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.end_ns == 0:
            self.attributes.update(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self.end_ns == 0:
            self.span.add_event(name, attributes, timestamp)

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        if self.end_ns == 0:
            self.span.add_link(context, attributes)

    def update_name(self, name: str) -> None:
        if self.end_ns == 0:
            self.span.update_name(name)

    def set_status(self, status: Any, description: str | None = None) -> None:
        if self.end_ns == 0:
            self.span.set_status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: int | None = None,
                         escaped: bool = False) -> None:  # fmt: skip
        if self.end_ns == 0:
            self.span.record_exception(exception, attributes, timestamp, escaped)

    def end(self, end_time: int | None = None) -> None:
        pass  # ended by :func:`finish`, which also restores the context

    def __repr__(self) -> str:
        return f"BackgroundSpan({self.name!r}, span_id={self.get_span_context().span_id:016x})"


# ------------------------------------------------------------------------------------------ worker
class _Worker:
    """One per tracer: a queue of finished BackgroundSpans and the thread that ends their SDK spans."""

    def __init__(self, tracer: Any) -> None:
        self.tracer = tracer
        self.queue: deque[BackgroundSpan] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # held while spans are being emitted (worker or a flush)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.emitted = 0
        self.failures = 0

    def submit(self, bs: BackgroundSpan) -> None:
        if self._stopped or len(self.queue) >= _MAX_QUEUE:
            self.emit(bs)  # backpressure: the caller pays, nothing is dropped
            return
        self.queue.append(bs)
        if self._stopped:  # raced with stop(): its drain may have run before this append
            self.drain()
            return
        if self._thread is None:
            self._start_thread()
        elif len(self.queue) >= _WAKE_AT:
            self._wake.set()

    def _start_thread(self) -> None:
        with _workers_lock:
            if self._thread is not None:
                return
            t = threading.Thread(target=self._run, name="ragtrail-background-spans", daemon=True)
            self._thread = t
            t.start()

    def _after_fork_in_child(self) -> None:
        """A forked child has no worker thread and may have inherited a held lock: start afresh.
        What the parent had queued is the parent's to emit."""
        self.queue = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = None

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(_WAKE_S)
            self._wake.clear()
            self.drain()

    def drain(self) -> None:
        """Emit every queued span (called by the worker and by flush/shutdown)."""
        if not self.queue:
            return
        on_worker = threading.current_thread() is self._thread
        with self._lock:
            q = self.queue
            while True:
                try:
                    bs = q.popleft()
                except IndexError:
                    return
                self.emit(bs)
                if on_worker:
                    # hand the GIL back between spans: a traced call returning from native code
                    # (Chroma's search runs without the GIL) must not wait a whole switch interval
                    time.sleep(0)

    def stop(self) -> None:
        self._stopped = True  # first: a submit that misses the drain below sees it and drains itself
        self._wake.set()
        self.drain()

    def emit(self, bs: BackgroundSpan) -> None:
        """Set the deferred attributes of ``bs`` on its SDK span and end it. Never raises."""
        try:
            attrs = bs.attributes
            if bs.computes:
                for compute in bs.computes:
                    try:
                        attrs.update(merge_attributes(attrs, compute()))
                    except Exception:  # the span still goes out, without these attributes
                        logger.debug("ragtrail: a deferred attribute function failed", exc_info=True)
                        if bs.on_error is not None:
                            bs.on_error("deferred attributes")
            initial = bs.initial
            changed = {k: v for k, v in attrs.items() if k not in initial or initial[k] is not v}
            if changed:
                bs.span.set_attributes(changed)
            bs.span.end(end_time=bs.end_ns or time.time_ns())
            self.emitted += 1
        except Exception:
            self.failures += 1
            logger.debug("ragtrail: could not emit a background span", exc_info=True)


_workers: dict[int, _Worker] = {}
_workers_lock = threading.Lock()


def _reset_after_fork() -> None:
    global _workers_lock
    _workers_lock = threading.Lock()
    for w in list(_workers.values()):
        w._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def enable(tracer: Any) -> None:
    """Use background spans for ``tracer`` (a tracer of a provider ragtrail created; see the module doc)."""
    with _workers_lock:
        w = _workers.get(id(tracer))
        if w is None or w.tracer is not tracer:
            _workers[id(tracer)] = _Worker(tracer)


def _worker_for(tracer: Any) -> _Worker | None:
    w = _workers.get(id(tracer))
    return w if w is not None and w.tracer is tracer else None


def drain_all() -> None:
    """Emit every queued background span (``ragtrail.flush`` and the provider's force_flush call this)."""
    for w in list(_workers.values()):
        w.drain()


def stop_for(tracer: Any) -> None:
    """Drain and stop the worker of ``tracer`` (``ragtrail.shutdown`` / a new ``init``)."""
    with _workers_lock:
        w = _workers.pop(id(tracer), None)
    if w is not None and w.tracer is tracer:
        w.stop()


def failures_for(tracer: Any) -> int:
    """Spans of ``tracer`` that could not be built (counted in ``ragtrail.stats()["failed"]``)."""
    w = _workers.get(id(tracer))
    return w.failures if w is not None and w.tracer is tracer else 0


def stats() -> dict[str, int]:
    """Background spans emitted, waiting and failed, summed over tracers."""
    ws = list(_workers.values())
    return {
        "emitted": sum(w.emitted for w in ws),
        "queued": sum(len(w.queue) for w in ws),
        "failures": sum(w.failures for w in ws),
    }


# ------------------------------------------------------------------------------------------ API
def start(tracer: Any, name: str, attributes: dict[str, Any]) -> tuple[Any, object]:
    """Start a span named ``name`` as the current span; returns ``(span, token)`` for :func:`finish`.

    The span is a :class:`BackgroundSpan` when ``tracer`` has background spans and the SDK records
    this span (an unsampled or disabled one is returned as the SDK gave it).
    """
    span = tracer.start_span(name, attributes=attributes)
    w = _worker_for(tracer)
    if w is not None and span.is_recording():
        bs = BackgroundSpan(span, w, attributes)
        return bs, otel_context.attach(otel_trace.set_span_in_context(bs))
    return span, otel_context.attach(otel_trace.set_span_in_context(span))


def finish(span: Any, token: object) -> None:
    """End a span from :func:`start` and restore the previous current span."""
    if type(span) is BackgroundSpan:
        span.end_ns = time.time_ns()
        otel_context.detach(token)  # type: ignore[arg-type]
        span.worker.submit(span)
        return
    try:
        span.end()
    finally:
        otel_context.detach(token)  # type: ignore[arg-type]


def defer_attributes(span: Any, compute: Compute, on_error: Callable[[str], None] | None = None) -> None:
    """Add the attributes ``compute()`` returns to ``span``: later, off the caller's thread, for a
    :class:`BackgroundSpan`; at once for any other span. ``compute`` must only use data captured
    beforehand (copy what the application might change). Never raises."""
    if type(span) is BackgroundSpan:
        if span.computes is None:
            span.computes = [compute]
        else:
            span.computes.append(compute)
        if on_error is not None:
            span.on_error = on_error
        return
    try:
        if not span.is_recording():
            return
        current = getattr(span, "attributes", None) or {}
        span.set_attributes(merge_attributes(current, compute()))
    except Exception:
        logger.debug("ragtrail: a deferred attribute function failed", exc_info=True)
        if on_error is not None:
            on_error("deferred attributes")
