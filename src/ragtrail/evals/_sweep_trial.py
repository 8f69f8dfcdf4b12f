"""The sweep trial running now (:func:`current_trial`, read by the eval harness) and
:func:`sweep_cache`, which memoizes work shared across trials (an index per chunking config)."""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragtrail._exceptions import ConfigError


# ------------------------------------------------------------------------------- trial context
@dataclass(frozen=True)
class TrialInfo:
    """The trial running now (``current_trial()``): its number, flat params, the sweep's id, its
    upstream parameter values (the key of shared work), what the harness adds to the run's lineage,
    and the harness's per-example hook (the running metric, and pruning)."""

    sweep_id: str
    number: int
    params: Mapping[str, Any]
    upstream: Mapping[str, Any]
    lineage: Mapping[str, Any] = field(default_factory=dict)
    on_example_scored: Callable[[str, Mapping[str, Any]], str | None] | None = None


_CURRENT: contextvars.ContextVar[TrialInfo | None] = contextvars.ContextVar("ragtrail_sweep_trial", default=None)
_CURRENT_GLOBAL: list[TrialInfo | None] = [None]  # visible from the harness's worker threads too


def current_trial() -> TrialInfo | None:
    """The sweep trial running now, or None outside a sweep."""
    return _CURRENT.get() or _CURRENT_GLOBAL[0]


def _freeze(v: Any) -> Any:
    try:
        hash(v)
        return v
    except TypeError:
        return json.dumps(v, sort_keys=True, default=str)


def _dig(config: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = config
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


class _Cached:
    """A memoized callable (what :func:`sweep_cache` returns)."""

    def __init__(self, fn: Callable[..., Any], keys: Sequence[str] | None) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._keys = list(keys) if keys is not None else None
        self._sig = inspect.signature(fn)
        self._values: dict[Any, Any] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        bound = self._sig.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        single = next(iter(arguments.values())) if len(arguments) == 1 else None
        keys = self._keys
        if keys is None:
            trial = current_trial()
            if isinstance(single, Mapping) and trial is not None and trial.upstream:
                keys = list(trial.upstream)  # f(config): the sweep's upstream parameters
            else:
                return tuple((k, _freeze(v)) for k, v in arguments.items())
        out = []
        for k in keys:
            if k in arguments:
                out.append((k, _freeze(arguments[k])))
            elif isinstance(single, Mapping):
                try:
                    out.append((k, _freeze(_dig(single, k))))
                except KeyError:
                    raise ConfigError(
                        f"sweep_cache({self._fn.__qualname__}): the config has no upstream key {k!r}"
                    ) from None
            else:
                raise ConfigError(
                    f"sweep_cache({self._fn.__qualname__}): {k!r} is neither an argument nor a config key"
                )
        return tuple(out)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = self._key(args, kwargs)
        with self._lock:
            if key in self._values:
                self.hits += 1
                return self._values[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one build per key, even when trials' examples call it concurrently
            with self._lock:
                if key in self._values:
                    self.hits += 1
                    return self._values[key]
            value = self._fn(*args, **kwargs)
            with self._lock:
                self._values[key] = value
                self.misses += 1
            return value

    def cache_info(self) -> dict[str, int]:
        """``{"hits", "builds", "size"}``."""
        with self._lock:
            return {"hits": self.hits, "builds": self.misses, "size": len(self._values)}

    def cache_clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._locks.clear()
            self.hits = self.misses = 0


def sweep_cache(fn: Callable[..., Any] | None = None, *, keys: Sequence[str] | None = None) -> Any:
    """Memoize shared upstream work across sweep trials (and across a trial's examples).

    ``keys`` names the upstream parameters: arguments of ``fn`` or (dotted) keys of its single
    config argument. Without ``keys``, a function of one config mapping is keyed by the sweep
    file's ``upstream`` parameters; any other function by all its arguments::

        @sweep_cache(keys=["chunk_size", "embedding_model"])
        def build_index(chunk_size, embedding_model): ...   # built once per distinct pair

        @sweep_cache                      # upstream: [chunk_size, embedding_model] in sweep.yaml
        def index_for(config): ...

    The wrapper has ``cache_info()`` (hits, builds, size) and ``cache_clear()``; builds of one key
    are serialised, so concurrent examples never build the same index twice.
    """
    if fn is None:
        return lambda f: _Cached(f, keys)
    return _Cached(fn, keys)
