"""A copy of an SDK ``ReadableSpan`` with some of its fields replaced (public constructor only)."""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace import ReadableSpan


def replace_span(span: ReadableSpan, **changes: Any) -> ReadableSpan:
    """``span`` with ``changes`` (any of ``ReadableSpan``'s keyword arguments: ``context``,
    ``resource``, ``attributes``, …) replacing its own values; everything else is carried over."""
    fields: dict[str, Any] = {
        "name": span.name,
        "context": span.context,
        "parent": span.parent,
        "resource": span.resource,
        "attributes": span.attributes,
        "events": span.events,
        "links": span.links,
        "kind": span.kind,
        "status": span.status,
        "start_time": span.start_time,
        "end_time": span.end_time,
        "instrumentation_scope": span.instrumentation_scope,
    }
    fields.update(changes)
    return ReadableSpan(**fields)
