"""The ``ragtrail`` logger (a NullHandler; applications decide where logs go) and log-once helpers."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("ragtrail")
logger.addHandler(logging.NullHandler())

_seen: set[str] = set()
_seen_lock = threading.Lock()


def warn_once(key: str, msg: str, *args: object, exc_info: bool = False) -> None:
    """Log ``msg`` at WARNING the first time ``key`` is seen in this process, and never again."""
    with _seen_lock:
        if key in _seen:
            return
        _seen.add(key)
    logger.warning(msg, *args, exc_info=exc_info)
