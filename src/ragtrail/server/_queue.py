"""A bounded span queue and the one writer thread that drains it into the store.

The queue is bounded in *spans*, not requests: a request whose spans do not fit is refused at once
(the transports answer HTTP 429 / gRPC RESOURCE_EXHAUSTED with a retry delay), so memory stays bounded
however fast senders push. Nothing is ever buffered beyond ``max_spans``.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry import context as otel_context

from ragtrail._log import logger, warn_once
from ragtrail.store import Store

_SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY  # type: ignore[attr-defined]


class SpanQueue:
    """Bounded FIFO of span rows with a writer thread writing batches through ``Store.write_spans``."""

    def __init__(
        self,
        store: Store,
        *,
        max_spans: int = 100_000,
        batch_size: int = 2_000,
        retries: int = 10,  # about 26 s of back-off: rides out a database restart
        backoff_s: float = 0.1,
    ) -> None:
        if max_spans < 1:
            raise ValueError("max_spans must be at least 1")
        self.store = store
        self.max_spans = max_spans
        self.batch_size = batch_size
        self.retries = retries
        self.backoff_s = backoff_s
        self._batches: collections.deque[Sequence[Any]] = collections.deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._writing = 0
        self.received = 0
        self.written = 0
        self.duplicates = 0
        self.failed = 0
        self.refused = 0
        self.write_errors = 0
        self.healthy = True
        self._thread = threading.Thread(target=self._run, name="ragtrail-serve-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Spans accepted but not yet written."""
        return self._pending + self._writing

    def offer(self, rows: Sequence[Any]) -> bool:
        """Queue ``rows`` if they fit; False (nothing queued) when the queue is full or stopping."""
        n = len(rows)
        if n == 0:
            return True
        with self._cond:
            if self._stopping:
                return False
            # An empty queue takes any request, so a request larger than the queue still gets through
            # (its size is already bounded by the request body limit).
            if self._pending + self._writing and self._pending + self._writing + n > self.max_spans:
                self.refused += n
                return False
            self._batches.append(rows)
            self._pending += n
            self.received += n
            self._cond.notify()
            return True

    def _take(self) -> list[Any] | None:
        with self._cond:
            while not self._batches:
                if self._stopping:
                    return None
                self._cond.wait(0.5)
            out: list[Any] = []
            while self._batches and (not out or len(out) + len(self._batches[0]) <= self.batch_size):
                out.extend(self._batches.popleft())
            self._pending -= len(out)
            self._writing = len(out)
            return out

    def _run(self) -> None:
        token = otel_context.attach(otel_context.set_value(_SUPPRESS_KEY, True))  # never trace ourselves
        try:
            while True:
                rows = self._take()
                if rows is None:
                    return
                self._write(rows)
                with self._cond:
                    self._writing = 0
                    self._cond.notify_all()
        finally:
            otel_context.detach(token)

    def _write(self, rows: list[Any]) -> None:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                stored = self.store.write_spans(rows)
                n = stored if isinstance(stored, int) else len(rows)
                self.written += n  # rows stored: spans sent again (already stored) are not counted
                self.duplicates += len(rows) - n
                self.healthy = True
                return
            except Exception as exc:
                self.write_errors += 1
                self.healthy = False
                if attempt == self.retries:
                    self.failed += len(rows)
                    warn_once(
                        f"serve-write:{type(exc).__name__}",
                        "ragtrail serve: could not write %d spans to %s after %d attempts (%s); they are lost",
                        len(rows),
                        getattr(self.store, "url", "?"),
                        self.retries + 1,
                        exc,
                    )
                    return
                logger.debug("ragtrail serve: store write failed, retrying", exc_info=True)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every accepted span is written (or failed); True when the queue emptied in time."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def close(self, timeout_s: float = 30.0) -> bool:
        """Stop accepting, write what is queued, stop the writer. True when everything was written."""
        ok = self.drain(timeout_s)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout_s)
        return ok and not self._thread.is_alive()

    def stats(self) -> dict[str, int]:
        """Counters: received, written (stored), duplicates (already stored), failed, refused (spans),
        pending, write_errors."""
        return {
            "received": self.received,
            "written": self.written,
            "duplicates": self.duplicates,
            "failed": self.failed,
            "refused": self.refused,
            "pending": self.pending,
            "write_errors": self.write_errors,
        }
