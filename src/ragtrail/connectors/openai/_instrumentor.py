"""Tracing the ``openai`` package: chat completions, completions and embeddings, sync and async,
streaming and not, against OpenAI or any OpenAI-compatible server (vLLM, TGI, llama.cpp, Ollama…).

Each call becomes one CLIENT span (kind LLM, or EMBEDDING) with the request parameters, token usage,
cost, finish reasons, response id/model and ``server.address``/``server.port``; streams also get the
time to first token. A W3C ``traceparent`` header goes with every request, so a server that traces
(vLLM with ``--otlp-traces-endpoint``) puts its spans into the caller's trace.

Streams: unless ``instrument(include_usage=False)`` or the caller passed ``stream_options``, the
request asks for usage in the stream (``stream_options={"include_usage": True}``); the usage-only
final chunk this adds is consumed here and not shown to the caller, who did not ask for it.

When the LangChain handler's LLM span is already current for this model call, no second span is
started: the client-only facts (response id, server, TTFT, usage when missing) go onto that span.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any, ClassVar

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span, SpanKind

from ragtrail import semconv
from ragtrail._log import logger
from ragtrail.connectors._common import RagtrailInstrumentor
from ragtrail.connectors.openai import _extract as ex
from ragtrail.tracing import (
    FailureCounter,
    active_llm_span,
    get_tracer,
    is_enabled,
    record_exception,
    record_messages,
    record_usage,
    set_content,
)

_CHAT = semconv.GEN_AI_OP_CHAT
_COMPLETION = semconv.GEN_AI_OP_TEXT_COMPLETION
_EMBEDDINGS = semconv.GEN_AI_OP_EMBEDDINGS
_failures = FailureCounter("openai", "the openai connector")
failures = _failures.count

_MAX_STREAM_TEXT = 1 << 20  # characters of streamed output kept for the span (content capture on)

_CHAT_MOD = "openai.resources.chat.completions"  # a module up to openai 1.5x, a package re-exporting the classes after
# (module, class, method, operation); chat ``stream()`` goes through ``create``, ``parse()`` does not
_TARGETS: tuple[tuple[str, str, str, str], ...] = (
    (_CHAT_MOD, "Completions", "create", _CHAT),
    (_CHAT_MOD, "AsyncCompletions", "create", _CHAT),
    (_CHAT_MOD, "Completions", "parse", _CHAT),
    (_CHAT_MOD, "AsyncCompletions", "parse", _CHAT),
    ("openai.resources.completions", "Completions", "create", _COMPLETION),
    ("openai.resources.completions", "AsyncCompletions", "create", _COMPLETION),
    ("openai.resources.embeddings", "Embeddings", "create", _EMBEDDINGS),
    ("openai.resources.embeddings", "AsyncEmbeddings", "create", _EMBEDDINGS),
)


class _Options:
    include_usage = True
    provider: str | None = None


class _Call:
    """State of one traced call (the span, whether we own it, timing and streamed data)."""

    __slots__ = (
        "done",
        "finish",
        "hide_usage_chunk",
        "model",
        "n_chunks",
        "op",
        "own",
        "provider",
        "resp_id",
        "resp_model",
        "span",
        "t0",
        "text_len",
        "texts",
        "ttft",
        "usage",
    )  # fmt: skip

    def __init__(self, span: Span, own: bool, op: str, provider: str, model: str | None, hide: bool) -> None:
        self.span = span
        self.own = own
        self.op = op
        self.provider = provider
        self.model = model
        self.t0 = time.perf_counter()
        self.ttft: float | None = None
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, str] = {}
        self.usage: Any = None
        self.resp_id: str | None = None
        self.resp_model: str | None = None
        self.hide_usage_chunk = hide
        self.done = False
        self.n_chunks = 0
        self.text_len = 0

    # -- results ---------------------------------------------------------------------------
    def record_usage(self, usage: Any, ttft: float | None = None) -> None:
        inp, out, cached = ex.usage_counts(usage)
        if not self.own and _has(self.span, semconv.GEN_AI_USAGE_INPUT_TOKENS):
            if ttft is not None and not _has(self.span, semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK):
                self.span.set_attribute(semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK, float(ttft))
            return  # the framework span already has the provider's usage
        if inp is None and out is None and ttft is None:
            return
        record_usage(
            self.span, provider=self.provider, model=self.model, input_tokens=inp, output_tokens=out,
            cached_input_tokens=cached, source="provider", ttft_s=ttft, operation=self.op,
            response_model=self.resp_model, duration_s=time.perf_counter() - self.t0,
        )  # fmt: skip
        ex.apply(self.span, ex.usage_details, usage)

    def on_response(self, resp: Any) -> None:
        """A complete (non-streamed) response."""
        span = self.span
        ex.apply(span, ex.response_meta, resp)
        if self.op == _EMBEDDINGS:
            data = ex.get(resp, "data") or []
            attrs: dict[str, Any] = {semconv.EMBEDDING_COUNT: len(data)}
            model = ex.get(resp, "model") or self.model
            if model:
                attrs[semconv.EMBEDDING_MODEL] = str(model)
            if data:
                vec = ex.get(data[0], "embedding")
                if isinstance(vec, list):
                    attrs[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] = len(vec)
            span.set_attributes(attrs)
            self.record_usage(ex.get(resp, "usage"))
            return
        choices = ex.get(resp, "choices") or []
        reasons = ex.finish_reasons(choices)
        if reasons:
            span.set_attribute(semconv.GEN_AI_RESPONSE_FINISH_REASONS, reasons)
        self.record_usage(ex.get(resp, "usage"))
        if self.own:
            if self.op == _CHAT:
                ordered = sorted(choices, key=lambda c: ex.get(c, "index", 0) or 0)
                record_messages(span, None, [ex.get(c, "message") for c in ordered], finish_reasons=reasons)
                if ordered:
                    set_content(span, semconv.OUTPUT_VALUE, ex.get(ex.get(ordered[0], "message"), "content"))
            else:
                texts = [ex.get(c, "text") for c in sorted(choices, key=lambda c: ex.get(c, "index", 0) or 0)]
                set_content(span, semconv.OUTPUT_VALUE, texts[0] if len(texts) == 1 else texts)

    def on_chunk(self, chunk: Any) -> bool:
        """One streamed chunk; returns True when the chunk must be hidden from the caller."""
        self.n_chunks += 1
        if self.resp_id is None and ex.get(chunk, "id"):
            self.resp_id = str(ex.get(chunk, "id"))
        if self.resp_model is None and ex.get(chunk, "model"):
            self.resp_model = str(ex.get(chunk, "model"))
        usage = ex.get(chunk, "usage")
        if usage is not None:
            self.usage = usage
        choices = ex.get(chunk, "choices") or []
        for c in choices:
            idx = int(ex.get(c, "index", 0) or 0)
            text = ex.get(ex.get(c, "delta"), "content") if self.op == _CHAT else ex.get(c, "text")
            if text:
                if self.ttft is None:
                    self.ttft = time.perf_counter() - self.t0
                if self.text_len < _MAX_STREAM_TEXT:
                    self.texts.setdefault(idx, []).append(text)
                    self.text_len += len(text)
            elif self.ttft is None and self.op == _CHAT and ex.get(ex.get(c, "delta"), "tool_calls"):
                self.ttft = time.perf_counter() - self.t0
            fr = ex.get(c, "finish_reason")
            if fr:
                self.finish[idx] = str(fr)
        return self.hide_usage_chunk and not choices and usage is not None

    def finish_stream(self, exc: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        span = self.span
        try:
            attrs: dict[str, Any] = {}
            if self.resp_id:
                attrs[semconv.GEN_AI_RESPONSE_ID] = self.resp_id
            if self.resp_model:
                attrs[semconv.GEN_AI_RESPONSE_MODEL] = self.resp_model
            if self.finish:
                attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = [self.finish[i] for i in sorted(self.finish)]
            if attrs:
                span.set_attributes(attrs)
            self.record_usage(self.usage, self.ttft)
            if self.own and self.texts:
                joined = ["".join(self.texts[i]) for i in sorted(self.texts)]
                if self.op == _CHAT:
                    reasons = [self.finish.get(i) for i in sorted(self.texts)]
                    record_messages(span, None, joined, finish_reasons=reasons)
                set_content(span, semconv.OUTPUT_VALUE, joined[0] if len(joined) == 1 else joined)
            if exc is not None:
                record_exception(span, exc)
        except Exception:
            _failures.failed("could not finish the stream span")
        finally:
            if self.own:
                span.end()


def _has(span: Span, key: str) -> bool:
    attrs = getattr(span, "attributes", None)
    try:
        return attrs is not None and key in attrs
    except Exception:
        return False


# ------------------------------------------------------------------------------------ streams
class _TracedStream(wrapt.ObjectProxy):  # type: ignore[misc]
    """Wraps ``openai.Stream``: records chunks as they are read; ends the span at the end, on close()
    or when the ``with`` block exits."""

    def __init__(self, wrapped: Any, call: _Call) -> None:
        super().__init__(wrapped)
        self._self_call = call

    def __iter__(self) -> Any:
        return self

    def __next__(self) -> Any:
        call = self._self_call
        while True:
            try:
                chunk = next(self.__wrapped__)
            except StopIteration:
                call.finish_stream()
                raise
            except Exception as exc:
                call.finish_stream(exc)
                raise
            try:
                hide = call.on_chunk(chunk)
            except Exception:
                _failures.failed("chunk not recorded")
                hide = False
            if not hide:
                return chunk

    def __enter__(self) -> Any:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc)
        finally:
            self._self_call.finish_stream()

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_call.finish_stream()

    def __del__(self) -> None:  # an abandoned stream still ends its span
        try:
            self._self_call.finish_stream()
        except Exception:
            pass


class _TracedAsyncStream(wrapt.ObjectProxy):  # type: ignore[misc]
    """Wraps ``openai.AsyncStream`` like :class:`_TracedStream`."""

    def __init__(self, wrapped: Any, call: _Call) -> None:
        super().__init__(wrapped)
        self._self_call = call

    def __aiter__(self) -> Any:
        return self

    async def __anext__(self) -> Any:
        call = self._self_call
        while True:
            try:
                chunk = await self.__wrapped__.__anext__()
            except StopAsyncIteration:
                call.finish_stream()
                raise
            except Exception as exc:
                call.finish_stream(exc)
                raise
            try:
                hide = call.on_chunk(chunk)
            except Exception:
                _failures.failed("chunk not recorded")
                hide = False
            if not hide:
                return chunk

    async def __aenter__(self) -> Any:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc)
        finally:
            self._self_call.finish_stream()

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_call.finish_stream()

    def __del__(self) -> None:
        try:
            self._self_call.finish_stream()
        except Exception:
            pass


# ------------------------------------------------------------------------------------ wrappers
def _start(op: str, instance: Any, kwargs: dict[str, Any]) -> tuple[_Call, dict[str, Any], Any]:
    """Start (or join) the span, prepare kwargs (usage in stream, traceparent). Returns (call, kwargs, token)."""
    kwargs = dict(kwargs)
    base_url = getattr(getattr(instance, "_client", None), "base_url", None)
    host = ex.get(base_url, "host")
    provider = _Options.provider or ex.provider_for(host)
    model = kwargs.get("model")
    model = str(model) if ex.given(model) else None
    stream = bool(kwargs.get("stream")) and op != _EMBEDDINGS
    hide = False
    if stream and _Options.include_usage and not ex.given(kwargs.get("stream_options")):
        kwargs["stream_options"] = {"include_usage": True}
        hide = True

    outer = active_llm_span() if op != _EMBEDDINGS else None
    if outer is not None:
        span: Span = outer
        own = False
    else:
        kind = semconv.EMBEDDING if op == _EMBEDDINGS else semconv.LLM
        attrs: dict[str, Any] = {
            semconv.SPAN_KIND: kind,
            semconv.GEN_AI_OPERATION_NAME: op,
            semconv.GEN_AI_PROVIDER_NAME: provider,
        }
        if op != _EMBEDDINGS:
            attrs[semconv.GEN_AI_REQUEST_STREAM] = stream
        # the sampling-relevant attributes (model, server, parameters) are there at span creation
        attrs.update(ex.pairs(ex.server, base_url))
        attrs.update(ex.pairs(ex.request_params, kwargs))
        span = get_tracer().start_span(f"{op} {model}" if model else op, kind=SpanKind.CLIENT, attributes=attrs)
        own = True
    call = _Call(span, own, op, provider, model, hide)
    if not own:
        ex.apply(span, ex.server, base_url)
    else:
        if op == _CHAT:
            record_messages(span, kwargs.get("messages"))
            if ex.given(kwargs.get("tools")):
                set_content(span, semconv.GEN_AI_TOOL_DEFINITIONS, kwargs["tools"])
        else:
            inp = kwargs.get("prompt") if op == _COMPLETION else kwargs.get("input")
            if ex.given(inp):
                set_content(span, semconv.INPUT_VALUE, inp)
    ctx = otel_trace.set_span_in_context(span)
    headers = dict(kwargs.get("extra_headers") or {})
    propagate.inject(headers, context=ctx)
    kwargs["extra_headers"] = headers
    token = otel_context.attach(ctx)
    return call, kwargs, token


def _detach(token: Any) -> None:
    try:
        otel_context.detach(token)
    except Exception:  # pragma: no cover
        pass


def _parsed(result: Any) -> Any:
    """The response model (``with_raw_response`` returns a wrapper whose parse() is cached)."""
    if hasattr(result, "choices") or hasattr(result, "data"):
        return result
    parse = getattr(result, "parse", None)
    if callable(parse) and type(result).__name__ == "LegacyAPIResponse":
        return parse()
    return None


def _sync_wrapper(op: str) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_enabled():
            return wrapped(*args, **kwargs)
        try:
            call, kwargs, token = _start(op, instance, kwargs)
        except Exception:
            _failures.failed("could not start the span")
            return wrapped(*args, **kwargs)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            _fail(call, token, exc)
            raise
        _detach(token)
        return _finish(call, result, asynchronous=False)

    return wrapper


def _fail(call: _Call, token: object, exc: BaseException) -> None:
    """The call raised: restore the context and, for a span of our own, record the error and end it."""
    _detach(token)
    if call.own:
        record_exception(call.span, exc)
        call.span.end()


def _finish(call: _Call, result: Any, *, asynchronous: bool) -> Any:
    """Record the response (or wrap a stream, which records as it is consumed) and end our span."""
    try:
        from openai import AsyncStream, Stream

        if isinstance(result, AsyncStream if asynchronous else Stream):
            return (_TracedAsyncStream if asynchronous else _TracedStream)(result, call)
        parsed = _parsed(result)
        if parsed is not None:
            call.on_response(parsed)
    except Exception:
        _failures.failed("could not record the response")
    if call.own:
        call.span.end()
    return result


def _async_wrapper(op: str) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        if not is_enabled():
            return await wrapped(*args, **kwargs)
        try:
            call, kwargs, token = _start(op, instance, kwargs)
        except Exception:
            _failures.failed("could not start the span")
            return await wrapped(*args, **kwargs)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            _fail(call, token, exc)
            raise
        _detach(token)
        return _finish(call, result, asynchronous=True)

    return wrapper


class OpenAIInstrumentor(RagtrailInstrumentor):
    """Traces the ``openai`` package (v1 API and later).

    ``instrument(include_usage=True, provider=None)``:
        include_usage: ask streaming calls for usage (``stream_options``) unless the caller passed
            ``stream_options`` itself. False leaves requests untouched (no token counts for streams).
        provider: ``gen_ai.provider.name`` for every call (default: ``openai`` for api.openai.com,
            ``azure.ai.openai`` for Azure, ``openai_compatible`` otherwise); e.g. ``"vllm"``.
    """

    library = "openai"
    distribution = "openai"
    extra = "openai"
    supported: ClassVar[tuple[str, ...]] = (">=1.40", "<4")

    def instrumentation_dependencies(self) -> Collection[str]:
        return [f"openai {','.join(self.supported)}"]

    def _instrument(self, **kwargs: Any) -> None:
        import importlib

        _Options.include_usage = bool(kwargs.get("include_usage", True))
        _Options.provider = kwargs.get("provider")
        for module, cls, method, op in _TARGETS:
            try:
                mod = importlib.import_module(module)
            except ImportError:
                logger.debug("ragtrail openai: %s not found; %s not traced", module, op)
                continue
            if not hasattr(getattr(mod, cls, None), method):
                continue
            make = _async_wrapper if cls.startswith("Async") else _sync_wrapper
            wrapt.wrap_function_wrapper(module, f"{cls}.{method}", make(op))

    def _uninstrument(self, **kwargs: Any) -> None:
        import importlib

        from opentelemetry.instrumentation.utils import unwrap

        for module, cls, method, _op in _TARGETS:
            try:
                owner = getattr(importlib.import_module(module), cls)
            except (ImportError, AttributeError):
                continue
            unwrap(owner, method)
