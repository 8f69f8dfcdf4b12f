"""LangChain connector: every LangChain run (chains, prompts, parsers, LLMs, chat models, retrievers,
tools, agents, LangGraph graphs and nodes) as an OpenTelemetry span.

```python
from ragtrail.connectors.langchain import CallbackHandler
chain.invoke(q, config={"callbacks": [CallbackHandler()]})
# or, once, for every LangChain run in the process:
ragtrail.connectors.langchain.instrument()
```

Importing this package does not import LangChain; ``CallbackHandler`` is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ragtrail.connectors._common import module_functions
from ragtrail.connectors.langchain._failures import failures
from ragtrail.connectors.langchain._instrumentor import LangChainInstrumentor

if TYPE_CHECKING:
    from ragtrail.connectors.langchain._handler import CallbackHandler

Instrumentor = LangChainInstrumentor
instrument, uninstrument = module_functions(LangChainInstrumentor)


def __getattr__(name: str) -> Any:
    if name == "CallbackHandler":
        from ragtrail._deps import require

        require("langchain_core", extra="langchain")
        from ragtrail.connectors.langchain._handler import CallbackHandler

        return CallbackHandler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CallbackHandler", "Instrumentor", "LangChainInstrumentor", "failures", "instrument", "uninstrument"]
