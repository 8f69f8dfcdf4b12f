"""The judges' limiter: the harness's adaptive limiter, with waiters woken across event loops and one
cut of the limit per congestion event."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ragtrail.evals._concurrency import AdaptiveLimiter


class JudgeLimiter(AdaptiveLimiter):
    """The harness's :class:`AdaptiveLimiter`, cutting the limit once per congestion event.

    Requests already in flight when a 429 arrives will mostly be rejected too; counting each of
    them as a new event would collapse the limit to its floor (one call at a time: a throughput of
    1 / latency, far below what the server allows). A rejection that arrives before the current
    pause has ended plus one round trip (an EWMA of successful call times) only extends the pause.
    """

    def __init__(self, max_concurrency: int = 8, **kw: Any) -> None:
        kw.setdefault("increase_after", 5)
        super().__init__(max_concurrency, **kw)
        self.rtt_s = 0.0
        self._event_until = 0.0
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    # Waiting tasks are woken by release() (through their own loop) instead of polling: the parent's
    # polling backs off to 50 ms, longer than a local model's whole call.
    async def aacquire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with self._cond:
                now = time.monotonic()
                paused = now < self._paused_until
                if not paused and self._in_flight < self._limit:
                    self._in_flight += 1
                    return
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, fut))
                timeout = (self._paused_until - now) if paused else 1.0
            try:
                await asyncio.wait_for(fut, timeout=max(timeout, 0.0005))
            except asyncio.TimeoutError:
                pass
            finally:
                with self._cond:
                    if (loop, fut) in self._waiters:
                        self._waiters.remove((loop, fut))

    def release(self) -> None:
        super().release()
        self._wake(1)

    def on_success(self) -> None:
        before = self._limit
        super().on_success()
        if self._limit > before:
            self._wake(self._limit - before)

    def _wake(self, n: int) -> None:
        with self._cond:
            woken = self._waiters[:n]
            del self._waiters[:n]
        try:
            here: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        for loop, fut in woken:
            if loop is here:
                _resolve(fut)  # same loop: no self-pipe write
                continue
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop has closed
                pass

    def observe_rtt(self, seconds: float) -> None:
        self.rtt_s = seconds if self.rtt_s == 0.0 else 0.8 * self.rtt_s + 0.2 * seconds

    def on_backoff(self, kind: str, retry_after: float | None, attempt: int = 0) -> float:
        now = time.monotonic()
        with self._cond:
            same_event = now < self._event_until
            if same_event:
                wait = retry_after if retry_after is not None else self.backoff.delay(attempt)
                wait = min(max(0.0, wait), self.max_wait_s)
                self._paused_until = max(self._paused_until, now + wait)
                self._successes = 0
                return wait
        wait = super().on_backoff(kind, retry_after, attempt)
        with self._cond:
            self._event_until = self._paused_until + max(self.rtt_s, 0.01)
        return wait


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


__all__ = ["JudgeLimiter"]
