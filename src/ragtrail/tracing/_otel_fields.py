"""The parts of the OpenTelemetry data model stored beside ragtrail's own columns (issue 21).

For a span made in-process: the OTel span kind, links (trace id, span id, attributes, trace state), every
resource attribute, and the instrumentation scope's name and version. The OTLP receiver writes the same
fields from what it receives (``ragtrail.server._otel_fields``), in the same shapes, so a span stored
in-process and the same span received over OTLP are equal field for field.
"""

from __future__ import annotations

import json
from typing import Any

from ragtrail.tracing._secrets import mask_secrets

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def links_json(links: Any, mask: bool = True) -> str | None:
    """The span's links as compact JSON (None when it has none)."""
    if not links:
        return None
    out = []
    for link in links:
        ctx = link.context
        item: dict[str, Any] = {
            "trace_id": format(ctx.trace_id, "032x"),
            "span_id": format(ctx.span_id, "016x"),
            "attributes": {k: _plain(v) for k, v in (link.attributes or {}).items()},
        }
        state = ctx.trace_state.to_header() if ctx.trace_state else ""
        if state:
            item["trace_state"] = state
        out.append(item)
    text = _dumps(out)
    if mask:
        masked, n = mask_secrets(text)
        if n:
            text = masked
    return text


_resource_cache: dict[int, tuple[Any, str | None]] = {}


def resource_json(res: Any) -> str | None:
    """Every resource attribute as compact JSON, secrets masked (cached per Resource: one per provider)."""
    if res is None:
        return None
    hit = _resource_cache.get(id(res))
    if hit is not None and hit[0] is res:
        return hit[1]
    attrs = res.attributes
    text = _dumps({k: _plain(v) for k, v in attrs.items()}) if attrs else None
    if text is not None:
        text = mask_secrets(text)[0]  # e.g. a process.command_args holding a token
    if len(_resource_cache) > 64:
        _resource_cache.clear()
    _resource_cache[id(res)] = (res, text)
    return text


def otel_fields(span: Any, mask: bool = True) -> tuple[str | None, str | None, str | None, str | None]:
    """(span_kind, links, scope_name, scope_version): the SPAN_COLUMNS after ``resource``."""
    kind = getattr(span, "kind", None)
    scope = getattr(span, "instrumentation_scope", None)
    return (
        kind.name if kind is not None else None,
        links_json(getattr(span, "links", None), mask),
        (getattr(scope, "name", None) or None) if scope is not None else None,
        (getattr(scope, "version", None) or None) if scope is not None else None,
    )
