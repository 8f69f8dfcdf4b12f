"""``CallbackHandler``: LangChain runs as OpenTelemetry spans, without building LangChain ``Run`` objects.

How it works
------------
* One span per LangChain run, keyed by ``run_id``. A run's parent span is the span of LangChain's
  ``parent_run_id`` (never the ambient context alone), so concurrent ``ainvoke`` calls, thread pools,
  ``batch`` and ``RunnableParallel`` all give the tree LangChain itself records. A run LangChain calls
  a root starts its own trace, or nests under a *non-LangChain* span that is current (``ragtrail.span``).
* While a run is open its span is the current OTel context, so spans of other instrumented libraries
  (Chroma, an OpenAI client…) made inside it nest under it. The context is *set* at run start and
  *restored* at run end only when it is still exactly what was set: no context token is ever detached,
  so a run that ends in another context (a stream finished elsewhere, a generator closed by the garbage
  collector) can never produce "Failed to detach context".
* LLM spans mark the context (:mod:`ragtrail.tracing._dedupe`) so a client-library connector adds to
  this span instead of opening a second LLM span for the same model call.
* Per-run state is dropped when the run ends; runs that never end (a cancelled stream, a dropped
  generator) are ended with ERROR status and ``ragtrail.abandoned`` after ``ttl_s``.
* Content (inputs, outputs, messages, documents, tool arguments/results) follows the content switch and
  is converted into bounded plain data first, so capture cost does not grow with the size of the value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from uuid import UUID

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind

from ragtrail import semconv
from ragtrail.connectors._common import retriever_provider
from ragtrail.connectors.langchain import _extract as ex
from ragtrail.connectors.langchain._runs import (
    AGENT_NAMES,
    CREATE_AGENT_INTEGRATION,
    LANGGRAPH_INTEGRATION,
    REACT_AGENT_MODEL_STEP,
    REACT_AGENT_NODE,
    RunTracker,
    _Run,
    merge_attributes,
    operation_name,
)
from ragtrail.tracing import (
    get_config,
    message_attributes,
    record_documents,
    record_usage,
)

_get_current = otel_context.get_current
_attach = otel_context.attach
_monotonic_ns = time.monotonic_ns


class CallbackHandler(RunTracker):
    """Records every LangChain run as a span (chains, prompts, parsers, LLMs, chat models, retrievers,
    tools, agents, LangGraph graphs and nodes).

    ``chain.invoke(q, config={"callbacks": [CallbackHandler()]})``, or
    ``ragtrail.connectors.langchain.instrument()`` once for every run in the process. Spans are
    recorded only after ``ragtrail.init()``; the handler never raises into LangChain.

    Args:
        ttl_s: a run still open after this many seconds is ended with ERROR status and
            ``ragtrail.abandoned = True``, and its state is released (checked as runs start, and by
            :meth:`sweep`).
    """

    run_inline = True  # called in the caller's task/context, never through an executor
    raise_error = False

    # -------------------------------------------------------------------------------------- chains

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            if get_config() is None:
                return
            name = ex.run_name(serialized, kwargs, "chain")
            run_type = kwargs.get("run_type") or "chain"
            attrs: dict[str, Any] = {}
            kind = semconv.CHAIN
            span_name = name
            parent = self._runs.get(parent_run_id) if parent_run_id is not None else None
            made_agent = (  # the outermost run of a create_agent graph (its runs inherit the metadata)
                bool(metadata)
                and metadata.get("ls_integration") == CREATE_AGENT_INTEGRATION  # type: ignore[union-attr]
                and not (parent is not None and parent.agent)
            )
            if name in AGENT_NAMES or made_agent:
                kind = semconv.AGENT
                agent = str((metadata or {}).get("lc_agent_name") or name) if made_agent else name
                attrs[semconv.GEN_AI_OPERATION_NAME] = semconv.GEN_AI_OP_INVOKE_AGENT
                attrs[semconv.GEN_AI_AGENT_NAME] = agent
                span_name = f"{semconv.GEN_AI_OP_INVOKE_AGENT} {agent}"
            node = None
            if metadata:
                node = metadata.get("langgraph_node")
                if node is not None and node == name:
                    attrs[semconv.LANGGRAPH_NODE] = str(node)
                    step = metadata.get("langgraph_step")
                    if isinstance(step, int):
                        attrs[semconv.LANGGRAPH_STEP] = step
            if parent_run_id is None:
                self._root_extras(attrs, tags, metadata)
            if self._capture(parent_run_id):
                self._content(attrs, semconv.INPUT_VALUE, inputs)
            prompt = self._prompt(parent_run_id, metadata, run_type == "prompt")
            if prompt and run_type == "prompt":
                attrs.update(prompt)
            # The root of a stream starts in the caller's own context and would stay current there
            # between chunks, and for good when the stream is abandoned unclosed (later spans on the
            # thread filed under it, contexts chaining up): it is not attached. Its steps still nest
            # under it through their parent run ids. ("defers_inputs" is passed only by streams.)
            stream_root = parent_run_id is None and "defers_inputs" in kwargs
            run = self._start(run_id, parent_run_id, span_name, kind, run_type, attrs, tags=tags, metadata=metadata,
                              attach=not stream_root)  # fmt: skip
            if run is not None:
                run.prompt = prompt
                run.agent = run.agent or kind == semconv.AGENT
                if node is not None and node == name:
                    run.node = str(node)
                elif name == REACT_AGENT_MODEL_STEP and node == REACT_AGENT_NODE and metadata:
                    self._react_agent(run, metadata)
        except Exception:
            self._fail("on_chain_start")

    def _react_agent(self, run: _Run, metadata: dict[str, Any]) -> None:
        """Make the graph run of a ``langgraph.prebuilt.create_react_agent`` agent an agent span.

        Such a graph announces nothing at its start (its run is named after the graph, its metadata is
        LangGraph's ``ls_integration=langgraph`` like any graph's), so it is recognised by what its first
        step runs: its ``agent`` node calling the prebuilt's ``call_model``. The graph's span is then
        renamed ``invoke_agent {graph name}`` and given the agent attributes after its start: a sampler
        does not see them, every exporter does (the span has not ended).
        """
        node = run.parent
        graph = node.parent if node is not None else None
        if (
            node is None
            or graph is None
            or node.node != REACT_AGENT_NODE
            or graph.agent
            or metadata.get("ls_integration") != LANGGRAPH_INTEGRATION
        ):
            return
        agent = graph.name
        graph.span.update_name(f"{semconv.GEN_AI_OP_INVOKE_AGENT} {agent}")
        graph.span.set_attributes(
            {
                semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OP_INVOKE_AGENT,
                semconv.GEN_AI_AGENT_NAME: agent,
                semconv.SPAN_KIND: semconv.AGENT,
            }
        )
        graph.agent = node.agent = run.agent = True

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            if self._capture(run_id):
                attrs: dict[str, Any] = {}
                self._content(attrs, semconv.OUTPUT_VALUE, outputs)
                self._end(run_id, attrs)
            else:
                self._end(run_id)
        except Exception:
            self._fail("on_chain_end")

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._error(run_id, error)
        except Exception:
            self._fail("on_chain_error")

    def on_agent_action(self, action: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            run = self._runs.get(run_id)
            if run is None:
                return
            span = run.span
            span.set_attribute(semconv.SPAN_KIND, semconv.AGENT)
            ev: dict[str, Any] = {semconv.GEN_AI_TOOL_NAME: str(getattr(action, "tool", ""))}
            if self._capture(run_id):
                self._content(ev, semconv.GEN_AI_TOOL_CALL_ARGUMENTS, getattr(action, "tool_input", None))
                self._content(ev, semconv.LANGCHAIN_AGENT_LOG, getattr(action, "log", ""))
            span.add_event(semconv.LANGCHAIN_AGENT_ACTION_EVENT, ev)
        except Exception:
            self._fail("on_agent_action")

    def on_agent_finish(self, finish: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            run = self._runs.get(run_id)
            if run is not None:
                run.span.set_attribute(semconv.SPAN_KIND, semconv.AGENT)
        except Exception:
            self._fail("on_agent_finish")

    # ----------------------------------------------------------------------------------------- LLMs

    def _llm_start(
        self,
        serialized: dict[str, Any] | None,
        run_id: UUID,
        parent_run_id: UUID | None,
        tags: list[str] | None,
        metadata: dict[str, Any] | None,
        kwargs: dict[str, Any],
        run_type: str,
        content_key: str,
        content: Callable[[], Any],
    ) -> None:
        if get_config() is None:
            return
        params = kwargs.get("invocation_params")
        model = ex.model_name(serialized, params, metadata)
        provider = ex.provider_name(serialized, metadata)
        op = "chat" if run_type == "chat_model" else "text_completion"
        attrs: dict[str, Any] = {semconv.GEN_AI_OPERATION_NAME: op}
        if model:
            attrs[semconv.GEN_AI_REQUEST_MODEL] = model
        if provider:
            attrs[semconv.GEN_AI_PROVIDER_NAME] = provider
        ex.request_params(params, metadata, attrs)
        prompt = self._prompt(parent_run_id, metadata, False)
        if prompt:
            attrs.update(prompt)
        if parent_run_id is None:
            self._root_extras(attrs, tags, metadata)
        if content_key == semconv.GEN_AI_INPUT_MESSAGES:
            if self._capture(parent_run_id, structure=True):  # structure without content when capture is off
                merge_attributes(attrs, message_attributes(content(), content=self._capture(parent_run_id)))
        elif self._capture(parent_run_id):
            self._content(attrs, content_key, content())
        tools = params.get("tools") if isinstance(params, Mapping) else None
        if tools and self._capture(parent_run_id):  # tool definitions are content (opt-in in the conventions)
            self._content(attrs, semconv.GEN_AI_TOOL_DEFINITIONS, tools)
        name = f"{op} {model or ex.run_name(serialized, kwargs, run_type)}"
        kind = SpanKind.CLIENT if ex.is_remote(serialized, params, provider) else SpanKind.INTERNAL
        run = self._start(
            run_id,
            parent_run_id,
            name,
            semconv.LLM,
            run_type,
            attrs,
            llm=True,
            tags=tags,
            metadata=metadata,
            otel_kind=kind,
        )
        if run is not None:
            run.model = model
            run.provider = provider

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            msgs = messages[0] if len(messages) == 1 else [m for batch in messages for m in batch]
            self._llm_start(serialized, run_id, parent_run_id, tags, metadata, kwargs, "chat_model",
                            semconv.GEN_AI_INPUT_MESSAGES, lambda: msgs)  # fmt: skip
        except Exception:
            self._fail("on_chat_model_start")

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            value = prompts[0] if len(prompts) == 1 else list(prompts)
            self._llm_start(serialized, run_id, parent_run_id, tags, metadata, kwargs, "llm",
                            semconv.INPUT_VALUE, lambda: value)  # fmt: skip
        except Exception:
            self._fail("on_llm_start")

    def on_llm_new_token(self, token: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.get(run_id)
        if run is not None and run.ttft_ns is None:
            run.ttft_ns = _monotonic_ns()
            if run.root and run.ctx is not None and _get_current() is run.ctx:
                # a streamed model call made its request (client-library connectors saw this span);
                # from the first chunk on the caller's code runs between chunks: step aside so that
                # an abandoned stream never stays current on the caller's thread
                _attach(run.prev or Context())

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            run = self._pop(run_id)
            if run is None:
                return
            span = run.span
            attrs: dict[str, Any] = {}
            ex.response_info(response, attrs)
            ex.token_details(response, attrs)
            if run.ttft_ns is not None:
                attrs[semconv.GEN_AI_REQUEST_STREAM] = True
            if self._capture(span=run.span, structure=True):
                msgs, reasons = ex.generations(response)
                merge_attributes(attrs, message_attributes(None, msgs, finish_reasons=reasons,
                                                 content=self._capture(span=run.span)))  # fmt: skip
            if attrs:
                span.set_attributes(attrs)
            usage = ex.token_usage(response)
            ttft = (run.ttft_ns - run.t0) / 1e9 if run.ttft_ns is not None else None
            inp, out, cached = usage if usage is not None else (None, None, None)
            model = run.model or attrs.get(semconv.GEN_AI_RESPONSE_MODEL)
            # always: the GenAI metrics count every call (duration too), sampled or not
            record_usage(span, provider=run.provider, model=model, input_tokens=inp, output_tokens=out,
                         cached_input_tokens=cached, ttft_s=ttft, operation=operation_name(run.run_type),
                         response_model=attrs.get(semconv.GEN_AI_RESPONSE_MODEL),
                         duration_s=(_monotonic_ns() - run.t0) / 1e9)  # fmt: skip
            span.end()
            self._restore(run)
        except Exception:
            self._fail("on_llm_end")

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            run = self._runs.get(run_id)
            if run is not None:  # a failed call still counts in the GenAI metrics (duration, error.type)
                record_usage(run.span, provider=run.provider, model=run.model, operation=operation_name(run.run_type),
                             duration_s=(_monotonic_ns() - run.t0) / 1e9, error_type=type(error).__qualname__)  # fmt: skip
            self._error(run_id, error)
        except Exception:
            self._fail("on_llm_error")

    # ---------------------------------------------------------------------------------- retrievers

    def on_retriever_start(
        self,
        serialized: dict[str, Any] | None,
        query: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            if get_config() is None:
                return
            attrs: dict[str, Any] = {}
            if metadata:
                vs = metadata.get("ls_vector_store_provider")
                if isinstance(vs, str):
                    attrs[semconv.DB_SYSTEM] = vs.lower()
                em = metadata.get("ls_embedding_provider")
                if isinstance(em, str):
                    attrs[semconv.EMBEDDING_MODEL] = em
                provider = retriever_provider(metadata.get("ls_retriever_name"))
                if provider:  # a GenAI provider's retrieval service; vector stores have none (documented)
                    attrs[semconv.GEN_AI_PROVIDER_NAME] = provider
            if parent_run_id is None:
                self._root_extras(attrs, tags, metadata)
            if self._capture(parent_run_id):
                self._content(attrs, semconv.GEN_AI_RETRIEVAL_QUERY_TEXT, query)
            source = ex.run_name(serialized, kwargs, "Retriever")
            attrs[semconv.GEN_AI_OPERATION_NAME] = semconv.GEN_AI_OP_RETRIEVAL
            attrs[semconv.GEN_AI_DATA_SOURCE_ID] = source
            self._start(run_id, parent_run_id, f"{semconv.GEN_AI_OP_RETRIEVAL} {source}", semconv.RETRIEVER,
                        "retriever", attrs, tags=tags, metadata=metadata)  # fmt: skip
        except Exception:
            self._fail("on_retriever_start")

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        try:
            run = self._pop(run_id)
            if run is None:
                return
            capture = self._capture(span=run.span)
            docs = ex.documents_for_record(documents, capture)
            record_documents(run.span, docs)
            if capture and documents:
                # The same list usually flows on into the next step (a prompt, a formatter): record it
                # there as a reference to these documents instead of copying their contents again.
                ref = ex._dumps({"retrieved_documents": [d["id"] for d in docs]})
                self._remember(tuple(documents), (ref, False, 0))
            run.span.end()
            self._restore(run)
        except Exception:
            self._fail("on_retriever_end")

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._error(run_id, error)
        except Exception:
            self._fail("on_retriever_error")

    # --------------------------------------------------------------------------------------- tools

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            if get_config() is None:
                return
            name = ex.run_name(serialized, kwargs, "tool")
            tool = (serialized or {}).get("name") or name
            attrs: dict[str, Any] = {
                semconv.GEN_AI_OPERATION_NAME: semconv.GEN_AI_OP_EXECUTE_TOOL,
                semconv.GEN_AI_TOOL_NAME: str(tool),
                semconv.GEN_AI_TOOL_TYPE: "function",
            }
            desc = (serialized or {}).get("description")
            if isinstance(desc, str) and desc:
                attrs[semconv.GEN_AI_TOOL_DESCRIPTION] = desc[:1000]
            call_id = kwargs.get("tool_call_id")
            if call_id:
                attrs[semconv.GEN_AI_TOOL_CALL_ID] = str(call_id)
            if parent_run_id is None:
                self._root_extras(attrs, tags, metadata)
            if self._capture(parent_run_id):
                self._content(attrs, semconv.GEN_AI_TOOL_CALL_ARGUMENTS, inputs if inputs is not None else input_str)
            self._start(run_id, parent_run_id, f"{semconv.GEN_AI_OP_EXECUTE_TOOL} {tool}", semconv.TOOL, "tool", attrs,
                        tags=tags, metadata=metadata)  # fmt: skip
        except Exception:
            self._fail("on_tool_start")

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            attrs: dict[str, Any] = {}
            call_id = getattr(output, "tool_call_id", None)  # a ToolMessage answer names its call
            if isinstance(call_id, str) and call_id:
                attrs[semconv.GEN_AI_TOOL_CALL_ID] = call_id
            if self._capture(run_id):
                value = output.content if hasattr(output, "content") and hasattr(output, "tool_call_id") else output
                self._content(attrs, semconv.GEN_AI_TOOL_CALL_RESULT, value)
            self._end(run_id, attrs)
        except Exception:
            self._fail("on_tool_end")

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            self._error(run_id, error)
        except Exception:
            self._fail("on_tool_error")

    # ---------------------------------------------------------------------------------------- misc

    def on_retry(self, retry_state: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            run = self._runs.get(run_id)
            if run is not None:
                attempt = getattr(retry_state, "attempt_number", None)
                ev = {semconv.LANGCHAIN_RETRY_ATTEMPT: int(attempt)} if isinstance(attempt, int) else {}
                run.span.add_event(semconv.LANGCHAIN_RETRY_EVENT, ev)
        except Exception:
            self._fail("on_retry")

    def __repr__(self) -> str:
        return f"<ragtrail CallbackHandler open_runs={len(self._runs)}>"

    def __deepcopy__(self, memo: dict[int, Any]) -> CallbackHandler:
        return self  # LangChain deep-copies configs in places; the handler is shared state

    def __copy__(self) -> CallbackHandler:
        return self


__all__ = ["CallbackHandler"]
