"""A small bounded connection pool shared by the SQLite readers and the PostgreSQL store.

Why not one connection per thread: ``ragtrail.flush()`` exports on the calling thread, so every short
thread that flushed used to open a connection and keep it forever (800 threads, 802 connections).
Here a process holds at most ``size`` idle connections whichever threads call in.

* A thread already holding a connection gets the same one again (re-entrant: a query inside a
  transaction sees that transaction's own writes).
* When all ``size`` connections are busy, a caller waits up to ``wait_s`` for one; after that it gets
  an *overflow* connection that is closed when returned, so a caller that holds connections for long
  (an unfinished ``iter_query`` generator) can slow others down but never deadlock them.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Pool:
    """Bounded pool of connections made by ``connect``; ``close_conn`` closes one."""

    def __init__(
        self,
        connect: Callable[[], Any],
        close_conn: Callable[[Any], None],
        *,
        size: int = 4,
        wait_s: float = 2.0,
        usable: Callable[[Any], bool] | None = None,
    ) -> None:
        self._connect = connect
        self._close_conn = close_conn
        self._usable = usable
        self.size = size
        self.wait_s = wait_s
        self._idle: list[Any] = []
        self._opened = 0  # pooled connections open (idle + checked out), at most ``size``
        self._cond = threading.Condition()
        self._local = threading.local()
        self._closed_gen = 0  # bumped by close(): connections checked out before are closed on return
        self.overflows = 0

    @property
    def open_connections(self) -> int:
        """Pooled connections currently open (idle or in use)."""
        return self._opened

    def held(self) -> Any:
        """The connection this thread has checked out, if any."""
        return getattr(self._local, "conn", None)

    def _checkout(self) -> tuple[Any, bool, int]:
        with self._cond:
            gen = self._closed_gen
            waited = False
            while True:
                while self._idle:
                    conn = self._idle.pop()
                    if self._usable is None or self._usable(conn):
                        return conn, False, gen
                    self._opened -= 1
                    self._close_quietly(conn)
                if self._opened < self.size:
                    self._opened += 1
                    break
                if waited:
                    self.overflows += 1
                    return self._connect(), True, gen
                self._cond.wait(self.wait_s)
                waited = True
        try:
            return self._connect(), False, gen
        except BaseException:
            with self._cond:
                self._opened -= 1
                self._cond.notify()
            raise

    def _checkin(self, conn: Any, overflow: bool, gen: int, broken: bool) -> None:
        if overflow:
            self._close_quietly(conn)
            return
        with self._cond:
            if broken or gen != self._closed_gen or (self._usable is not None and not self._usable(conn)):
                if gen == self._closed_gen:
                    self._opened -= 1
                self._cond.notify()
                drop = True
            else:
                self._idle.append(conn)
                self._cond.notify()
                drop = False
        if drop:
            self._close_quietly(conn)

    @contextlib.contextmanager
    def connection(self) -> Iterator[Any]:
        """A connection for the duration of the block (the one this thread already holds, if any)."""
        held = getattr(self._local, "conn", None)
        if held is not None:
            yield held
            return
        conn, overflow, gen = self._checkout()
        self._local.conn = conn
        broken = False
        try:
            yield conn
        except BaseException:
            broken = self._usable is not None and not self._usable(conn)
            raise
        finally:
            self._local.conn = None
            self._checkin(conn, overflow, gen, broken)

    def discard_idle(self) -> None:
        """Close the idle connections (checked-out ones are closed when returned)."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._opened -= len(idle)
            self._cond.notify_all()
        for c in idle:
            self._close_quietly(c)

    def close(self) -> None:
        """Close every idle connection now and every checked-out one when it comes back."""
        with self._cond:
            idle, self._idle = self._idle, []
            self._closed_gen += 1
            self._opened = 0
            self._cond.notify_all()
        for c in idle:
            self._close_quietly(c)
        self._local = threading.local()

    def _close_quietly(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            self._close_conn(conn)
