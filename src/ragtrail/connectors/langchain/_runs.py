"""Run bookkeeping of the LangChain :class:`~ragtrail.connectors.langchain.CallbackHandler`: per-run
state keyed by run id, span start and end with the context set and restored (never detached), the TTL
sweep of abandoned runs, and the small helpers the callbacks share (content capture with an identity
memo, root extras, the registry prompt a run works with). The callbacks themselves are in ``_handler``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation import _SPAN_KEY as _SPAN_CONTEXT_KEY

from ragtrail import semconv
from ragtrail.connectors.langchain import _extract as ex
from ragtrail.connectors.langchain._failures import counter as _failures
from ragtrail.tracing import (
    CONTEXT_KEY,
    LLM_SPAN_KEY,
    content_value,
    get_config,
    record_exception,
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

AGENT_NAMES = frozenset({"AgentExecutor", "agent_executor"})
CREATE_AGENT_INTEGRATION = "langchain_create_agent"
"""``ls_integration`` metadata of a graph made by ``langchain.agents.create_agent`` (inherited by its runs)."""
LANGGRAPH_INTEGRATION = "langgraph"
"""``ls_integration`` metadata that LangGraph puts on every run of a graph."""
REACT_AGENT_NODE = "agent"
"""The model node of a ``langgraph.prebuilt.create_react_agent`` graph …"""
REACT_AGENT_MODEL_STEP = "call_model"
"""… and the runnable it runs first: together they tell a prebuilt ReAct agent (LangGraph sets no
agent metadata of its own on these graphs; see CallbackHandler._react_agent)."""
_CONTROL_FLOW = frozenset({"GraphBubbleUp", "GraphInterrupt", "NodeInterrupt", "ParentCommand"})
_SWEEP_EVERY = 512


class _Run:
    """What the handler keeps for an open run (released when the run ends)."""

    __slots__ = (
        "agent", "ctx", "ended", "model", "name", "node", "parent", "prev", "prompt", "provider", "root", "run_type",
        "span", "t0", "ttft_ns",
    )  # fmt: skip

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
        self.agent = False  # this run is an agent's, or runs inside one (see CallbackHandler.on_chain_start)
        self.name = ""  # the span name it started with
        self.node: str | None = None  # the LangGraph node this run is the run of
        self.parent: _Run | None = None  # the parent run, when this handler saw it


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


def operation_name(run_type: str) -> str:
    return "chat" if run_type == "chat_model" else "text_completion"


def _is_control_flow(error: BaseException) -> bool:
    return any(c.__name__ in _CONTROL_FLOW for c in type(error).__mro__)


class RunTracker(BaseCallbackHandler):
    """The run bookkeeping :class:`CallbackHandler` builds on (see the module docstring)."""

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
        _failures.failed(where)  # the connector's failures() count; logged once per kind (tracing continues)

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
        otel_kind: SpanKind = SpanKind.INTERNAL,
    ) -> _Run | None:
        cfg = get_config()
        if cfg is None:
            return None
        cur = _get_current()
        if cur.get(_SUPPRESS_KEY):
            return None
        parent_ctx: Context | None = None
        p: _Run | None = None
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
        span = cfg.tracer.start_span(name, context=parent_ctx, kind=otel_kind, attributes=attrs)
        now = _monotonic_ns()
        run = _Run(span, run_type, now)
        run.root = parent_run_id is None
        run.agent = p is not None and p.agent
        run.name = name
        run.parent = p
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

    def _capture(self, run_id: UUID | None = None, span: Span | None = None, structure: bool = False) -> bool:
        """Whether to record content (``structure``: or the structure of messages, which is recorded with
        content capture off too); never for a span that will not be recorded (a sampled-out trace):
        ``run_id`` names the run whose span receives it (a start's parent run, an end's own run)."""
        cfg = get_config()
        if cfg is None or not (cfg.capture_content or structure):
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


def merge_attributes(attrs: dict[str, Any], more: dict[str, Any]) -> None:
    """Add ``more`` (message attributes) to ``attrs``, merging the truncation / masking markers."""
    cut = more.pop(semconv.TRUNCATED, None)
    masked = more.pop(semconv.MASKED, 0)
    attrs.update(more)
    if cut:
        attrs.setdefault(semconv.TRUNCATED, []).extend(cut)
    if masked:
        attrs[semconv.MASKED] = int(attrs.get(semconv.MASKED, 0)) + masked
