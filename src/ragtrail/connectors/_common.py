"""What every connector shares: a BaseInstrumentor with a declared version range, lazy imports and one
clear message when the library is missing.

A connector module looks like::

    class ChromaInstrumentor(RagtrailInstrumentor):
        library = "chromadb"          # import name
        distribution = "chromadb"     # pip distribution whose version is checked
        extra = "chroma"              # pip install 'ragtrail[chroma]'
        supported = (">=0.5", "<2")   # the supported range, declared once

        def _instrument(self, **kwargs): ...   # import chromadb here, patch with wrapt
        def _uninstrument(self, **kwargs): ...

    instrument, uninstrument = module_functions(ChromaInstrumentor)

``instrument()`` is idempotent (BaseInstrumentor), warns (never crashes) on a version outside the
range, and raises :class:`~ragtrail.MissingDependencyError` when the library is not installed.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable, Collection
from importlib import metadata
from typing import Any, ClassVar

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from ragtrail._exceptions import MissingDependencyError, RagtrailWarning
from ragtrail.tracing import FailureCounter, note_instrumented

__all__ = ["FailureCounter", "RagtrailInstrumentor", "installed_version", "module_functions", "version_in_range"]


def installed_version(distribution: str) -> str | None:
    """The installed version of a pip distribution, or None."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def version_in_range(version: str, spec: tuple[str, ...]) -> bool:
    """Whether ``version`` satisfies every ``spec`` clause (e.g. ``(">=0.5", "<2")``)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    return Version(version) in SpecifierSet(",".join(spec), prereleases=True)


class RagtrailInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Base class of ragtrail's connectors."""

    library: ClassVar[str] = ""
    distribution: ClassVar[str] = ""
    extra: ClassVar[str] = ""
    supported: ClassVar[tuple[str, ...]] = ()

    def instrumentation_dependencies(self) -> Collection[str]:
        return [f"{self.distribution} {','.join(self.supported)}".strip()]

    def instrument(self, **kwargs: Any) -> None:
        """Start tracing the library (idempotent). Warns when its version is outside the tested range."""
        if importlib.util.find_spec(self.library.split(".")[0]) is None:
            raise MissingDependencyError(
                f"{self.distribution or self.library} is not installed, so ragtrail cannot instrument it. "
                f"Install it with: pip install 'ragtrail[{self.extra}]'"
            )
        version = installed_version(self.distribution) if self.distribution else None
        if version is not None and self.supported and not version_in_range(version, self.supported):
            warnings.warn(
                f"ragtrail's {self.library} connector is tested with {self.distribution} "
                f"{','.join(self.supported)}; found {version}. Tracing is enabled but may miss attributes.",
                RagtrailWarning,
                stacklevel=2,
            )
        kwargs["skip_dep_check"] = True
        super().instrument(**kwargs)
        note_instrumented(type(self), bool(self.is_instrumented_by_opentelemetry))

    def uninstrument(self, **kwargs: Any) -> None:
        """Stop tracing the library and remove every patch (idempotent)."""
        super().uninstrument(**kwargs)
        note_instrumented(type(self), bool(self.is_instrumented_by_opentelemetry))


def module_functions(cls: type[RagtrailInstrumentor]) -> tuple[Callable[..., None], Callable[..., None]]:
    """Module-level ``instrument()``/``uninstrument()`` for a connector (BaseInstrumentor is a singleton)."""

    def instrument(**kwargs: Any) -> None:
        cls().instrument(**kwargs)

    def uninstrument(**kwargs: Any) -> None:
        cls().uninstrument(**kwargs)

    instrument.__doc__ = f"Trace every {cls.library} call in this process (idempotent). See {cls.__name__}."
    uninstrument.__doc__ = f"Stop tracing {cls.library} and remove the patches (idempotent)."
    return instrument, uninstrument
