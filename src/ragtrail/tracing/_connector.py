"""What the tracing core offers connectors beyond the span helpers: starting a span of a kind, the
failure counter every connector reports its own failures to (with a guard decorator), and which
connectors are instrumented (a Ray worker instruments the same ones).

Everything a connector uses is exported by :mod:`ragtrail.tracing` (the public connector API);
connectors import nothing else from ragtrail but :mod:`ragtrail.semconv`."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from opentelemetry import trace as otel_trace

from ragtrail import semconv
from ragtrail._log import warn_once

F = TypeVar("F", bound=Callable[..., Any])

_instrumented: set[tuple[str, str]] = set()
_lock = threading.Lock()


def note_instrumented(cls: type, on: bool) -> None:
    """Record that connector class ``cls`` is (``on``) or is no longer instrumented."""
    key = (cls.__module__, cls.__qualname__)
    with _lock:
        if on:
            _instrumented.add(key)
        else:
            _instrumented.discard(key)


def instrumented_connectors() -> list[tuple[str, str]]:
    """``(module, class name)`` of every ragtrail connector instrumented in this process."""
    with _lock:
        return sorted(_instrumented)


def start_span(name: str, kind: str, attributes: Mapping[str, Any] | None = None) -> otel_trace.Span:
    """Start (not as the current span) a span named ``name`` of ragtrail ``kind`` (``semconv.LLM``,
    ``semconv.RETRIEVER``…) with ``attributes``; a non-recording span before ``ragtrail.init()``."""
    from ragtrail.tracing._setup import get_config

    cfg = get_config()
    if cfg is None:
        return otel_trace.INVALID_SPAN
    attrs = dict(attributes or {})
    attrs[semconv.SPAN_KIND] = kind
    return cfg.tracer.start_span(name, attributes=attrs)


class FailureCounter:
    """Counts a connector's own failures to record something (the user's call never fails because of
    them) and logs each kind of failure once. A connector exposes ``failures = counter.count``."""

    def __init__(self, key: str, label: str) -> None:
        self.key = key
        self.label = label
        self._n = 0
        self._lock = threading.Lock()

    def count(self) -> int:
        """How many times the connector's own attribute extraction failed."""
        return self._n

    def failed(self, where: str) -> None:
        """Count one failure to record ``where``; log it once per kind (with the traceback)."""
        with self._lock:
            self._n += 1
        warn_once(
            f"{self.key}:{where}", "ragtrail: %s could not record %s (logged once)", self.label, where, exc_info=True
        )

    def guard(self, where: str, default: Any = None) -> Callable[[F], F]:
        """Decorator: a call of the decorated function that raises is counted and logged once as a
        failure to record ``where`` and returns ``default``; the user's code never sees the error."""

        def wrap(fn: F) -> F:
            @functools.wraps(fn)
            def guarded(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except Exception:
                    self.failed(where)
                    return default

            return guarded  # type: ignore[return-value]

        return wrap
