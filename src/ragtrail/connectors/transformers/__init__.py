"""HF transformers connector: ``instrument()`` traces ``model.generate()`` and text-generation pipelines.

Each ``generate()`` becomes an LLM span with input/output tokens, finish reasons, sampling parameters,
time to first token, device, GPU figures (type, utilisation, memory, torch peak memory) and a cost from
device time. A text-generation pipeline call becomes a CHAIN span (prompt and generated text, per the
content switch) around the LLM spans of the ``generate()`` calls it makes. transformers is imported only
by ``instrument()``.
"""

from __future__ import annotations

from ragtrail.connectors.transformers._instrumentor import TransformersInstrumentor, failures, instrument, uninstrument

Instrumentor = TransformersInstrumentor

__all__ = ["Instrumentor", "TransformersInstrumentor", "failures", "instrument", "uninstrument"]
