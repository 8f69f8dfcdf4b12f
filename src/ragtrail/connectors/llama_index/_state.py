"""Bookkeeping of the LlamaIndex connector: the failure count, one record per open OTel span, the table
of open spans keyed by LlamaIndex span id (with the private helper spans folded into their parent), and
ending a span together with the generator-returning spans below it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from opentelemetry import context as otel_context
from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail.connectors._common import FailureCounter

_counter = FailureCounter("llama_index", "the LlamaIndex connector")
failures = _counter.count
_failed = _counter.failed


@dataclass
class _Open:
    span: Span
    kind: str
    parent_id: str | None
    token: object | None
    start: float = field(default_factory=time.perf_counter)
    llm_start: float | None = None
    first_token: float | None = None
    provider: str | None = None
    model: str | None = None
    pending: bool = False  # a streamed call whose LlamaIndex span ended before the stream did
    embed_count: int = 0
    parent: _Open | None = None  # the open record this span's OTel parent came from
    component: str | None = None  # "postprocessor" | "selector" for their private-method spans
    stream_text: str | None = None  # a streamed LLM's final text, given to the spans waiting on it
    stream_owner: bool = False  # returned a response object whose stream ends it (see _wrap_stream)
    instance_id: int | None = None


class _State:
    """Open spans keyed by LlamaIndex span id; skipped (folded) ids mapped to their parent id."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[str, _Open] = {}
        self.skipped: dict[str, str | None] = {}

    def waiting_on(self, rec: _Open) -> bool:
        """Whether a streamed LLM call below ``rec`` has still to end (call with the lock held)."""
        for other in self.open.values():
            if other is rec or not other.pending or other.kind != semconv.LLM:
                continue
            up = other.parent
            while up is not None:
                if up is rec:
                    return True
                up = up.parent
        return False

    def streaming_llm(self, owner: _Open, instance_id: int) -> str | None:
        """The id of a pending LLM span of ``instance_id`` under ``owner``, if one is streaming."""
        with self.lock:
            for key, other in self.open.items():
                if other.kind != semconv.LLM or not other.pending or other.instance_id != instance_id:
                    continue
                up = other.parent
                while up is not None:
                    if up is owner:
                        return key
                    up = up.parent
        return None

    def resolve(self, span_id: str | None) -> _Open | None:
        hops = 0
        with self.lock:
            while span_id is not None and hops < 256:
                rec = self.open.get(span_id)
                if rec is not None:
                    return rec
                if span_id not in self.skipped:
                    return None
                span_id = self.skipped[span_id]
                hops += 1
        return None

    def clear(self) -> None:
        with self.lock:
            recs = list(self.open.values())
            self.open.clear()
            self.skipped.clear()
        for rec in recs:
            try:
                rec.span.end()
            except Exception:
                pass


_STATE = _State()


def _detach(token: object | None) -> None:
    if token is None:
        return
    try:
        otel_context._RUNTIME_CONTEXT.detach(token)  # type: ignore[attr-defined,arg-type]
    except Exception:
        # LlamaIndex ended the span in another context (a Future's callback): nothing to restore here
        pass


def _end(span_id: str, rec: _Open) -> None:
    with _STATE.lock:
        _STATE.open.pop(span_id, None)
        # generator-returning spans below it that no streamed LLM call keeps open end with it
        below = [
            (k, v)
            for k, v in _STATE.open.items()
            if v.pending and v.kind != semconv.LLM and _below(v, rec) and not _STATE.waiting_on(v)
        ]
    below.sort(key=lambda kv: -_depth(kv[1]))
    for k, v in below:
        with _STATE.lock:
            _STATE.open.pop(k, None)
        v.span.end()
    rec.span.end()


def _depth(rec: _Open) -> int:
    n, up = 0, rec.parent
    while up is not None:
        n, up = n + 1, up.parent
    return n


def _below(rec: _Open, ancestor: _Open) -> bool:
    up = rec.parent
    while up is not None:
        if up is ancestor:
            return True
        up = up.parent
    return False


def _end_record(rec: _Open) -> None:
    with _STATE.lock:
        ids = [k for k, v in _STATE.open.items() if v is rec]
    for k in ids:
        _end(k, rec)
