"""The LangChain connector's failure count (the same ``failures()`` every connector exports)."""

from __future__ import annotations

from ragtrail.connectors._common import FailureCounter

counter = FailureCounter("langchain", "the LangChain handler")
failures = counter.count
"""How many times a ragtrail LangChain handler failed inside a callback (LangChain never saw it)."""

__all__ = ["counter", "failures"]
