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


# Retrievers whose backend is a GenAI provider (one of the GenAI conventions' well-known
# ``gen_ai.provider.name`` values), keyed by the class name without its ``Retriever`` suffix, lower case
# (LangChain's ``ls_retriever_name``). Retrieval spans of these carry ``gen_ai.provider.name``, which the
# convention requires on retrieval spans only "when applicable". Vector stores (Chroma, FAISS, pgvector…)
# and in-process retrievers are not GenAI providers: the convention lists none, so their retrieval spans
# carry no ``gen_ai.provider.name``; the store is named by ``db.system.name`` instead.
RETRIEVER_PROVIDERS = {
    "amazonknowledgebases": "aws.bedrock",  # Bedrock Knowledge Bases (LangChain and LlamaIndex)
    "cohererag": "cohere",  # LangChain's CohereRagRetriever (Cohere chat with connectors)
}


def retriever_provider(name: str | None) -> str | None:
    """The GenAI provider behind a retriever class (``AmazonKnowledgeBasesRetriever`` or LangChain's
    ``ls_retriever_name`` ``amazonknowledgebases`` → ``aws.bedrock``), else None (see above)."""
    if not isinstance(name, str) or not name:
        return None
    key = name[9:] if name.startswith("Retriever") else name[:-9] if name.endswith("Retriever") else name
    return RETRIEVER_PROVIDERS.get(key.lower())
