"""Background spans: a span whose SDK object is built off the traced call's thread.

A Chroma query over an in-memory index takes about a millisecond. Building an OpenTelemetry SDK span
for it (sampler, limits, attribute validation, processors) and turning its result into attributes
(documents as capped, secret-masked JSON) would cost the caller several percent of that. Connectors on
such hot paths use :func:`start` / :func:`finish` instead of ``tracer.start_span``, with only
OpenTelemetry's public API:

* On the caller's thread: the span's ids are drawn (random, as the SDK's own generator draws them),
  a lightweight :class:`BackgroundSpan` carrying them becomes the current span while the call runs
  (so child spans get the right parent; code that annotates the current span writes into it), the
  start and end times are read, and a *snapshot* of the result (plain data, copied so the application
  cannot change it afterwards) is queued with a function that turns it into attributes.
* On a background thread (or in :func:`ragtrail.flush`, whichever comes first): the attributes are
  computed and the span is started and ended with the public tracer (``start_span(…, context=the
  caller's, start_time=…)``, ``end(end_time=…)``). The provider's id generator — the SDK's public
  plug point, :class:`PresetIdGenerator` on a provider ragtrail creates — hands the SDK the ids drawn
  on the caller's thread, so every processor and exporter sees an ordinary span with exactly those
  ids, at most ``_WAKE_S`` seconds later.

Nothing is lost: :func:`ragtrail.flush`, ``TracerProvider.force_flush``, :func:`ragtrail.shutdown` and
the exit hook drain the queue first (ragtrail's processor is the first one of a provider ragtrail
created); if the queue ever holds ``_MAX_QUEUE`` spans the caller builds its own span instead of
queueing more. Background mode is used only on a provider ragtrail created with its
:class:`PresetIdGenerator` and the SDK's default sampler (``sampling.DEFAULT_ON``: the decision is
then known on the caller's thread). Anywhere else — an application's own provider, whose processors
come before ragtrail's and would flush or shut down before a drain, or another sampler — spans are
built the ordinary way on the caller's thread with the same attributes.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import SpanContext, Status, TraceFlags

from ragtrail import semconv
from ragtrail._log import logger

__all__ = [
    "BackgroundSpan",
    "PresetIdGenerator",
    "Recorder",
    "defer_attributes",
    "enable",
    "finish",
    "merge_attributes",
    "start",
]

Compute = Callable[[], Mapping[str, Any]]
_WAKE_S = 0.05  # the worker's longest sleep
_WAKE_AT = 256  # queued spans that wake the worker at once
_MAX_QUEUE = 65_536  # beyond this the caller builds its span itself (backpressure, never a drop)
_RANDOM_FLAG = int(getattr(TraceFlags, "RANDOM_TRACE_ID", 0))  # W3C trace context level 2 (newer SDKs)


class PresetIdGenerator(RandomIdGenerator):
    """Random ids (the SDK's default generator), except while the background worker builds a span:
    then the SDK gets the ids that span was given on the caller's thread."""

    def __init__(self) -> None:
        self._preset = threading.local()

    def preset(self, trace_id: int, span_id: int) -> None:
        """The next ``generate_trace_id`` / ``generate_span_id`` on this thread return these."""
        self._preset.ids = (trace_id, span_id)

    def clear(self) -> None:
        self._preset.ids = None

    def generate_trace_id(self) -> int:
        ids = getattr(self._preset, "ids", None)
        return ids[0] if ids is not None else super().generate_trace_id()

    def generate_span_id(self) -> int:
        ids = getattr(self._preset, "ids", None)
        if ids is not None:
            self._preset.ids = None  # the SDK draws the trace id first, then the span id
            return int(ids[1])
        return super().generate_span_id()


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
    """What a connector holds between :func:`start` and :func:`finish`, and the current span meanwhile.

    A recording span for whatever runs inside the call (another connector adopting it, an embedding
    function setting an attribute on the current span): attributes, events, status and exceptions are
    kept here and handed to the SDK span when it is built."""

    __slots__ = (
        "attributes",
        "computes",
        "context",
        "end_ns",
        "events",
        "exceptions",
        "name",
        "on_error",
        "parent",
        "parent_ctx",
        "start_ns",
        "status",
        "worker",
    )  # fmt: skip

    def __init__(self, name: str, attributes: dict[str, Any], context: SpanContext, parent: SpanContext | None,
                 parent_ctx: Any, worker: _Worker) -> None:  # fmt: skip
        self.name = name
        self.attributes = attributes
        self.context = context
        self.parent = parent
        self.parent_ctx = parent_ctx
        self.worker = worker
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.computes: list[Compute] | None = None
        self.status: Status | None = None
        self.exceptions: list[tuple[BaseException, int, Any]] | None = None
        self.events: list[tuple[str, Any, int]] | None = None
        self.on_error: Callable[[str], None] | None = None

    def is_recording(self) -> bool:
        return self.end_ns == 0

    def get_span_context(self) -> SpanContext:
        return self.context

    def set_attribute(self, key: str, value: Any) -> None:
        if self.end_ns == 0:
            self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self.end_ns == 0:
            self.attributes.update(attributes)

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if self.end_ns == 0:
            if self.events is None:
                self.events = []
            self.events.append((name, dict(attributes) if attributes else None, timestamp or time.time_ns()))

    def add_link(self, context: SpanContext, attributes: Any = None) -> None:
        pass  # links must be given at start; ragtrail's connectors add none

    def update_name(self, name: str) -> None:
        if self.end_ns == 0:
            self.name = name

    def set_status(self, status: Any, description: str | None = None) -> None:
        if self.end_ns == 0:
            self.status = status if isinstance(status, Status) else Status(status, description)

    def record_exception(self, exception: BaseException, attributes: Any = None, timestamp: int | None = None,
                         escaped: bool = False) -> None:  # fmt: skip
        if self.end_ns == 0:
            if self.exceptions is None:
                self.exceptions = []
            self.exceptions.append((exception, timestamp or time.time_ns(), attributes))

    def end(self, end_time: int | None = None) -> None:
        pass  # ended by :func:`finish`, which also restores the context

    def __repr__(self) -> str:
        return f"BackgroundSpan({self.name!r}, span_id={self.context.span_id:016x})"


# ------------------------------------------------------------------------------------------ worker
class _Worker:
    """One per tracer: a queue of ended BackgroundSpans and the thread that turns them into SDK spans."""

    def __init__(self, tracer: Any, ids: PresetIdGenerator) -> None:
        self.tracer = tracer
        self.ids = ids
        # IdGenerator.is_trace_id_random() came with SDK 1.33 (W3C trace context level 2); before it the
        # SDK sets no random flag, and neither do we
        is_random = getattr(ids, "is_trace_id_random", None)
        self.root_flags = TraceFlags(
            TraceFlags.SAMPLED | (_RANDOM_FLAG if is_random is not None and is_random() else 0)
        )
        self.queue: deque[BackgroundSpan] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # held while spans are being emitted (worker or a flush)
        self._emitter: int | None = None  # the thread holding it
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
        self._emitter = None
        self._wake = threading.Event()
        self._thread = None

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(_WAKE_S)
            self._wake.clear()
            self.drain()

    def drain(self) -> None:
        """Emit every queued span (called by the worker and by flush/shutdown). Returns only once the
        span the worker may be emitting right now has ended too: the eval harness takes an example's
        trace right after this (an empty queue alone let it miss that span: one SciFact query in a CI
        run was scored from a trace without its retrieval)."""
        if not self.queue and not self._lock.locked():
            return
        me = threading.get_ident()
        if self._emitter == me:
            return  # called from inside an emit on this thread (a processor flushing in on_end)
        on_worker = threading.current_thread() is self._thread
        with self._lock:
            self._emitter = me
            try:
                self._drain_locked(on_worker)
            finally:
                self._emitter = None

    def _drain_locked(self, on_worker: bool) -> None:
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
        """Build, fill and end the SDK span for ``bs``. Never raises."""
        try:
            tracer = self.tracer
            attrs = bs.attributes
            if bs.computes:
                for compute in bs.computes:
                    try:
                        attrs.update(merge_attributes(attrs, compute()))
                    except Exception:  # the span still goes out, without these attributes
                        logger.debug("ragtrail: a deferred attribute function failed", exc_info=True)
                        if bs.on_error is not None:
                            bs.on_error("deferred attributes")
            self.ids.preset(bs.context.trace_id, bs.context.span_id)
            try:
                span = tracer.start_span(bs.name, context=bs.parent_ctx, attributes=attrs, start_time=bs.start_ns)
            finally:
                self.ids.clear()
            if bs.events:
                for ev_name, ev_attrs, ts in bs.events:
                    span.add_event(ev_name, ev_attrs, timestamp=ts)
            if bs.exceptions:
                for exc, ts, exc_attrs in bs.exceptions:
                    span.record_exception(exc, attributes=exc_attrs, timestamp=ts)
            if bs.status is not None:
                span.set_status(bs.status)
            span.end(end_time=bs.end_ns or time.time_ns())
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


def enable(tracer: Any) -> bool:
    """Use background spans for ``tracer`` if it can have them: a tracer of a provider ragtrail created
    (with a :class:`PresetIdGenerator`) and the SDK's default sampler. Returns whether it does."""
    from opentelemetry.sdk.trace import sampling

    ids = getattr(tracer, "id_generator", None)
    sampler = getattr(tracer, "sampler", None)
    # ragtrail's own sampler keeping every trace (sample_rate 1.0, no rules) decides as the default does
    keeps_all = sampler is sampling.DEFAULT_ON or getattr(sampler, "samples_all", False) is True
    if not isinstance(ids, PresetIdGenerator) or not keeps_all:
        return False
    with _workers_lock:
        w = _workers.get(id(tracer))
        if w is None or w.tracer is not tracer:
            _workers[id(tracer)] = _Worker(tracer, ids)
    return True


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

    The span is a :class:`BackgroundSpan` when the tracer allows it, else an SDK span.
    """
    w = _worker_for(tracer)
    if w is not None:
        ctx = otel_context.get_current()
        parent = otel_trace.get_current_span(ctx).get_span_context()
        parent_sc: SpanContext | None = None
        if not parent.is_valid:  # a root span
            sc = SpanContext(random.getrandbits(128) or 1, random.getrandbits(64) or 1, False, w.root_flags)
        elif parent.trace_flags.sampled:
            flags = TraceFlags(TraceFlags.SAMPLED | (parent.trace_flags & _RANDOM_FLAG))
            sc = SpanContext(parent.trace_id, random.getrandbits(64) or 1, False, flags, parent.trace_state)
            parent_sc = parent
        else:  # an unsampled parent: the SDK's path records nothing, as it should
            sc = None
        if sc is not None:
            bs = BackgroundSpan(name, attributes, sc, parent_sc, ctx, w)
            return bs, otel_context.attach(otel_trace.set_span_in_context(bs, ctx))
    span = tracer.start_span(name, attributes=attributes)
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
