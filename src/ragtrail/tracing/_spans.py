"""``ragtrail.span()`` and ``@ragtrail.trace``: the user-facing span helpers.

Both are no-ops before ``ragtrail.init()``. The context manager is a small class (not a generator
context manager wrapped around the SDK's own) so that a span costs little more than a raw SDK span.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar, cast, overload

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode

from ragtrail import semconv
from ragtrail._exceptions import ConfigError
from ragtrail._log import logger
from ragtrail.tracing import _setup
from ragtrail.tracing._content import Sanitizer, active_sanitizer, mask_value, safe_json, to_json
from ragtrail.tracing._messages import to_input_messages, to_output_messages
from ragtrail.tracing._premasked import note_masked

F = TypeVar("F", bound=Callable[..., Any])
_SUPPRESS_KEY = otel_context._SUPPRESS_INSTRUMENTATION_KEY  # type: ignore[attr-defined]
_KINDS = frozenset(semconv.SPAN_KINDS)


def is_suppressed() -> bool:
    """True inside ``suppress_instrumentation()`` (store writes, judge internals): connectors skip spans."""
    return bool(otel_context.get_value(_SUPPRESS_KEY))


def is_enabled() -> bool:
    """True when ragtrail is initialised and instrumentation is not suppressed here."""
    return _setup._config is not None and not otel_context.get_value(_SUPPRESS_KEY)


def capture_content() -> bool:
    """Whether content (inputs, outputs, messages, documents) is being recorded."""
    cfg = _setup._config
    return cfg is not None and cfg.capture_content


def content_value(value: Any) -> tuple[str, bool, int]:
    """Serialise, mask and cap ``value`` per the active config: (text, truncated, secrets_masked).

    Masking runs before the cap (a secret is never half-kept by a cut): the one sanitising step of
    :mod:`ragtrail.tracing._content`."""
    cfg = _setup._config
    pol = active_sanitizer()
    if pol.mask_secrets and cfg is not None and cfg.masked_in_writer():
        # the store is the only consumer and its writer process masks every value it did not see masked:
        # the secret scan runs there, off this process's GIL (issue 24); a value over the cap is masked
        # here (before the cut, so that no secret is half kept)
        text, cut = (value, False) if isinstance(value, str) else to_json(value, pol.max_bytes)
        cap = pol.max_bytes
        if not cut and (len(text) * 4 <= cap or len(text.encode("utf-8", "surrogatepass")) <= cap):
            return text, False, 0
    if isinstance(value, str):
        text, truncated, n = pol.capped(value)
    else:
        text, truncated = to_json(value, pol.max_bytes)
        if truncated and pol.mask_secrets:  # mask inside the structure before it is shrunk and cut
            text, truncated = to_json(mask_value(safe_json(value), _SECRETS_ONLY), pol.max_bytes)
        text, cut, n = pol.capped(text)
        truncated = truncated or cut
    if pol.mask_secrets and cfg is not None and cfg.store_exporter is not None:
        note_masked(text)  # the store exporter need not scan it again
    return text, truncated, n


_SECRETS_ONLY = Sanitizer()


def reuse_content(text: str) -> None:
    """``text`` (a result of :func:`content_value`) is recorded on one more span: a connector that
    records the very same object on adjacent spans (a prompt's output is the model's input) calls this
    for each further span, so the store exporter skips scanning it there too (issue 24)."""
    cfg = _setup._config
    if cfg is not None and cfg.store_exporter is not None and active_sanitizer().mask_secrets:
        note_masked(text)


def set_content(span: Span, key: str, value: Any, *, force: bool = False) -> None:
    """Record ``value`` under ``key`` on ``span`` as bounded, masked JSON; honours the content switch.

    Never raises. Truncated attribute names are listed in ``ragtrail.truncated``.
    """
    try:
        if not force and not capture_content():
            return
        if not span.is_recording():
            return
        text, truncated, n = content_value(value)
        span.set_attribute(key, text)
        if truncated:
            _add_marker(span, semconv.TRUNCATED, key)
        if n:
            prev = _get_attr(span, semconv.MASKED)
            span.set_attribute(semconv.MASKED, int(prev or 0) + n)
    except Exception:
        logger.debug("ragtrail: could not record %s", key, exc_info=True)


def message_attributes(
    input_messages: Any = None,
    output_messages: Any = None,
    *,
    finish_reasons: Sequence[Any] | None = None,
    content: bool | None = None,
) -> dict[str, Any]:
    """The attributes (``gen_ai.system_instructions``, ``gen_ai.input.messages``,
    ``gen_ai.output.messages`` as bounded, masked JSON text, plus the truncation / masking markers) of
    the messages given; ``content`` defaults to the content switch. Never raises (returns what it could)."""
    cap = capture_content() if content is None else content
    attrs: dict[str, Any] = {}
    try:
        values: list[tuple[str, Any]] = []
        if input_messages is not None:
            system, msgs = to_input_messages(input_messages, content=cap)
            if system:
                values.append((semconv.GEN_AI_SYSTEM_INSTRUCTIONS, system))
            values.append((semconv.GEN_AI_INPUT_MESSAGES, msgs))
        if output_messages is not None:
            values.append((semconv.GEN_AI_OUTPUT_MESSAGES, to_output_messages(output_messages, finish_reasons,
                                                                               content=cap)))  # fmt: skip
        for key, value in values:
            text, truncated, masked = content_value(value)
            attrs[key] = text
            if truncated:
                attrs.setdefault(semconv.TRUNCATED, []).append(key)
            if masked:
                attrs[semconv.MASKED] = int(attrs.get(semconv.MASKED, 0)) + masked
    except Exception:
        logger.debug("ragtrail: could not convert messages", exc_info=True)
    return attrs


def record_messages(
    span: Span,
    input_messages: Any = None,
    output_messages: Any = None,
    *,
    finish_reasons: Sequence[Any] | None = None,
) -> None:
    """Set :func:`message_attributes` on ``span`` (merging its truncation / masking markers with those
    already there). Never raises."""
    try:
        if not span.is_recording():
            return
        attrs = message_attributes(input_messages, output_messages, finish_reasons=finish_reasons)
        cut = attrs.pop(semconv.TRUNCATED, [])
        masked = attrs.pop(semconv.MASKED, 0)
        span.set_attributes(attrs)
        for key in cut:
            _add_marker(span, semconv.TRUNCATED, key)
        if masked:
            span.set_attribute(semconv.MASKED, int(_get_attr(span, semconv.MASKED) or 0) + masked)
    except Exception:
        logger.debug("ragtrail: could not record messages", exc_info=True)


def _get_attr(span: Span, key: str) -> Any:
    attrs = getattr(span, "attributes", None)  # public on SDK spans; a non-recording span has none
    try:
        return attrs.get(key) if attrs is not None else None
    except Exception:
        return None


def _add_marker(span: Span, key: str, name: str) -> None:
    prev = _get_attr(span, key)
    names = list(prev) if prev else []
    if name not in names:
        names.append(name)
    span.set_attribute(key, names)


def record_exception(span: Span, exc: BaseException) -> None:
    """Mark ``span`` as failed by ``exc``: ERROR status, ``error.type`` and an exception event."""
    try:
        if not span.is_recording():
            return
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"[:1024]))
        span.set_attribute(semconv.ERROR_TYPE, type(exc).__qualname__)
        span.record_exception(exc)
    except Exception:
        logger.debug("ragtrail: could not record an exception", exc_info=True)


class span:  # noqa: N801 - used as a function: ``with ragtrail.span(...)``
    """Start a span as the current span: ``with ragtrail.span("lookup", kind="RETRIEVER") as s: ...``

    Args:
        name: span name.
        kind: a ragtrail span kind (LLM, EMBEDDING, RETRIEVER, RERANKER, CHAIN, TOOL, AGENT, EVALUATOR).
        attributes: extra attributes (use names from :mod:`ragtrail.semconv`).
        input: recorded as ``ragtrail.input.value`` (per the content switch).

    An exception leaving the block sets ERROR status with an exception event and propagates unchanged.
    Before ``ragtrail.init()`` it yields a non-recording span and does nothing.
    """

    __slots__ = ("_attributes", "_input", "_kind", "_name", "_span", "_token")

    def __init__(
        self,
        name: str,
        kind: str = semconv.CHAIN,
        attributes: Mapping[str, Any] | None = None,
        *,
        input: Any = None,  # noqa: A002 - mirrors the attribute name
    ) -> None:
        if kind not in _KINDS:
            raise ConfigError(f"ragtrail.span(kind={kind!r}): kind must be one of {', '.join(semconv.SPAN_KINDS)}")
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._input = input
        self._span: Span = INVALID_SPAN
        self._token: object | None = None

    def __enter__(self) -> Span:
        cfg = _setup._config
        if cfg is None or otel_context.get_value(_SUPPRESS_KEY):
            return INVALID_SPAN
        attrs = {semconv.SPAN_KIND: self._kind}
        if self._attributes:
            attrs.update(self._attributes)
        s = cfg.tracer.start_span(self._name, context=_live_parent(), attributes=attrs)
        self._span = s
        self._token = otel_context.attach(otel_trace.set_span_in_context(s))
        if self._input is not None and cfg.capture_content:
            set_content(s, semconv.INPUT_VALUE, self._input)
        return s

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        s = self._span
        if s is INVALID_SPAN:
            return
        try:
            if exc is not None and not isinstance(exc, GeneratorExit):  # closing a generator early is no error
                record_exception(s, exc)
            s.end()
        finally:
            if self._token is not None:
                try:
                    otel_context.detach(self._token)  # type: ignore[arg-type]
                except Exception:  # pragma: no cover - a foreign context mix-up must not raise
                    pass
                self._token = None


def _bind_inputs(sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if sig is None:
        return {"args": list(args), "kwargs": kwargs}
    try:
        bound = sig.bind_partial(*args, **kwargs)
    except TypeError:
        return {"args": list(args), "kwargs": kwargs}
    data = dict(bound.arguments)
    data.pop("self", None)
    data.pop("cls", None)
    if len(data) == 1:
        return next(iter(data.values()))
    return data


_MAX_GEN_ITEMS = 1000


@overload
def trace(func: F) -> F: ...
@overload
def trace(
    func: None = None,
    *,
    name: str | None = None,
    kind: str = ...,
    capture_input: bool = ...,
    capture_output: bool = ...,
    attributes: Mapping[str, Any] | None = ...,
) -> Callable[[F], F]: ...


def trace(
    func: F | None = None,
    *,
    name: str | None = None,
    kind: str = semconv.CHAIN,
    capture_input: bool = True,
    capture_output: bool = True,
    attributes: Mapping[str, Any] | None = None,
) -> F | Callable[[F], F]:
    """Decorate a function (sync, async, generator or async generator) so that each call is a span.

    ``@ragtrail.trace`` or ``@ragtrail.trace(kind="RETRIEVER", name="search")``. Arguments are
    recorded as the input, the return value (or, for generators, the yielded items) as the output,
    per the content switch. Exceptions set ERROR status and are re-raised unchanged.
    """
    if kind not in _KINDS:
        raise ConfigError(f"ragtrail.trace(kind={kind!r}): kind must be one of {', '.join(semconv.SPAN_KINDS)}")

    def decorate(fn: F) -> F:
        qual = str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "call"))
        span_name = name or qual.rsplit("<locals>.", 1)[-1]
        try:
            sig: inspect.Signature | None = inspect.signature(fn)
        except (TypeError, ValueError):
            sig = None

        def start(args: tuple[Any, ...], kwargs: dict[str, Any]) -> span:
            sp = span(span_name, kind, attributes)
            return sp

        def record_input(s: Span, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if capture_input and s.is_recording() and capture_content():
                set_content(s, semconv.INPUT_VALUE, _bind_inputs(sig, args, kwargs))

        def record_output(s: Span, value: Any) -> None:
            if capture_output and s.is_recording() and capture_content():
                set_content(s, semconv.OUTPUT_VALUE, value)

        # Generators: the span's context is attached only while the generator's own code runs (each
        # step), never while it is suspended, so the consumer's code between items is not inside the
        # span and context attach/detach always pair up. Closing a generator early is not an error.
        if inspect.isasyncgenfunction(fn):

            @functools.wraps(fn)
            async def agen_wrapper(*args: Any, **kwargs: Any) -> Any:
                if _setup._config is None:
                    async for item in fn(*args, **kwargs):
                        yield item
                    return
                s = _start_detached(span_name, kind, attributes)
                items: list[Any] = []
                try:
                    with _attached(s):
                        record_input(s, args, kwargs)
                        agen = fn(*args, **kwargs)
                    to_send: Any = None
                    pending: BaseException | None = None
                    while True:
                        with _attached(s):
                            try:
                                if pending is not None:
                                    exc, pending = pending, None
                                    item = await agen.athrow(exc)
                                else:
                                    item = await agen.asend(to_send)
                            except StopAsyncIteration:
                                break
                        if len(items) < _MAX_GEN_ITEMS:
                            items.append(item)
                        try:
                            to_send = yield item
                        except GeneratorExit:
                            with _attached(s):
                                await agen.aclose()
                            raise
                        except BaseException as thrown:  # athrow() into us: forward it
                            pending, to_send = thrown, None
                except GeneratorExit:
                    raise
                except BaseException as exc:
                    record_exception(s, exc)
                    raise
                finally:
                    record_output(s, _join_items(items))
                    s.end()

            return cast(F, agen_wrapper)

        if inspect.isgeneratorfunction(fn):

            @functools.wraps(fn)
            def gen_wrapper(*args: Any, **kwargs: Any) -> Any:
                if _setup._config is None:
                    return (yield from fn(*args, **kwargs))
                s = _start_detached(span_name, kind, attributes)
                items: list[Any] = []
                result: Any = None
                try:
                    with _attached(s):
                        record_input(s, args, kwargs)
                        gen = fn(*args, **kwargs)
                    to_send: Any = None
                    pending: BaseException | None = None
                    while True:
                        with _attached(s):
                            try:
                                if pending is not None:
                                    exc, pending = pending, None
                                    item = gen.throw(exc)
                                else:
                                    item = gen.send(to_send)
                            except StopIteration as stop:
                                result = stop.value
                                break
                        if len(items) < _MAX_GEN_ITEMS:
                            items.append(item)
                        try:
                            to_send = yield item
                        except GeneratorExit:
                            with _attached(s):
                                gen.close()
                            raise
                        except BaseException as thrown:  # throw() into us: forward it
                            pending, to_send = thrown, None
                except GeneratorExit:
                    raise
                except BaseException as exc:
                    record_exception(s, exc)
                    raise
                finally:
                    record_output(s, _join_items(items))
                    s.end()
                return result

            return cast(F, gen_wrapper)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if _setup._config is None:
                    return await fn(*args, **kwargs)
                with start(args, kwargs) as s:
                    record_input(s, args, kwargs)
                    result = await fn(*args, **kwargs)
                    record_output(s, result)
                    return result

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if _setup._config is None:
                return fn(*args, **kwargs)
            with start(args, kwargs) as s:
                record_input(s, args, kwargs)
                result = fn(*args, **kwargs)
                record_output(s, result)
                return result

        return cast(F, wrapper)

    if func is not None:
        return decorate(func)
    return decorate


def _start_detached(name: str, kind: str, attributes: Mapping[str, Any] | None) -> Span:
    """Start a span under the current context without making it current (INVALID_SPAN when off)."""
    cfg = _setup._config
    if cfg is None or otel_context.get_value(_SUPPRESS_KEY):
        return INVALID_SPAN
    attrs: dict[str, Any] = {semconv.SPAN_KIND: kind}
    if attributes:
        attrs.update(attributes)
    return cfg.tracer.start_span(name, context=_live_parent(), attributes=attrs)


def _live_parent() -> Context | None:
    """The context a new span starts in: the current one (None), unless its span has already ended.

    A context can outlive its span where a framework ends a run in a copy of the context it started
    it in (LangChain's async end callbacks run shielded, in a new task), so the caller's context still
    holds the ended span; a span started there belongs under that span's own parent instead."""
    cur = otel_trace.get_current_span()
    if getattr(cur, "end_time", None) is None:  # live, remote or non-recording: as it is
        return None
    parent = getattr(cur, "parent", None)
    above = otel_trace.NonRecordingSpan(parent) if parent is not None else INVALID_SPAN
    return otel_trace.set_span_in_context(above, otel_context.get_current())  # other values kept


class _attached:  # noqa: N801 - used like a function
    """Make ``span`` current for the block, restoring the previous context after it."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: object | None = None

    def __enter__(self) -> Span:
        if self._span is not INVALID_SPAN:
            self._token = otel_context.attach(otel_trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            try:
                otel_context.detach(self._token)  # type: ignore[arg-type]
            except Exception:  # pragma: no cover
                pass
            self._token = None


def _join_items(items: list[Any]) -> Any:
    if items and all(isinstance(i, str) for i in items):
        return "".join(items)
    return items


def current_span() -> Span:
    """The current span (a non-recording span when there is none)."""
    return otel_trace.get_current_span()
