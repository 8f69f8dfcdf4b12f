"""Lazy import of optional dependencies with one clear message when an extra is missing.

``pip install ragtrail`` is the tracing core, the store and the CLI. Everything heavier comes from an
extra, and every code path that needs one calls :func:`require`, which raises a one-line
:class:`~ragtrail.MissingDependencyError` naming the exact ``pip install`` command.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ragtrail._exceptions import MissingDependencyError

#: The extra that provides each optional top-level module (used when a caller names none).
EXTRAS: dict[str, str] = {
    "pandas": "analysis",
    "pyarrow": "analysis",
    "matplotlib": "analysis",
    "numpy": "evals",
    "scipy": "evals",
    "optuna": "evals",
    "rouge_score": "evals",
    "sacrebleu": "evals",
    "langchain_core": "langchain",
    "langgraph": "langgraph",
    "llama_index": "llama-index",
    "chromadb": "chroma",
    "sentence_transformers": "embeddings",
    "transformers": "transformers",
    "vllm": "vllm",
    "openai": "openai",
    "langchain_openai": "langchain-openai",
    "psycopg": "postgres",
    "fastapi": "otlp",
    "uvicorn": "otlp",
    "grpc": "otlp",
    "ray": "ray",
    "pynvml": "gpu",
    "fsspec": "artifacts",
    "jinja2": "ui",
}

#: The distribution name where it differs from the module name (for the message).
_PACKAGES: dict[str, str] = {
    "rouge_score": "rouge-score",
    "langchain_core": "langchain-core",
    "langchain_openai": "langchain-openai",
    "llama_index": "llama-index-core",
    "sentence_transformers": "sentence-transformers",
    "grpc": "grpcio",
    "pynvml": "nvidia-ml-py",
}


def install_hint(extra: str) -> str:
    """The command that installs ``extra``: ``pip install 'ragtrail[extra]'``."""
    return f"pip install 'ragtrail[{extra}]'"


def require(
    module: str, extra: str | None = None, *, package: str | None = None, feature: str | None = None
) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra to install.

    Args:
        module: the module to import (``"pandas"``, ``"pyarrow.parquet"``…).
        extra: the ragtrail extra that installs it; default: looked up in :data:`EXTRAS`.
        package: the distribution's name for the message, when it is not the module's.
        feature: what needs it (``"Client.spans_df()"``), for the message.

    >>> require("json").__name__
    'json'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if isinstance(exc, MissingDependencyError):
            raise
        top = module.split(".")[0]
        what = package or _PACKAGES.get(top, top)
        hint = install_hint(extra or EXTRAS.get(top, "all"))
        needed_by = f" (needed by {feature})" if feature else ""
        raise MissingDependencyError(f"{what} is not installed{needed_by}; install it with: {hint}") from exc


__all__ = ["EXTRAS", "install_hint", "require"]
