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

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.trace.propagation import _SPAN_KEY as _SPAN_CONTEXT_KEY

from ragtrail import semconv
from ragtrail._log import warn_once
from ragtrail.connectors.langchain import _extract as ex
from ragtrail.tracing import (
    CONTEXT_KEY,
    LLM_SPAN_KEY,
    content_value,
    get_config,
    record_documents,
    record_exception,
    record_usage,
    reuse_content,
    with_framework_context,
)

_SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY  # type: ignore[attr-defined]
_RUN_KEY = otel_context.create_key("ragtrail-langchain-run")
_get_current = otel_context.get_current
_attach = otel_context.attach
_SPAN_KEY = _SPAN_CONTEXT_KEY
_get_span = otel_trace.get_current_span
_monotonic_ns = time.monotonic_ns

_AGENT_NAMES = frozenset({"AgentExecutor", "agent_executor"})
_CONTROL_FLOW = frozenset({"GraphBubbleUp", "GraphInterrupt", "NodeInterrupt", "ParentCommand"})
_SWEEP_EVERY = 512


class _Run:
    """What the handler keeps for an open run (released when the run ends)."""

    __slots__ = ("ctx", "ended", "model", "prev", "prompt", "provider", "root", "run_type", "span", "t0", "ttft_ns")

    def __init__(self, span: Span, run_type: str, t0: int) -> None:
        self.span = span
        self.run_type = run_type
        self.t0 = t0
        self.ctx: Context | None = None
        self.prev: Context | None = None
        self.ttft_ns: int | None = None
        self.ended = False
        self.model: str | None = None
        self.provider: str | None = None
        self.prompt: dict[str, Any] | None = None  # registry prompt seen under this run (see _prompt)
        self.root = False


def _strip_langchain(ctx: Context) -> Context:
    """``ctx`` without the LangChain spans on top of it (the context a root run nests in)."""
    while True:
        r = cast("_Run | None", ctx.get(_RUN_KEY))
        if r is None or r.prev is None or _get_span(ctx) is not r.span:
            return ctx
        ctx = r.prev


def _memo_key(value: Any) -> Any:
    """What identifies ``value`` for the content memo: a snapshot of a list's items (so a list mutated
    in place is not mistaken for its earlier self), the object itself otherwise; None: do not memo."""
    t = type(value)
    if t is list:
        return tuple(value) if value else None
    if t is dict or t is str:
        return None
    msgs = getattr(value, "messages", None)
    if type(msgs) is list and hasattr(value, "to_messages"):
        return tuple(msgs)  # a ChatPromptValue: the chat model then receives a copy of this list
    return value


def _same(a: Any, b: Any) -> bool:
    if type(a) is tuple:
        return type(b) is tuple and len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))
    return a is b


_PROMPT_KEYS = (semconv.PROMPT_NAME, semconv.PROMPT_VERSION, semconv.PROMPT_DIGEST)


def _operation(run_type: str) -> str:
    return "chat" if run_type == "chat_model" else "text_completion"


def _is_control_flow(error: BaseException) -> bool:
    return any(c.__name__ in _CONTROL_FLOW for c in type(error).__mro__)


class CallbackHandler(BaseCallbackHandler):
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

    def __init__(self, *, ttl_s: float = 3600.0) -> None:
        super().__init__()
        if ttl_s <= 0:
            from ragtrail._exceptions import ConfigError

            raise ConfigError(f"CallbackHandler(ttl_s={ttl_s!r}): ttl_s must be a positive number of seconds")
        self.ttl_ns = int(ttl_s * 1e9)
        self._runs: dict[UUID, _Run] = {}
        self._lock = threading.Lock()
        self._starts = 0
        self._memo: list[tuple[Any, tuple[str, bool, int]] | None] = [None] * 8
        self._memo_i = 0
        self._next_sweep_ns = _monotonic_ns() + self.ttl_ns
        self.errors = 0
        """Internal failures caught (each logged once per kind); tracing never raises into LangChain."""

    # ------------------------------------------------------------------------------------ plumbing

    @property
    def open_runs(self) -> int:
        """Number of runs currently tracked (started and not yet ended or swept)."""
        return len(self._runs)

    def _fail(self, where: str) -> None:
        self.errors += 1
        warn_once(f"langchain:{where}", "ragtrail: the LangChain handler failed in %s (tracing continues)",
                  where, exc_info=True)  # fmt: skip

    def _start(
        self,
        run_id: UUID,
        parent_run_id: UUID | None,
        name: str,
        kind: str,
        run_type: str,
        attrs: dict[str, Any],
        *,
        llm: bool = False,
        tags: Sequence[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        attach: bool = True,
    ) -> _Run | None:
        cfg = get_config()
        if cfg is None:
            return None
        cur = _get_current()
        if cur.get(_SUPPRESS_KEY):
            return None
        parent_ctx: Context | None = None
        if parent_run_id is not None:
            p = self._runs.get(parent_run_id)
            if p is not None:
                parent_ctx = p.ctx  # the parent span carries that run id already
            else:  # a parent this handler never saw: keep LangChain's link on the span
                attrs[semconv.LANGCHAIN_PARENT_RUN_ID] = str(parent_run_id)
        if parent_ctx is None:
            parent_ctx = _strip_langchain(cur) if parent_run_id is None else cur
        if parent_run_id is None and (tags or metadata):  # config={"metadata": …, "tags": …} → ragtrail.context
            parent_ctx = with_framework_context(parent_ctx, tags, metadata)
        attrs[semconv.SPAN_KIND] = kind
        attrs[semconv.LANGCHAIN_RUN_ID] = str(run_id)
        attrs[semconv.LANGCHAIN_RUN_TYPE] = run_type
        span = cfg.tracer.start_span(name, context=parent_ctx, attributes=attrs)
        now = _monotonic_ns()
        run = _Run(span, run_type, now)
        run.root = parent_run_id is None
        values = dict(cur)  # one copy instead of one per set_value()
        values[_SPAN_KEY] = span
        values[_RUN_KEY] = run
        values[CONTEXT_KEY] = parent_ctx.get(CONTEXT_KEY)  # spans inside the run get the run's context
        if llm:
            values[LLM_SPAN_KEY] = span
        ctx = Context(values)
        run.ctx = ctx
        # a root restores the context without LangChain runs: a run that ended where its end could
        # not restore (async end callbacks run in a copy of the context) is not kept alive by the next
        run.prev = _strip_langchain(cur) if parent_run_id is None else cur
        self._runs[run_id] = run  # dict item assignment and pop are atomic: no lock on the hot path
        self._starts += 1  # approximate under threads; it only paces the sweep
        sweep = self._starts % _SWEEP_EVERY == 0 and now >= self._next_sweep_ns
        if attach:
            _attach(ctx)  # the token is deliberately dropped: see _restore
        if sweep:
            self.sweep()
        return run

    def _pop(self, run_id: UUID) -> _Run | None:
        run = self._runs.pop(run_id, None)
        if run is not None:
            run.ended = True
        return run

    @staticmethod
    def _restore(run: _Run) -> None:
        """Put back the context that was current before ``run`` started, if ``run``'s is still current.

        Skips contexts of runs that ended meanwhile (interleaved ends), so a dead span is never current.
        Also breaks the run ↔ context reference cycle so the run's state is freed by reference counting.
        """
        ctx = run.ctx
        run.ctx = None
        if _get_current() is not ctx:
            return
        prev = run.prev
        while prev is not None:
            r = cast("_Run | None", prev.get(_RUN_KEY))
            if r is None or not r.ended or _get_span(prev) is not r.span:
                break
            prev = r.prev
        if prev is not None:
            _attach(prev)

    def _end(self, run_id: UUID, attrs: dict[str, Any] | None = None) -> _Run | None:
        run = self._pop(run_id)
        if run is None:
            return None
        span = run.span
        if attrs:
            span.set_attributes(attrs)
        span.end()
        self._restore(run)
        return run

    def _error(self, run_id: UUID, error: BaseException) -> None:
        run = self._pop(run_id)
        if run is None:
            return
        span = run.span
        if _is_control_flow(error):
            # LangGraph interrupts and parent commands are control flow, not failures.
            span.add_event(semconv.LANGGRAPH_INTERRUPT_EVENT, {semconv.ERROR_TYPE: type(error).__name__})
        else:
            record_exception(span, error)
        span.end()
        self._restore(run)

    def sweep(self, now_ns: int | None = None) -> int:
        """End runs open for longer than ``ttl_s`` with ERROR status; returns how many were ended."""
        now = _monotonic_ns() if now_ns is None else now_ns
        cutoff = now - self.ttl_ns
        self._next_sweep_ns = now + self.ttl_ns // 2
        with self._lock:  # one sweep at a time; runs ending meanwhile race only through atomic pops
            candidates = [(k, r) for k, r in list(self._runs.items()) if r.t0 <= cutoff]
            stale = [r for k, r in candidates if self._runs.pop(k, None) is r]
        for run in stale:
            run.ended = True
            run.ctx = None
            try:
                span = run.span
                span.set_attribute(semconv.ABANDONED, True)
                span.set_status(Status(StatusCode.ERROR, "abandoned: the LangChain run did not end within the TTL"))
                span.end()
            except Exception:
                self._fail("sweep")
        return len(stale)

    def _content(self, attrs: dict[str, Any], key: str, value: Any) -> None:
        """Capture ``value`` under ``key`` (bounded, masked). Adjacent runs often carry the very same
        object (a prompt's output is the model's input, a step's output the next step's input): a small
        identity memo serialises it once."""
        memo_key = None if type(value) is str else _memo_key(value)
        if memo_key is None:
            text, truncated, masked = content_value(ex.to_text(value))
        else:
            memo = self._memo
            hit = None
            tup = type(memo_key) is tuple
            for e in memo:
                if e is None:
                    continue
                k = e[0]
                if k is memo_key or (tup and type(k) is tuple and len(k) == len(memo_key) and _same(k, memo_key)):
                    hit = e[1]
                    break
            if hit is None:
                hit = content_value(ex.to_text(value))
                self._remember(memo_key, hit)
            else:
                reuse_content(hit[0])  # the same text on one more span: the exporter skips its scan there too
            text, truncated, masked = hit
        attrs[key] = text
        if truncated:
            attrs.setdefault(semconv.TRUNCATED, []).append(key)
        if masked:
            attrs[semconv.MASKED] = attrs.get(semconv.MASKED, 0) + masked

    def _remember(self, memo_key: Any, captured: tuple[str, bool, int]) -> None:
        i = self._memo_i
        self._memo[i & 7] = (memo_key, captured)
        self._memo_i = i + 1

    def _capture(self, run_id: UUID | None = None, span: Span | None = None) -> bool:
        """Whether to record content; never for a span that will not be recorded (a sampled-out trace):
        ``run_id`` names the run whose span receives it (a start's parent run, an end's own run)."""
        cfg = get_config()
        if cfg is None or not cfg.capture_content:
            return False
        if span is None and run_id is not None:
            run = self._runs.get(run_id)
            span = run.span if run is not None else None
        return span is None or span.is_recording()

    @staticmethod
    def _root_extras(attrs: dict[str, Any], tags: Sequence[str] | None, metadata: Mapping[str, Any] | None) -> None:
        if tags:
            attrs[semconv.TAGS] = [str(t) for t in tags[:64]]
        if metadata:
            user = {k: v for k, v in metadata.items() if not k.startswith(("ls_", "lc_", "langgraph_", "checkpoint"))}
            if user:
                attrs[semconv.METADATA] = ex._dumps(ex.plain(user, 3))

    def _prompt(self, parent_run_id: UUID | None, metadata: Mapping[str, Any] | None, is_prompt: bool) -> Any:
        """The registry prompt (``ragtrail.prompts``) a run works with: named in its metadata (a prompt
        template from ``PromptVersion.to_langchain()``, or metadata set on the whole chain), else the one
        its parent saw. A prompt run tells its parent, so the LLM runs after it under that parent, or
        nested deeper, carry the prompt version too."""
        parent = self._runs.get(parent_run_id) if parent_run_id is not None else None
        found = None
        if metadata and semconv.PROMPT_NAME in metadata:
            found = {k: metadata[k] for k in _PROMPT_KEYS if k in metadata}
        if found and is_prompt and parent is not None:
            parent.prompt = found
        return found or (parent.prompt if parent is not None else None)

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
            if name in _AGENT_NAMES:
                kind = semconv.AGENT
                attrs[semconv.GEN_AI_OPERATION_NAME] = "invoke_agent"
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
            run = self._start(
                run_id, parent_run_id, name, kind, run_type, attrs, tags=tags, metadata=metadata, attach=not stream_root
            )
            if run is not None:
                run.prompt = prompt
        except Exception:
            self._fail("on_chain_start")

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
        if self._capture(parent_run_id):
            self._content(attrs, content_key, content())
        name = f"{op} {model or ex.run_name(serialized, kwargs, run_type)}"
        run = self._start(
            run_id, parent_run_id, name, semconv.LLM, run_type, attrs, llm=True, tags=tags, metadata=metadata
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
            if run.ttft_ns is not None:
                attrs[semconv.STREAMING] = True
            if self._capture(span=run.span):
                self._content(attrs, semconv.GEN_AI_OUTPUT_MESSAGES, ex.output_messages(response))
            if attrs:
                span.set_attributes(attrs)
            usage = ex.token_usage(response)
            ttft = (run.ttft_ns - run.t0) / 1e9 if run.ttft_ns is not None else None
            inp, out, cached = usage if usage is not None else (None, None, None)
            model = run.model or attrs.get(semconv.GEN_AI_RESPONSE_MODEL)
            # always: the GenAI metrics count every call (duration too), sampled or not
            record_usage(span, provider=run.provider, model=model, input_tokens=inp, output_tokens=out,
                         cached_input_tokens=cached, ttft_s=ttft, operation=_operation(run.run_type),
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
                record_usage(run.span, provider=run.provider, model=run.model, operation=_operation(run.run_type),
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
            if parent_run_id is None:
                self._root_extras(attrs, tags, metadata)
            if self._capture(parent_run_id):
                self._content(attrs, semconv.RETRIEVAL_QUERY, query)
            name = ex.run_name(serialized, kwargs, "Retriever")
            self._start(
                run_id, parent_run_id, name, semconv.RETRIEVER, "retriever", attrs, tags=tags, metadata=metadata
            )
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
            attrs: dict[str, Any] = {semconv.GEN_AI_OPERATION_NAME: "execute_tool", semconv.GEN_AI_TOOL_NAME: str(tool)}
            call_id = kwargs.get("tool_call_id")
            if call_id:
                attrs[semconv.GEN_AI_TOOL_CALL_ID] = str(call_id)
            if parent_run_id is None:
                self._root_extras(attrs, tags, metadata)
            if self._capture(parent_run_id):
                self._content(attrs, semconv.GEN_AI_TOOL_CALL_ARGUMENTS, inputs if inputs is not None else input_str)
            self._start(run_id, parent_run_id, name, semconv.TOOL, "tool", attrs, tags=tags, metadata=metadata)
        except Exception:
            self._fail("on_tool_start")

    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        try:
            if self._capture(run_id):
                attrs: dict[str, Any] = {}
                value = output.content if hasattr(output, "content") and hasattr(output, "tool_call_id") else output
                self._content(attrs, semconv.GEN_AI_TOOL_CALL_RESULT, value)
                self._end(run_id, attrs)
            else:
                self._end(run_id)
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
