"""Streamed responses: the spans that returned a stream (the synthesizer, the query engine) stay open
until the user has read its last chunk.

A response object's ``response_gen`` is wrapped once; the wrapper yields exactly the original chunks,
makes the owning span current while LlamaIndex produces each one, and ends the owners after the last.
"""

from __future__ import annotations

import contextvars
import inspect
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace

from ragtrail import semconv
from ragtrail.connectors.llama_index._state import _STATE, _end_record, _failed, _Open
from ragtrail.tracing import record_exception, set_content

_STREAM_OWNER: contextvars.ContextVar[_Open | None] = contextvars.ContextVar("ragtrail_li_stream", default=None)
_WRAPPED: weakref.WeakKeyDictionary[Any, list[_Open]] = weakref.WeakKeyDictionary()


def _finish_stream(owners: list[_Open], err: BaseException | None, parts: list[str]) -> None:
    """The user read the stream to its end (or closed it): end the spans that returned it."""
    for rec in owners:
        try:
            if parts:
                set_content(rec.span, semconv.OUTPUT_VALUE, "".join(parts))
            if err is not None:
                record_exception(rec.span, err)
            _end_record(rec)
        except Exception:
            _failed("stream end")


def _sync_stream(gen: Iterator[Any], owners: list[_Open]) -> Iterator[Any]:
    err: BaseException | None = None
    parts: list[str] = []
    try:
        while True:
            tok = _STREAM_OWNER.set(owners[0])
            otok = otel_context.attach(otel_trace.set_span_in_context(owners[0].span))
            try:
                item = next(gen)
                if isinstance(item, str):
                    parts.append(item)
            except StopIteration:
                return
            finally:
                otel_context.detach(otok)
                _STREAM_OWNER.reset(tok)
            yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        err = exc
        raise
    finally:
        close = getattr(gen, "close", None)
        if close is not None:
            close()
        _finish_stream(owners, err, parts)


async def _async_stream(gen: AsyncIterator[Any], owners: list[_Open]) -> AsyncIterator[Any]:
    err: BaseException | None = None
    parts: list[str] = []
    try:
        while True:
            tok = _STREAM_OWNER.set(owners[0])
            otok = otel_context.attach(otel_trace.set_span_in_context(owners[0].span))
            try:
                item = await gen.__anext__()
                if isinstance(item, str):
                    parts.append(item)
            except StopAsyncIteration:
                return
            finally:
                otel_context.detach(otok)
                _STREAM_OWNER.reset(tok)
            yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        err = exc
        raise
    finally:
        aclose = getattr(gen, "aclose", None)
        if aclose is not None:
            await aclose()
        _finish_stream(owners, err, parts)


def _own_stream(rec: _Open, result: Any) -> bool:
    """Make ``rec`` end with the stream of the response object ``result`` (wrapping it once).

    The wrapper yields exactly the chunks of the original stream; it only makes the spans that returned
    the stream current while LlamaIndex produces each chunk, and ends them after the last one.
    """
    try:
        gen: Any = getattr(result, "response_gen", None)
        owners = _WRAPPED.get(gen) if gen is not None else None
        if owners is None:
            owners = [rec]
            wrapped: Any = _async_stream(gen, owners) if inspect.isasyncgen(gen) else _sync_stream(gen, owners)
            result.response_gen = wrapped
            _WRAPPED[wrapped] = owners
        else:
            owners.append(rec)
    except Exception:
        _failed("stream wrap")
        return False  # the span ends now and the stream is left as it was
    rec.stream_owner = True
    return True


def _end_pending_ancestors(rec: _Open | None, text: Any) -> None:
    """Spans that returned a stream (``stream``, the synthesizer, the query engine) end with its last chunk.

    Each gets the streamed text as its output, unless it recorded one itself.
    """
    while rec is not None:
        with _STATE.lock:
            if (
                rec.stream_owner
                or not rec.pending
                or not any(v is rec for v in _STATE.open.values())
                or _STATE.waiting_on(rec)
            ):
                return
        if rec.kind != semconv.LLM and isinstance(text, str):
            attrs = getattr(rec.span, "attributes", None) or {}
            if semconv.OUTPUT_VALUE not in attrs:
                set_content(rec.span, semconv.OUTPUT_VALUE, text)
        _end_record(rec)
        rec = rec.parent
