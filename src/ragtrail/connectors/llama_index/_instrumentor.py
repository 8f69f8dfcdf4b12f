"""LlamaIndex connector over ``llama_index.core.instrumentation``.

One span handler and one event handler are registered on LlamaIndex's root dispatcher.

* Every public dispatcher span (``RetrieverQueryEngine.query``, ``VectorIndexRetriever.retrieve``,
  ``MiniLM.get_query_embedding``, ``CompactAndRefine.synthesize``, ``OpenAI.chat``…) becomes an OTel
  span whose parent is the OTel span of LlamaIndex's own parent span id. Private helper spans
  (``_retrieve``, ``_query``…) and text splitting are folded into their nearest public ancestor.
* Kinds: query engines and synthesizers CHAIN, retrievers RETRIEVER, embeddings EMBEDDING, LLM
  ``chat``/``complete`` (and their stream/async forms) LLM, rerankers RERANKER, tools TOOL, agents AGENT.
  Node postprocessors and selectors implement private methods (``_postprocess_nodes``, ``_select``) that
  LlamaIndex traces: those get their own span (``X.postprocess_nodes``, ``X.select``) with the nodes or
  choices in and out, so a reranker or a failing postprocessor never relabels or hides in its parent.
* Events fill in the details: query text and answer, retrieved nodes (id, score, rank, content),
  embedding model/count/dimension, LLM model, messages, tokens (the provider's usage when the response
  carries it, else a tokenizer estimate) and, for streamed calls, time to first token.
* Streaming never changes the app: a response object is never read in a way that consumes it (no
  ``str()`` of a ``StreamingResponse``). A streamed LLM span stays open until LlamaIndex reports the end of
  the stream, and so do the spans that returned the stream (synthesizer, query engine), so one streamed
  query is one trace whose root ends when the user has read the last chunk.
* The OTel span is made current while LlamaIndex runs the call, so spans from other connectors
  (Chroma queries under a retriever, sentence-transformers under an embedding) nest correctly.

Modules: ``_spans`` (the span handler's work), ``_events`` (the event handler's), ``_streams`` (spans that
end with a stream), ``_extract`` (reading LlamaIndex objects), ``_state`` (open spans, failure count);
this one registers the handlers on the dispatcher and removes them.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ragtrail._log import logger
from ragtrail.connectors._common import RagtrailInstrumentor, module_functions
from ragtrail.connectors.llama_index._events import _on_event
from ragtrail.connectors.llama_index._extract import _Classes
from ragtrail.connectors.llama_index._spans import _drop_span, _exit_span, _new_span
from ragtrail.connectors.llama_index._state import _STATE, _failed, failures
from ragtrail.tracing import is_enabled

__all__ = ["LlamaIndexInstrumentor", "failures", "instrument", "uninstrument"]


def _build_handlers() -> tuple[Any, Any]:
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.span_handlers import BaseSpanHandler

    class RagtrailSpanHandler(BaseSpanHandler[Any]):  # type: ignore[misc,valid-type]
        """Mirrors LlamaIndex dispatcher spans as ragtrail OTel spans."""

        @classmethod
        def class_name(cls) -> str:
            return "RagtrailSpanHandler"

        def new_span(
            self,
            id_: str,
            bound_args: Any,
            instance: Any | None = None,
            parent_span_id: str | None = None,
            tags: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            if not is_enabled():
                return None
            try:
                return _new_span(id_, instance, parent_span_id, bound_args)
            except Exception:
                _failed("span start")
                return None

        def prepare_to_exit_span(
            self, id_: str, bound_args: Any, instance: Any | None = None, result: Any | None = None, **kwargs: Any
        ) -> Any:
            try:
                return _exit_span(id_, result)
            except Exception:
                _failed("span end")
                return None

        def prepare_to_drop_span(
            self,
            id_: str,
            bound_args: Any,
            instance: Any | None = None,
            err: BaseException | None = None,
            **kwargs: Any,
        ) -> Any:
            try:
                return _drop_span(id_, err)
            except Exception:
                _failed("span drop")
                return None

    class RagtrailEventHandler(BaseEventHandler):  # type: ignore[misc]
        """Copies LlamaIndex event payloads onto the matching ragtrail spans."""

        @classmethod
        def class_name(cls) -> str:
            return "RagtrailEventHandler"

        def handle(self, event: Any, **kwargs: Any) -> None:
            try:
                _on_event(event)
            except Exception:
                _failed(f"event {type(event).__name__}")

    return RagtrailSpanHandler(), RagtrailEventHandler()


class LlamaIndexInstrumentor(RagtrailInstrumentor):
    """Traces LlamaIndex through its instrumentation dispatcher (span and event handlers on the root)."""

    library: ClassVar[str] = "llama_index.core"
    distribution: ClassVar[str] = "llama-index-core"
    extra: ClassVar[str] = "llama-index"
    supported: ClassVar[tuple[str, ...]] = (">=0.14", "<0.15")

    _handlers: ClassVar[tuple[Any, Any] | None] = None

    def _instrument(self, **kwargs: Any) -> None:
        from llama_index.core.base.base_retriever import BaseRetriever
        from llama_index.core.base.embeddings.base import BaseEmbedding
        from llama_index.core.instrumentation import get_dispatcher
        from llama_index.core.llms.llm import BaseLLM

        _Classes.retriever = (BaseRetriever,)
        try:
            from llama_index.core.base.base_selector import BaseSelector

            _Classes.selector = (BaseSelector,)
        except Exception:
            logger.debug("ragtrail: LlamaIndex selectors not found", exc_info=True)
        _Classes.embedding = (BaseEmbedding,)
        _Classes.llm = (BaseLLM,)
        try:
            from llama_index.core.postprocessor.types import BaseNodePostprocessor

            _Classes.postprocessor = (BaseNodePostprocessor,)
        except Exception:
            logger.debug("ragtrail: LlamaIndex node postprocessors not found", exc_info=True)
        try:
            from llama_index.core.tools.types import BaseTool

            _Classes.tool = (BaseTool,)
        except Exception:
            logger.debug("ragtrail: LlamaIndex tools not found", exc_info=True)
        try:
            from llama_index.core.node_parser.interface import TextSplitter

            _Classes.splitter = (TextSplitter,)
        except Exception:
            logger.debug("ragtrail: LlamaIndex text splitters not found", exc_info=True)
        span_handler, event_handler = _build_handlers()
        dispatcher = get_dispatcher()
        dispatcher.add_span_handler(span_handler)
        dispatcher.add_event_handler(event_handler)
        LlamaIndexInstrumentor._handlers = (span_handler, event_handler)

    def _uninstrument(self, **kwargs: Any) -> None:
        from llama_index.core.instrumentation import get_dispatcher

        handlers = LlamaIndexInstrumentor._handlers
        LlamaIndexInstrumentor._handlers = None
        if handlers is None:
            return
        dispatcher = get_dispatcher()
        span_handler, event_handler = handlers
        dispatcher.span_handlers = [h for h in dispatcher.span_handlers if h is not span_handler]
        dispatcher.event_handlers = [h for h in dispatcher.event_handlers if h is not event_handler]
        _STATE.clear()


instrument, uninstrument = module_functions(LlamaIndexInstrumentor)
