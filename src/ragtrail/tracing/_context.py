"""``ragtrail.context()``: session, user, tags and metadata that every span started inside inherits.

The values live in the OpenTelemetry context (one key), which is a ``contextvars`` variable: threads
and asyncio tasks that copy the context (``asyncio.create_task``, ``contextvars.copy_context().run``,
LangChain's executors) inherit them, and a span started with an explicit parent context takes them
from that context. ragtrail's span processor copies them onto each span in ``on_start`` (the public
``SpanProcessor`` hook), so spans of every connector, and of any other OTel instrumentation feeding
the same provider, carry them.

Attribute names: ``session.id`` and ``gen_ai.conversation.id`` (the session), ``user.id``,
``ragtrail.tags`` (list of strings), ``ragtrail.metadata`` (JSON text of a flat mapping).

>>> with ragtrail.context(session_id="conv-42", user_id="u-7", tags=["beta"]):  # doctest: +SKIP
...     answer = chain.invoke(question)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from ragtrail import semconv
from ragtrail._exceptions import ConfigError

CONTEXT_KEY = otel_context.create_key("ragtrail-context")
"""The OTel context key holding the active :class:`ContextValues`."""

_get_current = otel_context.get_current
_MAX_TAGS = 64

# keys of LangChain-style run metadata that name the session / the user
_SESSION_KEYS = ("session_id", "thread_id", "conversation_id")
_USER_KEYS = ("user_id",)
_FRAMEWORK_PREFIXES = ("ls_", "lc_", "langgraph_", "checkpoint")


class ContextValues:
    """An immutable snapshot of session, user, tags and metadata, with the span attributes built once."""

    __slots__ = ("attributes", "metadata", "session_id", "tags", "user_id")

    def __init__(
        self,
        session_id: str | None = None,
        user_id: str | None = None,
        tags: tuple[str, ...] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.tags = tags
        self.metadata: dict[str, Any] = dict(metadata or {})
        attrs: dict[str, Any] = {}
        if session_id is not None:
            attrs[semconv.SESSION_ID] = session_id
            attrs[semconv.GEN_AI_CONVERSATION_ID] = session_id
        if user_id is not None:
            attrs[semconv.USER_ID] = user_id
        if tags:
            attrs[semconv.TAGS] = tags
        if self.metadata:
            attrs[semconv.METADATA] = json.dumps(
                self.metadata, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
            )
        self.attributes = attrs

    def __repr__(self) -> str:
        return (
            f"ContextValues(session_id={self.session_id!r}, user_id={self.user_id!r}, tags={list(self.tags)!r}, "
            f"metadata={self.metadata!r})"
        )

    def merged(
        self,
        session_id: str | None = None,
        user_id: str | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> ContextValues:
        """This snapshot with an inner context's values on top: session and user replace, tags add up
        (first occurrence kept), metadata keys of the inner context win."""
        all_tags = self.tags
        if tags:
            seen = set(all_tags)
            extra = [t for t in tags if not (t in seen or seen.add(t))]  # type: ignore[func-returns-value]
            all_tags = (all_tags + tuple(extra))[:_MAX_TAGS]
        md = self.metadata
        if metadata:
            md = {**md, **metadata}
        return ContextValues(
            self.session_id if session_id is None else session_id,
            self.user_id if user_id is None else user_id,
            all_tags,
            md,
        )


_EMPTY = ContextValues()
_defaults: ContextValues | None = None


def _id(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"ragtrail.context({what}=...) must be a string (or an int), not {type(value).__name__}")
    text = str(value)
    if not text:
        raise ConfigError(f"ragtrail.context({what}=...) must not be empty; pass None to leave it unset")
    return text


def _tags(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    try:
        items = list(value)
    except TypeError:
        raise ConfigError(f"ragtrail.context(tags=...) must be a list of strings, not {type(value).__name__}") from None
    for t in items:
        if not isinstance(t, str):
            raise ConfigError(f"ragtrail.context(tags=...): every tag must be a string; got {t!r}")
    return tuple(dict.fromkeys(items))[:_MAX_TAGS]


def _metadata(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"ragtrail.context(metadata=...) must be a mapping, not {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _value(ctx: Context) -> ContextValues | None:
    return cast("ContextValues | None", ctx.get(CONTEXT_KEY))


def current_context() -> ContextValues:
    """The session, user, tags and metadata that a span started here would get."""
    v = _value(_get_current())
    if v is None:
        v = _defaults
    return v if v is not None else _EMPTY


def set_defaults(
    session_id: Any = None, user_id: Any = None, tags: Any = None, metadata: Any = None
) -> ContextValues | None:
    """Process-wide defaults (``ragtrail.init(session_id=…, user_id=…, tags=…, metadata=…)``), under
    every ``ragtrail.context()``. All ``None`` clears them."""
    global _defaults
    s, u, t, m = _id(session_id, "session_id"), _id(user_id, "user_id"), _tags(tags), _metadata(metadata)
    _defaults = None if s is None and u is None and not t and not m else ContextValues(s, u, t or (), m)
    return _defaults


class context:  # noqa: N801 - used like a function: ``with ragtrail.context(...)``
    """Put a session id, user id, tags and metadata on every span started inside (sync or async).

    Nestable: an inner context replaces the session and user, adds its tags and overrides metadata
    keys. Threads and tasks that copy the context inherit it; spans of every connector carry it.

    Args:
        session_id: conversation/session id (``session.id`` and ``gen_ai.conversation.id``).
        user_id: end-user id (``user.id``).
        tags: strings (``ragtrail.tags``), at most 64.
        metadata: a flat mapping (``ragtrail.metadata``, JSON text).

    Raises:
        ConfigError: a value of the wrong type.
    """

    __slots__ = ("_tokens", "values")

    def __init__(
        self,
        session_id: str | int | None = None,
        user_id: str | int | None = None,
        tags: Iterable[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.values = (_id(session_id, "session_id"), _id(user_id, "user_id"), _tags(tags), _metadata(metadata))
        self._tokens: dict[int, Any] = {}

    def __enter__(self) -> ContextValues:
        cur = _get_current()
        base = _value(cur) or _defaults or _EMPTY
        merged = base.merged(*self.values)
        new = otel_context.set_value(CONTEXT_KEY, merged, cur)
        # keyed by the attached context: one context object may be entered by several threads/tasks at once
        self._tokens[id(new)] = otel_context.attach(new)
        return merged

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        token = self._tokens.pop(id(_get_current()), None)
        if token is not None:
            otel_context.detach(token)

    async def __aenter__(self) -> ContextValues:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)


def with_framework_context(ctx: Context, tags: Any = None, metadata: Any = None) -> Context:
    """``ctx`` with a framework run's tags and metadata merged into its ragtrail context (for connectors:
    LangChain's ``config={"tags": …, "metadata": …}``). ``session_id``/``thread_id``/``conversation_id``
    and ``user_id`` metadata keys set the session and the user. Never raises."""
    try:
        md = {}
        if isinstance(metadata, Mapping):  # the framework's own keys (ls_*, langgraph_*…) are not user metadata
            md = {str(k): v for k, v in metadata.items() if not str(k).startswith(_FRAMEWORK_PREFIXES)}
        session = next((md[k] for k in _SESSION_KEYS if isinstance(md.get(k), (str, int)) and md[k] != ""), None)
        user = next((md[k] for k in _USER_KEYS if isinstance(md.get(k), (str, int)) and md[k] != ""), None)
        tag_list = [str(t) for t in tags] if tags and not isinstance(tags, str) else None
        if session is None and user is None and not tag_list and not md:
            return ctx
        base = _value(ctx) or _defaults or _EMPTY
        merged = base.merged(
            None if session is None else str(session), None if user is None else str(user), tag_list, md
        )
        return otel_context.set_value(CONTEXT_KEY, merged, ctx)
    except Exception:  # pragma: no cover - tracing never raises into the framework
        return ctx


def apply_context(span: Span, parent_context: Context | None) -> None:
    """Copy the active context's attributes onto a starting span (called from ``on_start``)."""
    v: Any = (parent_context if parent_context is not None else _get_current()).get(CONTEXT_KEY)
    if v is None:
        v = _defaults
        if v is None:
            return
    attrs = v.attributes
    if attrs:
        span.set_attributes(attrs)


class ContextSpanProcessor(SpanProcessor):
    """A span processor that puts the ``ragtrail.context()`` values on every span it sees start.

    ``ragtrail.init()`` does this already; add this processor yourself only to a provider that
    ragtrail does not feed (``provider.add_span_processor(ContextSpanProcessor())``).
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            apply_context(span, parent_context)
        except Exception:  # pragma: no cover - a processor never raises into traced code
            pass

    def on_end(self, span: ReadableSpan) -> None:
        pass


__all__ = [
    "CONTEXT_KEY",
    "ContextSpanProcessor",
    "ContextValues",
    "apply_context",
    "context",
    "current_context",
    "set_defaults",
    "with_framework_context",
]
