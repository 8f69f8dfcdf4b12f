"""``instrument()``: trace every LangChain run in the process without passing callbacks.

LangChain's callback configuration consults "configure hooks" (context variables registered with
``langchain_core.tracers.context.register_configure_hook``) each time a runnable builds its callback
manager. ragtrail registers one whose *default* value is its handler, so the handler is present in
every thread and task, including ones started before ``instrument()``; ``uninstrument()`` removes the
hook. A run that already carries a ragtrail ``CallbackHandler`` (passed explicitly) is not traced twice.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from ragtrail.connectors._common import RagtrailInstrumentor

if TYPE_CHECKING:
    from ragtrail.connectors.langchain._handler import CallbackHandler


class LangChainInstrumentor(RagtrailInstrumentor):
    """Adds a :class:`CallbackHandler` to every LangChain run (``instrument(ttl_s=...)``)."""

    library = "langchain_core"
    distribution = "langchain-core"
    extra = "langchain"
    supported = (">=0.3", "<2")

    _var: ContextVar[Any] | None = None
    _handler: CallbackHandler | None = None

    @property
    def handler(self) -> CallbackHandler | None:
        """The handler added to every run while instrumented (None otherwise)."""
        return self._handler

    def _instrument(self, **kwargs: Any) -> None:
        from langchain_core.tracers.context import register_configure_hook

        from ragtrail.connectors.langchain._handler import CallbackHandler

        handler = kwargs.get("handler")
        if handler is None:
            ttl = kwargs.get("ttl_s")
            handler = CallbackHandler() if ttl is None else CallbackHandler(ttl_s=float(ttl))
        var: ContextVar[Any] = ContextVar("ragtrail_langchain_handler", default=handler)
        register_configure_hook(var, True, CallbackHandler)
        self._var = var
        self._handler = handler

    def _uninstrument(self, **kwargs: Any) -> None:
        from langchain_core.tracers import context as lc_context

        var = self._var
        hooks = lc_context._configure_hooks
        hooks[:] = [h for h in hooks if h[0] is not var]
        self._var = None
        self._handler = None
