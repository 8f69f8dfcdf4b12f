"""vLLM offline connector: ``instrument()`` traces ``LLM.generate`` and ``LLM.chat``.

Each call becomes a CHAIN span for the batch with one LLM span per request: prompt/completion/cached
tokens, finish reasons, sampling parameters, model, the engine's per-request timings (TTFT, queue,
prefill, decode, time per output token) and a GPU-time cost shared across the batch by token share.
vllm is imported only by ``instrument()``. For vLLM's OpenAI-compatible server use the openai connector
and ``ragtrail serve`` (the server's own OTLP spans join the client's trace).
"""

from __future__ import annotations

from ragtrail.connectors.vllm._extract import place, timings
from ragtrail.connectors.vllm._instrumentor import VLLMInstrumentor, failures, instrument, uninstrument

Instrumentor = VLLMInstrumentor

__all__ = ["Instrumentor", "VLLMInstrumentor", "failures", "instrument", "place", "timings", "uninstrument"]
