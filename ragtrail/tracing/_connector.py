"""What the tracing core keeps for connectors: the failure counter every connector reports its own
failures to, and which connectors are instrumented (a Ray worker instruments the same ones)."""

from __future__ import annotations

import threading

from ragtrail._log import warn_once

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
