"""The scorer registry: names to scorers. One source: the ``ragtrail.scorers`` entry-point group,
where ragtrail's built-ins are registered exactly as a third-party package registers its own
(``pyproject.toml``), plus :func:`register` at run time. :func:`as_scorer` turns whatever a user
gives (a Scorer, a class, a function, a name, ``{name: params}``) into a Scorer."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any

from ragtrail._exceptions import ConfigError
from ragtrail.evals._scorers import _ARG_NAMES, FunctionScorer
from ragtrail.evals._types import Scorer

__all__ = ["ENTRY_POINT_GROUP", "as_scorer", "available", "get", "register"]


def as_scorer(obj: Any) -> Scorer:
    """A Scorer from a Scorer instance or class, a function, or a registered name (``"token_f1"``)."""
    if isinstance(obj, Scorer):
        return obj
    if isinstance(obj, type) and issubclass(obj, Scorer):
        return obj()
    if isinstance(obj, str):
        return get(obj)
    if isinstance(obj, Mapping):
        if len(obj) == 1 and not {"name"} & set(obj):
            ((n, p),) = obj.items()
            return get(n, **(p or {}))
        p = dict(obj)
        n = p.pop("name", None)
        if not n:
            raise ConfigError(f"a scorer given as a mapping needs a name: {dict(obj)!r}")
        return get(n, **p)
    if callable(obj):
        return FunctionScorer(obj)
    raise ConfigError(f"cannot use {obj!r} as a scorer: give a Scorer, a function, or a registered scorer name")


# ------------------------------------------------------------------------------------- registry
ENTRY_POINT_GROUP = "ragtrail.scorers"
_registry: dict[str, Any] = {}
_loaded = False
_reg_lock = threading.Lock()


def _load_entry_points() -> None:
    global _loaded
    with _reg_lock:
        if _loaded:
            return
        from importlib.metadata import entry_points

        try:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        except Exception:  # pragma: no cover - broken metadata must not break scoring
            eps = ()  # type: ignore[assignment]
        for ep in eps:
            _registry.setdefault(ep.name, ep)
        _loaded = True


def register(name: str, factory: Callable[..., Any], *, replace: bool = False) -> None:
    """Register a scorer factory (a Scorer class, a function returning a Scorer, or a plain scoring
    function) under ``name`` so that YAML configs and :func:`get` can use it."""
    _load_entry_points()
    with _reg_lock:
        if name in _registry and not replace:
            raise ConfigError(f"a scorer named {name!r} is already registered (pass replace=True to override)")
        _registry[name] = factory


def available() -> list[str]:
    """Names of every registered scorer (entry points, the built-ins among them, and run-time registrations)."""
    _load_entry_points()
    return sorted(_registry)


def get(name: str, **params: Any) -> Scorer:
    """The registered scorer ``name`` built with ``params`` (``get("recall_at_k", k=5)``)."""
    _load_entry_points()
    entry = _registry.get(name)
    if entry is None:
        import difflib

        close = difflib.get_close_matches(name, list(_registry), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown scorer {name!r}.{hint} Available: {', '.join(sorted(_registry))}")
    if hasattr(entry, "load") and hasattr(entry, "group"):  # an EntryPoint
        try:
            entry = entry.load()
        except Exception as exc:
            raise ConfigError(f"scorer {name!r}: cannot load its entry point {entry.value!r}: {exc}") from exc
        with _reg_lock:
            _registry[name] = entry
    try:
        if isinstance(entry, Scorer):
            if params:
                raise ConfigError(f"scorer {name!r} is a ready-made instance and takes no parameters")
            return entry
        if isinstance(entry, type) and issubclass(entry, Scorer):
            return entry(**params)
        if callable(entry):
            builtin = str(getattr(entry, "__module__", "")).startswith("ragtrail.")  # a factory, never a metric
            if not params and not isinstance(entry, type) and not builtin:
                try:
                    sig = inspect.signature(entry)
                    names = {p.name for p in sig.parameters.values()}
                except (TypeError, ValueError):
                    names = set()
                if names and names <= set(_ARG_NAMES):
                    return FunctionScorer(entry, name=name)
            made = entry(**params)
            if isinstance(made, Scorer):
                return made
            if callable(made):
                return FunctionScorer(made, name=name, params=params)
    except TypeError as exc:
        raise ConfigError(f"scorer {name!r}: bad parameters {params!r}: {exc}") from exc
    raise ConfigError(f"scorer {name!r} is registered as {entry!r}, which does not build a Scorer")
