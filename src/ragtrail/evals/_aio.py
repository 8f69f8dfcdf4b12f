"""Running coroutines from synchronous code: :func:`run_sync` (also inside a running loop, as in
Jupyter) and the one long-lived loop that judge requests run on (:func:`judge_loop`)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(aw: Awaitable[T], *, thread_name: str = "ragtrail-run") -> T:
    """Await ``aw`` to completion from sync code. Inside a running event loop (Jupyter) it runs on a
    fresh loop in a helper thread, so the caller's loop is never re-entered."""

    async def main() -> T:
        return await aw

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(main())
        except BaseException as exc:
            box["e"] = exc

    t = threading.Thread(target=target, name=thread_name, daemon=True)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]  # type: ignore[no-any-return]


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def judge_loop() -> asyncio.AbstractEventLoop:
    """The one long-lived event loop (a daemon thread, started on first use) that runs model calls.

    Async clients of LangChain chat models (httpx pools) are bound to the loop that first used them;
    running every judge request on one loop lets judges be called from ``asyncio.run`` after
    ``asyncio.run``, from several threads and from Jupyter's loop alike.
    """
    global _loop
    with _loop_lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            # LangChain runs sync steps (parsers, sync callbacks) in the loop's default executor, whose
            # default size (cores + 4) would cap the number of judge calls in flight
            loop.set_default_executor(ThreadPoolExecutor(max_workers=64, thread_name_prefix="ragtrail-judge"))
            t = threading.Thread(target=loop.run_forever, name="ragtrail-judge-loop", daemon=True)
            t.start()
            _loop = loop
        return _loop


async def on_judge_loop(coro: Awaitable[T]) -> T:
    """Await ``coro`` on :func:`judge_loop` from any loop (cancellation is forwarded)."""
    loop = judge_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:  # pragma: no cover - always called from a coroutine
        running = None
    if running is loop:
        return await coro
    fut: Any = asyncio.run_coroutine_threadsafe(coro, loop)  # type: ignore[arg-type]
    try:
        return await asyncio.wrap_future(fut)
    except asyncio.CancelledError:
        fut.cancel()
        raise


__all__ = ["judge_loop", "on_judge_loop", "run_sync"]
