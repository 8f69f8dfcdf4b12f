"""ragtrail: trace LLM and RAG pipelines with OpenTelemetry, evaluate them as versioned runs.

>>> import ragtrail
>>> ragtrail.init(project="support-bot")          # doctest: +SKIP
>>> with ragtrail.span("lookup", kind="RETRIEVER"):  # doctest: +SKIP
...     ...

This module imports nothing heavy (no pandas, torch, langchain…); ``Client`` and the eval harness load
what they need when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragtrail._exceptions import (
    ArtifactError,
    ConfigError,
    ConnectorError,
    DatasetError,
    EvalError,
    JudgeError,
    MissingDependencyError,
    RagtrailError,
    RagtrailWarning,
    SchemaVersionError,
    StoreError,
)
from ragtrail._version import __version__
from ragtrail.tracing._context import context
from ragtrail.tracing._feedback import current_trace_id, log_feedback
from ragtrail.tracing._setup import flush, init, shutdown, stats
from ragtrail.tracing._spans import span, trace
from ragtrail.tracing._usage import record_documents, record_usage

if TYPE_CHECKING:
    from ragtrail._client import Client
    from ragtrail.artifacts import Artifact


def __getattr__(name: str) -> Any:
    if name == "Client":
        from ragtrail._client import Client

        return Client
    if name == "Artifact":
        from ragtrail.artifacts import Artifact

        return Artifact
    if name in ("artifacts", "prompts", "ui"):
        import importlib

        return importlib.import_module(f"ragtrail.{name}")
    raise AttributeError(f"module 'ragtrail' has no attribute {name!r}")


__all__ = [
    "Artifact",
    "ArtifactError",
    "Client",
    "ConfigError",
    "ConnectorError",
    "DatasetError",
    "EvalError",
    "JudgeError",
    "MissingDependencyError",
    "RagtrailError",
    "RagtrailWarning",
    "SchemaVersionError",
    "StoreError",
    "__version__",
    "context",
    "current_trace_id",
    "flush",
    "init",
    "log_feedback",
    "record_documents",
    "record_usage",
    "shutdown",
    "span",
    "stats",
    "trace",
]
