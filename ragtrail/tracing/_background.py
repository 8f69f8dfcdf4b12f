"""Background spans: a span whose SDK object is built off the traced call's thread.

A Chroma query over an in-memory index takes about a millisecond. Building an OpenTelemetry SDK span
for it (sampler, limits, attribute validation, processors) and turning its result into attributes
(documents as capped, secret-masked JSON) would cost the caller several percent of that. Connectors on
such hot paths use :func:`start` / :func:`finish` instead of the SDK's ``start_span``:

* On the caller's thread: the span's ids are drawn from the tracer's id generator, a lightweight
  :class:`BackgroundSpan` carrying them becomes the current span while the call runs (so child spans —
  an embedding call, an HTTP client span — get the right parent; code that
  adopts or annotates the current span writes into it), the start and end times are read,
  and a *snapshot* of the result (plain data, copied so the application cannot change it afterwards)
  is queued with a function that turns it into attributes.
* On a background thread (or in :func:`ragtrail.flush`, whichever comes first): the SDK span is built
  with exactly those ids and times, the attributes are computed, and it is started and ended, so every
  span processor and exporter sees an ordinary span, at most ``_WAKE_S`` seconds later.

Nothing is lost: :func:`ragtrail.flush`, ``TracerProvider.force_flush``, :func:`ragtrail.shutdown` and
the exit hook drain the queue first; if the queue ever holds ``_MAX_QUEUE`` spans the caller builds its
own span instead of queueing more. Background mode needs the SDK's default sampler (parent-based,
always-on); with any other sampler, or when the SDK's internals differ from what this module knows, a
span is built the ordinary way on the caller's thread with the same attributes.
"""

from __future__ import annotations

import inspect
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanContext, Status

from ragtrail import semconv
from ragtrail._log import logger

__all__ = ["BackgroundSpan", "Recorder", "defer_attributes", "finish", "merge_attributes", "start"]

Compute = Callable[[], Mapping[str, Any]]
_WAKE_S = 0.05  # the worker's longest sleep
_WAKE_AT = 256  # queued spans that wake the worker at once
_MAX_QUEUE = 65_536  # beyond this the caller builds its span itself (backpressure, never a drop)
_DEFAULT_SAMPLER = (
    "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,"
    "localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"
)


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

    def __init__(self, tracer: Any) -> None:
        from opentelemetry.sdk import trace as sdk_trace
        from opentelemetry.sdk.trace.sampling import Decision

        self.tracer = tracer
        SdkSpan = getattr(sdk_trace, "_Span", sdk_trace.Span)  # the class the SDK's tracer instantiates  # noqa: N806
        self._span_cls = SdkSpan
        params = inspect.signature(SdkSpan.__init__).parameters
        self._with_metrics = "record_end_metrics" in params
        self._decision = Decision.RECORD_AND_SAMPLE
        from opentelemetry.trace import TraceFlags

        flags = TraceFlags.SAMPLED
        random_flag = getattr(TraceFlags, "RANDOM_TRACE_ID", None)
        try:
            if random_flag is not None and tracer.id_generator.is_trace_id_random():
                flags |= random_flag
        except Exception:
            pass
        self.root_flags = TraceFlags(flags)
        self.queue: deque[BackgroundSpan] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # held while spans are being emitted (worker or a flush)
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.emitted = 0
        self.failures = 0

    @staticmethod
    def usable(tracer: Any) -> bool:
        """The tracer is an SDK tracer with the default sampler and the fields this module relies on."""
        try:
            from opentelemetry.sdk import trace as sdk_trace

            if not isinstance(tracer, sdk_trace.Tracer):
                return False
            if not hasattr(sdk_trace, "_Span"):
                return False
            for attr in ("sampler", "resource", "span_processor", "id_generator", "_span_limits",
                         "_instrumentation_scope", "instrumentation_info"):  # fmt: skip
                if not hasattr(tracer, attr):
                    return False
            sampler = tracer.sampler
            if sampler.get_description() == _DEFAULT_SAMPLER:
                return True
            from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased

            # the default by structure, should a future SDK describe it differently
            return (
                type(sampler) is ParentBased
                and getattr(sampler, "_root", None) is ALWAYS_ON
                and getattr(sampler, "_remote_parent_sampled", ALWAYS_ON) is ALWAYS_ON
                and getattr(sampler, "_local_parent_sampled", ALWAYS_ON) is ALWAYS_ON
            )
        except Exception:
            return False

    def enabled(self) -> bool:
        check = getattr(self.tracer, "_is_enabled", None)
        return bool(check()) if check is not None else True

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
            kw: dict[str, Any] = {}
            if self._with_metrics:
                tm = getattr(tracer, "_tracer_metrics", None)
                if tm is not None:
                    try:
                        kw["record_end_metrics"] = tm.start_span(bs.parent, self._decision)
                    except Exception:
                        pass
            span = self._span_cls(
                name=bs.name,
                context=bs.context,
                parent=bs.parent,
                sampler=tracer.sampler,
                resource=tracer.resource,
                attributes=attrs,
                span_processor=tracer.span_processor,
                instrumentation_info=tracer.instrumentation_info,
                limits=tracer._span_limits,
                instrumentation_scope=tracer._instrumentation_scope,
                **kw,
            )
            span.start(start_time=bs.start_ns, parent_context=bs.parent_ctx)
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


def _worker_for(tracer: Any) -> _Worker | None:
    w = _workers.get(id(tracer))
    if w is not None and w.tracer is tracer:
        return w
    if not _Worker.usable(tracer):
        return None
    with _workers_lock:
        w = _workers.get(id(tracer))
        if w is None or w.tracer is not tracer:
            w = _Worker(tracer)
            _workers[id(tracer)] = w
        return w


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
    if w is not None and w.enabled():
        ctx = otel_context.get_current()
        parent = otel_trace.get_current_span(ctx).get_span_context()
        gen = tracer.id_generator
        parent_sc: SpanContext | None = None
        if not parent.is_valid:  # a root span
            sc = SpanContext(gen.generate_trace_id(), gen.generate_span_id(), False, w.root_flags)
        elif parent.trace_flags.sampled:
            sc = SpanContext(parent.trace_id, gen.generate_span_id(), False, parent.trace_flags, parent.trace_state)
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
