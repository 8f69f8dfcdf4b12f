"""Lazy import of optional dependencies with one clear message when an extra is missing."""

from __future__ import annotations

import importlib
from types import ModuleType

from ragtrail._exceptions import MissingDependencyError


def require(module: str, extra: str, *, package: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install.

    >>> require("json", extra="core").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = package or module.split(".")[0]
        raise MissingDependencyError(
            f"{what} is required for this feature but is not installed. "
            f"Install it with: pip install 'ragtrail[{extra}]'"
        ) from exc
