"""Adaptive concurrency: back off on rate limits and timeouts, honour ``Retry-After``, recover slowly.

One :class:`AdaptiveLimiter` is shared by all the calls of an evaluation (pipeline calls, LLM judges).
It works from threads (``with limiter.slot(): ...`` / ``limiter.call(fn)``) and from asyncio
(``async with limiter.aslot(): ...`` / ``await limiter.acall(fn)``).

* A rate-limit error (HTTP 429, or an exception class named like ``RateLimitError``) halves the
  concurrency limit and pauses new calls for the server's ``Retry-After`` (else an exponential
  backoff with jitter); the call is retried up to ``max_retries`` times.
* A timeout (``TimeoutError``, an exception class named like ``…Timeout…``) or an overloaded server
  (HTTP 503/529) backs off the same way.
* A dropped connection (``ConnectionError``, httpx's ``ConnectError``/``RemoteProtocolError``, the
  SDKs' ``APIConnectionError``, anywhere in the exception's cause chain) is retried after a short
  jittered delay, at most ``CONNECTION_RETRIES`` times, without pausing other calls: a busy server
  that resets a few connections should not fail examples, while a server that is down still fails fast.
* After ``increase_after`` consecutive successes the limit grows by one, up to ``max_concurrency``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from ragtrail._log import logger

T = TypeVar("T")

__all__ = ["CONNECTION_RETRIES", "AdaptiveLimiter", "Backoff", "classify_error", "retry_after_seconds"]

CONNECTION_RETRIES = 3
_CONNECTION_NAMES = ("connecterror", "connectionerror", "remoteprotocolerror", "serverdisconnected", "readerror")

_RATE_LIMIT_CODES = {429}
_OVERLOADED_CODES = {408, 502, 503, 504, 529}


def _status_code(exc: BaseException) -> int | None:
    for obj in (exc, getattr(exc, "response", None)):
        if obj is None:
            continue
        for attr in ("status_code", "status", "http_status", "code"):
            v = getattr(obj, attr, None)
            if isinstance(v, int) and 100 <= v < 600:
                return v
    return None


def _headers(exc: BaseException) -> Any:
    for obj in (getattr(exc, "response", None), exc):
        h = getattr(obj, "headers", None) if obj is not None else None
        if h is not None:
            return h
    return None


def retry_after_seconds(exc: BaseException) -> float | None:
    """The server's requested wait from ``Retry-After`` / ``retry-after-ms`` headers or a
    ``retry_after`` attribute; None when it gave none."""
    v = getattr(exc, "retry_after", None)
    if isinstance(v, (int, float)) and v >= 0:
        return float(v)
    h = _headers(exc)
    if h is None:
        return None
    try:
        get = h.get
    except AttributeError:
        return None
    ms = get("retry-after-ms") or get("Retry-After-Ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except (TypeError, ValueError):
            pass
    ra = get("retry-after") or get("Retry-After")
    if ra is None:
        return None
    try:
        return max(0.0, float(ra))
    except (TypeError, ValueError):
        pass
    try:
        when = parsedate_to_datetime(str(ra))
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


def _is_connection_error(exc: BaseException) -> bool:
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        if isinstance(e, ConnectionError):
            return True
        name = type(e).__name__.lower()
        if any(n in name for n in _CONNECTION_NAMES):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def classify_error(exc: BaseException) -> str | None:
    """``"rate_limit"``, ``"timeout"``, ``"overloaded"`` for errors worth backing off on,
    ``"connection"`` for a dropped/refused connection worth a quick retry, else None."""
    code = _status_code(exc)
    name = type(exc).__name__.lower()
    if code in _RATE_LIMIT_CODES or "ratelimit" in name or "rate_limit" in name or "toomanyrequests" in name:
        return "rate_limit"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "timeout" in name:
        return "timeout"
    if code in _OVERLOADED_CODES or "overloaded" in name or "serviceunavailable" in name:
        return "overloaded"
    if code is None and _is_connection_error(exc):
        return "connection"
    return None


@dataclass
class Backoff:
    """Retry schedule when the server gives no ``Retry-After``: ``base * 2**attempt`` with full jitter."""

    base_s: float = 0.5
    max_s: float = 60.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0.5, 1.0) * min(self.max_s, self.base_s * (2**attempt))


class AdaptiveLimiter:
    """A concurrency limit that shrinks on rate limits/timeouts and grows back on success.

    Args:
        max_concurrency: the ceiling (and starting value) of concurrent calls.
        min_concurrency: the floor the limit never goes below.
        increase_after: consecutive successes before the limit grows by one.
        max_retries: retries of one call on rate limits/timeouts (``call``/``acall``).
        backoff: schedule used when the server gives no ``Retry-After``.
        max_wait_s: the longest single pause honoured (a larger ``Retry-After`` is capped).
    """

    def __init__(
        self,
        max_concurrency: int = 8,
        *,
        min_concurrency: int = 1,
        increase_after: int = 20,
        max_retries: int = 6,
        backoff: Backoff | None = None,
        max_wait_s: float = 120.0,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.max_concurrency = int(max_concurrency)
        self.min_concurrency = max(1, min(int(min_concurrency), self.max_concurrency))
        self.increase_after = max(1, int(increase_after))
        self.max_retries = int(max_retries)
        self.backoff = backoff or Backoff()
        self.max_wait_s = float(max_wait_s)
        self._limit = self.max_concurrency
        self._in_flight = 0
        self._successes = 0
        self._paused_until = 0.0
        self._cond = threading.Condition()
        self.n_backoffs = 0
        self.n_retries = 0

    def __repr__(self) -> str:
        return f"AdaptiveLimiter(limit={self._limit}/{self.max_concurrency}, in_flight={self._in_flight})"

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # ------------------------------------------------------------------------------ feedback
    def on_success(self) -> None:
        with self._cond:
            self._successes += 1
            if self._successes >= self.increase_after and self._limit < self.max_concurrency:
                self._limit += 1
                self._successes = 0
                self._cond.notify_all()

    def on_backoff(self, kind: str, retry_after: float | None, attempt: int = 0) -> float:
        """Shrink the limit and pause new calls; returns the pause in seconds."""
        wait = retry_after if retry_after is not None else self.backoff.delay(attempt)
        wait = min(max(0.0, wait), self.max_wait_s)
        with self._cond:
            self.n_backoffs += 1
            self._successes = 0
            new = (
                max(self.min_concurrency, math.floor(self._limit / 2))
                if kind == "rate_limit"
                else max(self.min_concurrency, self._limit - 1)
            )
            if new != self._limit:
                logger.info("ragtrail: %s; concurrency %d -> %d, pausing %.2fs", kind, self._limit, new, wait)
            self._limit = new
            self._paused_until = max(self._paused_until, time.monotonic() + wait)
        return wait

    # ------------------------------------------------------------------------------ slots
    def _try_acquire(self) -> float:
        """0.0 when a slot was taken, else how long to wait before trying again."""
        with self._cond:
            now = time.monotonic()
            if now < self._paused_until:
                return self._paused_until - now
            if self._in_flight < self._limit:
                self._in_flight += 1
                return 0.0
            return -1.0

    def acquire(self) -> None:
        while True:
            w = self._try_acquire()
            if w == 0.0:
                return
            with self._cond:
                self._cond.wait(timeout=w if w > 0 else 0.5)

    def release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify()

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    async def aacquire(self) -> None:
        delay = 0.001
        while True:
            w = self._try_acquire()
            if w == 0.0:
                return
            await asyncio.sleep(w if w > 0 else delay)
            delay = min(delay * 2, 0.05)

    @contextlib.asynccontextmanager
    async def aslot(self) -> AsyncIterator[None]:
        await self.aacquire()
        try:
            yield
        finally:
            self.release()

    # ------------------------------------------------------------------------------ calls
    def _retry_wait(self, exc: BaseException, attempt: int) -> float | None:
        """How long to wait before retrying after ``exc`` on attempt ``attempt``; None: do not retry.

        A dropped connection waits briefly for this call only (no global pause, no limit change) and
        is retried at most ``CONNECTION_RETRIES`` times; other retryable errors back off for everyone."""
        kind = classify_error(exc)
        if kind is None:
            return None
        if kind == "connection":
            if attempt >= min(self.max_retries, CONNECTION_RETRIES):
                return None
            with self._cond:
                self._successes = 0
            return self.backoff.delay(attempt) / 2
        if attempt >= self.max_retries:
            return None
        return self.on_backoff(kind, retry_after_seconds(exc), attempt)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``fn`` in a slot, retrying rate limits/timeouts with backoff; other errors propagate."""
        attempt = 0
        while True:
            with self.slot():
                try:
                    result = fn(*args, **kwargs)
                except Exception as exc:
                    wait = self._retry_wait(exc, attempt)
                    if wait is None:
                        raise
                else:
                    self.on_success()
                    return result
            attempt += 1
            self.n_retries += 1
            time.sleep(wait)

    async def acall(self, fn: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Await ``fn(*args)`` in a slot, retrying rate limits/timeouts with backoff."""
        attempt = 0
        while True:
            async with self.aslot():
                try:
                    result = await fn(*args, **kwargs)
                except Exception as exc:
                    wait = self._retry_wait(exc, attempt)
                    if wait is None:
                        raise
                else:
                    self.on_success()
                    return result
            attempt += 1
            self.n_retries += 1
            await asyncio.sleep(wait)
