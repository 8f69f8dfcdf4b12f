"""The judge cache: persistent, content-addressed, in the store's ``judge_cache`` table.

A key is the SHA-256 of a canonical JSON document holding everything that can change a judge's
answer: the model id, the rendered prompt (every message), the sampling parameters (temperature,
seed, max tokens, top_p…), the output schema, the decoding method, the scorer's name and version and
the trial index. Change one character of any of them and the key changes: a stale verdict is never
served. The value is the raw output of the call (every attempt, repairs included) with its token
usage, so a hit is re-validated exactly like a fresh answer.

Writes use ``INSERT … ON CONFLICT (key) DO NOTHING``: concurrent workers (threads or processes, on
SQLite or PostgreSQL) computing the same key both succeed and the first value stays.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ragtrail._log import logger, warn_once
from ragtrail.store import Store, open_store
from ragtrail.store import _evals as repo
from ragtrail.tracing._content import mask_value

CACHE_FORMAT = "1"
"""Bumped when the layout of cached values changes (old entries then simply miss)."""


def cache_key(
    *,
    model_id: str,
    messages: list[dict[str, str]],
    params: Mapping[str, Any],
    schema: Mapping[str, Any] | None,
    method: str,
    scorer: str,
    scorer_version: str,
    trial: int = 0,
) -> str:
    """The content address of one judge call (hex SHA-256 of canonical JSON)."""
    doc = {
        "format": CACHE_FORMAT,
        "model": model_id,
        "messages": messages,
        "params": dict(params),
        "schema": schema,
        "method": method,
        "scorer": scorer,
        "scorer_version": str(scorer_version),
        "trial": int(trial),
    }
    text = json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class CacheStats:
    """Hits and misses seen by one :class:`JudgeCache` object (this process)."""

    hits: int = 0
    misses: int = 0
    writes: int = 0
    errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes, "errors": self.errors}


class JudgeCache:
    """Judge verdicts by content address, in the ``judge_cache`` table of a ragtrail store.

    Args:
        store: a :class:`~ragtrail.store.Store`, a path, a ``postgresql://`` URL, or None: the store of
            ``ragtrail.init()`` when tracing is initialised, else the default store
            (``$RAGTRAIL_STORE`` / ``$RAGTRAIL_HOME``).

    A store failure never fails a judge call: a failing read is a miss, a failing write is logged
    once and counted in :attr:`stats`.
    """

    def __init__(self, store: Store | str | None = None) -> None:
        self._store_arg = store
        self._store: Store | None = store if isinstance(store, Store) else None
        self._lock = threading.Lock()
        self.stats = CacheStats()

    @property
    def store(self) -> Store:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    if self._store_arg is None:  # the store of ragtrail.init(), else the default store
                        from ragtrail.tracing import get_config

                        cfg = get_config()
                        if cfg is not None and cfg.store is not None:
                            self._store = cfg.store
                            return self._store
                    self._store = open_store(self._store_arg)  # type: ignore[arg-type]
        return self._store

    def __getstate__(self) -> dict[str, Any]:
        arg = self._store_arg
        if isinstance(arg, Store):
            arg = arg.url
        return {"_store_arg": arg}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["_store_arg"])  # type: ignore[misc]

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached value of ``key``, or None (a miss)."""
        try:
            text = repo.judge_cache_get(self.store, key)
        except Exception as exc:
            with self._lock:
                self.stats.errors += 1
                self.stats.misses += 1
            warn_once("judge-cache-read", "ragtrail: judge cache read failed (%s); treating as a miss", exc)
            return None
        with self._lock:
            if text is not None:
                self.stats.hits += 1
            else:
                self.stats.misses += 1
        if text is None:
            return None
        try:
            value = json.loads(text)
        except (TypeError, ValueError):
            logger.debug("ragtrail: unreadable judge cache entry %s ignored", key)
            return None
        return value if isinstance(value, dict) else None

    def contains(self, key: str) -> bool:
        """Whether ``key`` is cached (does not count as a hit or a miss)."""
        try:
            return repo.judge_cache_has(self.store, key)
        except Exception:
            return False

    def put(self, key: str, value: Mapping[str, Any]) -> None:
        """Store ``value`` under ``key``; the first writer wins, later writers are no-ops."""
        try:
            text = json.dumps(mask_value(dict(value)), ensure_ascii=False, default=str)
            repo.judge_cache_put(self.store, key, text)
        except Exception as exc:
            with self._lock:
                self.stats.errors += 1
            warn_once("judge-cache-write", "ragtrail: judge cache write failed (%s); the verdict is not cached", exc)
            return
        with self._lock:
            self.stats.writes += 1

    def __len__(self) -> int:
        try:
            return repo.judge_cache_count(self.store)
        except Exception:
            return 0

    def clear(self) -> int:
        """Delete every cached verdict; returns how many were deleted."""
        return repo.judge_cache_clear(self.store)


__all__ = ["CacheStats", "JudgeCache", "cache_key"]
