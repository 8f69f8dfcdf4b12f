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
from ragtrail.tracing._content import (
    Sanitizer,
    active_sanitizer,
    mark_sanitized,
    sanitize_attributes,
    sanitize_events,
    sanitize_name,
)
from ragtrail.tracing._otel_fields import otel_fields, resource_json
from ragtrail.tracing._premasked import take_masked
from ragtrail.tracing._spool import Spool
from ragtrail.tracing._writer import REFUSED, ProcessWriter, WriterGone, _attr_dict, pack_spans

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


def _attrs_json(attrs: Any) -> str:
    if not attrs:
        return "{}"
    return _dumps(attrs)  # tuples (sequence attributes) serialise as JSON arrays


def span_to_row(
    span: ReadableSpan, project: str, *, mask: bool = True, policy: Sanitizer | None = None
) -> tuple[Any, ...]:
    """One store row (SPAN_COLUMNS order) from an ended SDK span.

    The span's name, attributes, events and status message go through the one sanitising step
    (:mod:`ragtrail.tracing._content`: secret masking unless ``mask`` is False, the user's ``mask``
    hook, the byte cap), whichever way they got onto the span.
    """
    if policy is None:
        policy = active_sanitizer(mask)
    ctx = span.context
    attrs = _attr_dict(span)
    if _KIND not in attrs:  # a span from another instrumentation: kind, tokens, cost (issue 21)
        attrs = classify(attrs) or attrs
    get = attrs.get
    parent = span.parent
    start = span.start_time or 0
    end = span.end_time or start
    events = span.events
    ev_json = None
    if events:
        ev = [{"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes or {})} for e in events]
        ev_json = _dumps(sanitize_events(ev, policy) or ev)
    model = get(_RESPONSE_MODEL) or get(_REQUEST_MODEL) or get(_EMBEDDING_MODEL)
    status = span.status
    code = status.status_code
    pre = {id(v) for v in attrs.values() if type(v) is str and take_masked(v)}
    attrs_json = _attrs_json(attrs)
    name = span.name
    clean, cut, n = sanitize_attributes(attrs, policy, pre, name)  # one secret search per span, name included
    if clean is not None:
        attrs = mark_sanitized(clean, attrs, cut, n)
        attrs_json = _attrs_json(attrs)
    if clean is not None or policy.hook is not None or len(name) > 1024:
        name = sanitize_name(name, policy)
    description = status.description
    if description:
        description = policy.capped(description)[0]
    return (
        format(ctx.trace_id, "032x"),
        format(ctx.span_id, "016x"),
        format(parent.span_id, "016x") if parent is not None and parent.is_valid else None,
        name,
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
        get(_CACHED_TOKENS),  # a value that is not a whole count is emptied and marked by storable_row
    )


_RESPONSE_MODEL = semconv.GEN_AI_RESPONSE_MODEL
_REQUEST_MODEL = semconv.GEN_AI_REQUEST_MODEL
_EMBEDDING_MODEL = semconv.EMBEDDING_MODEL
_KIND = semconv.SPAN_KIND
_IN_TOKENS = semconv.GEN_AI_USAGE_INPUT_TOKENS
_OUT_TOKENS = semconv.GEN_AI_USAGE_OUTPUT_TOKENS
_CACHED_TOKENS = semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS
_COST = semconv.COST_USD
_PROJECT = semconv.PROJECT
_SESSION = semconv.SESSION_ID
_USER = semconv.USER_ID
_ERROR = StatusCode.ERROR
_CHUNK = 512  # spans converted and written at a time within one export batch
_FRAME = 1_024  # spans per frame to the writer process
_IN_FLIGHT = 2  # frames sent to it and not yet answered
_OK = StatusCode.OK


class StoreSpanExporter(SpanExporter):
    """Writes spans into a :class:`~ragtrail.store.Store`. Counts exported, failed and errors.

    With a ``spool`` (the default from ``ragtrail.init``), batches the store cannot take are kept in
    a bounded local file and written back in order once the store answers again (see
    :mod:`ragtrail.tracing._spool`); without one they are counted as failed.
    """

    def __init__(
        self,
        store: Store,
        project: str = "default",
        *,
        retries: int = 3,
        backoff_s: float = 0.05,
        cooldown_s: float = 5.0,
        mask_secrets: bool = True,
        spool: Spool | None = None,
        probe_s: float = 1.0,
        writer: ProcessWriter | None = None,
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
        self.spool = spool
        self.writer = writer
        self.probe_s = probe_s
        self._next_probe = 0.0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer at a time: spooled batches keep their order
        self._shutdown = False
        self._replayer: threading.Thread | None = None
        self._wake = threading.Event()
        if spool is not None:
            spool.adopt_orphans()
            if spool.pending:
                self._start_replayer()

    @property
    def spooled(self) -> int:
        """Spans waiting in the spool (this process's and the writer process's) for the store."""
        n = self.spool.pending if self.spool is not None else 0
        return n + (self.writer.spooled if self.writer is not None else 0)

    @property
    def spool_dropped(self) -> int:
        """Spans the spool dropped at its size cap (oldest first)."""
        n = self.spool.dropped if self.spool is not None else 0
        return n + (self.writer.spool_dropped if self.writer is not None else 0)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown:
            return SpanExportResult.FAILURE
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_KEY, True))  # never trace ourselves
        try:
            writer = self.writer
            if writer is not None and writer.auto and not writer.ready and not writer.disabled:
                writer.load(len(spans))  # writer="auto": in-process until the load calls for the child
            result = SpanExportResult.SUCCESS
            tries = 1  # the writer process is tried once per batch; what it does not confirm is written here
            step = _CHUNK
            i, n = 0, len(spans)
            while True:
                if tries and writer is not None and not writer.disabled and (writer.ready or not writer.auto):
                    # writer="process", or "auto" once its child is up (also in the middle of a batch)
                    tries = 0
                    rest, ok = self._export_via_writer(spans[i:] if i else spans)
                    if not ok:
                        result = SpanExportResult.FAILURE
                    if not rest:
                        return result
                    spans, i, n = rest, 0, len(rest)
                if i >= n:
                    return result
                # rows are built and written a chunk at a time: the rows of a whole batch (up to 8,192 spans,
                # each with a copy of its content as JSON) would be a transient peak of ~40 MB that glibc
                # keeps after it is freed (issue 24: the soak's RSS grew with the export batch, not the heap)
                chunk = spans[i : i + step] if n > step else spans
                i += step
                try:
                    mask = self.mask_secrets
                    rows = [span_to_row(s, self.project, mask=mask) for s in chunk]
                except Exception:
                    warn_once("export-convert", "ragtrail: could not convert spans for the store", exc_info=True)
                    with self._lock:
                        self.failed += len(chunk)
                        self.errors += 1
                    result = SpanExportResult.FAILURE
                    continue
                with self._write_lock:
                    if self._write_locked(rows) is not SpanExportResult.SUCCESS:
                        result = SpanExportResult.FAILURE
                del rows
        finally:
            otel_context.detach(token)

    def _export_via_writer(self, spans: Sequence[ReadableSpan]) -> tuple[Sequence[ReadableSpan], bool]:
        """Hand the batch to the writer process, ``_FRAME`` spans per frame, with up to ``_IN_FLIGHT``
        frames sent and not yet answered: the next frame is packed, and waits in the pipe, while the child
        writes (so the child never waits for this process to get the GIL back). Returns (the spans it did
        not take, to be written in-process: empty when it took them all; False when it counted some as
        failed). A frame the child could not read, or did not answer, is written here: nothing is lost."""
        writer = self.writer
        assert writer is not None
        ok = True
        sent: list[int] = []  # starts of the frames in flight, oldest first
        back: list[ReadableSpan] = []  # frames the child handed back
        start = 0

        def answer() -> None:
            nonlocal ok
            s0 = sent[0]
            exported, failed = writer.collect()  # WriterGone leaves the frame listed as unconfirmed
            del sent[0]
            if exported == REFUSED:
                back.extend(spans[s0 : s0 + _FRAME])
                return
            ok = self._count_answer((exported, failed)) and ok

        with self._write_lock:
            try:
                for start in range(0, len(spans), _FRAME):
                    payload = pack_spans(spans[start : start + _FRAME])
                    if len(sent) >= _IN_FLIGHT:
                        answer()
                    writer.send(payload)
                    sent.append(start)
                while sent:
                    answer()
            except WriterGone as exc:
                warn_once("writer-gone", "ragtrail: the writer process is unavailable (%s); writing in-process", exc)
                return [*back, *spans[sent[0] if sent else start :]], ok
            except Exception:
                warn_once("writer-pack", "ragtrail: could not hand spans to the writer process", exc_info=True)
                while sent:  # the answers of the frames in flight come first, or later ones would be misread
                    try:
                        answer()
                    except WriterGone:
                        return [*back, *spans[sent[0] :]], ok
                return [*back, *spans[start:]], ok
        return back, ok

    def _count_answer(self, answer: tuple[int, int]) -> bool:
        exported, failed = answer
        with self._lock:
            self.exported += exported
            self.failed += failed
            if failed:
                self.errors += 1
        return not failed

    def _write_locked(self, rows: list[tuple[Any, ...]]) -> SpanExportResult:
        spool = self.spool
        if spool is not None and spool.pending:
            # spans spooled earlier go first; while they cannot, this batch queues behind them
            if not self._replay_locked(force=False):
                return self._to_spool(rows, None)
        if spool is not None and time.monotonic() < self._broken_until:
            return self._to_spool(rows, None)  # the store failed a moment ago: do not block on it
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
                    self._broken_until = time.monotonic() + (self.probe_s if spool is not None else self.cooldown_s)
                    self._next_probe = self._broken_until
                    with self._lock:
                        self.errors += 1
                    if spool is not None:
                        return self._to_spool(rows, exc)
                    with self._lock:
                        self.failed += len(rows)
                    self._warn(exc, len(rows), attempts, "failed spans are counted in ragtrail.stats()")
                    return SpanExportResult.FAILURE
                time.sleep(delay)
                delay *= 4
        return SpanExportResult.FAILURE  # pragma: no cover

    def _warn(self, exc: BaseException, n: int, attempts: int, what: str) -> None:
        warn_once(
            f"export-fail:{type(exc).__name__}",
            "ragtrail: could not write %d spans to the store %s after %d attempt(s) (%s); "
            "the application continues, %s",
            n,
            getattr(self.store, "url", "?"),
            attempts,
            exc,
            what,
        )

    def _to_spool(self, rows: list[tuple[Any, ...]], exc: BaseException | None) -> SpanExportResult:
        spool = self.spool
        assert spool is not None
        if exc is not None:
            self._warn(exc, len(rows), 1, f"spans are spooled in {spool.dir} and written when it is back")
        if spool.append(rows):
            self._start_replayer()
            return SpanExportResult.SUCCESS
        with self._lock:
            self.failed += len(rows)
        return SpanExportResult.FAILURE

    def _replay_locked(self, *, force: bool) -> bool:
        """Write spooled batches back (oldest first); True when the spool is empty. Probes a store
        that failed at most every ``probe_s`` unless ``force``."""
        spool = self.spool
        if spool is None or not spool.pending:
            return True
        now = time.monotonic()
        if not force and now < self._next_probe:
            return False
        before = spool.replayed
        try:
            empty = spool.replay(self.store.write_spans)
        except Exception:
            self._next_probe = time.monotonic() + self.probe_s
            self._broken_until = self._next_probe
            empty = False
        else:
            self._broken_until = 0.0
        with self._lock:
            self.exported += spool.replayed - before
        return empty

    def _start_replayer(self) -> None:
        """A daemon thread that writes the spool back while no new batches arrive to do it."""
        if self._replayer is not None:  # called under the write lock; the loop clears it under the lock too
            return
        t = threading.Thread(target=self._replay_loop, name="ragtrail-spool-replay", daemon=True)
        self._replayer = t
        t.start()

    def _replay_loop(self) -> None:
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_KEY, True))
        try:
            while True:
                self._wake.wait(self.probe_s)
                self._wake.clear()
                with self._write_lock:
                    if self._shutdown or self.spool is None or not self.spool.pending:
                        self._replayer = None
                        return
                    self._replay_locked(force=False)
        except Exception:  # pragma: no cover - the replayer must never die loudly
            warn_once("spool-replay", "ragtrail: the spool replayer failed", exc_info=True)
        finally:
            otel_context.detach(token)

    def shutdown(self) -> None:
        if self.writer is not None:
            with self._write_lock:
                self.writer.close()  # the child writes what it holds back first, if the store answers
        if self.spool is not None and self.spool.pending:
            with self._write_lock:
                self._replay_locked(force=True)  # what cannot be written stays on disk for next time
        self._shutdown = True
        self._wake.set()
        if self.spool is not None:
            self.spool.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write the spool back now if the store answers; True when nothing is left in it."""
        left = 0
        if self.writer is not None and not self.writer.disabled and self.writer.spooled:
            try:
                with self._write_lock:
                    left = self.writer.replay()
            except WriterGone:
                pass
        if self.spool is None or not self.spool.pending:
            return left == 0
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_KEY, True))
        try:
            if not self._write_lock.acquire(timeout=max(0.001, timeout_millis / 1000)):
                return False
            try:
                return self._replay_locked(force=True) and left == 0
            finally:
                self._write_lock.release()
        finally:
            otel_context.detach(token)
