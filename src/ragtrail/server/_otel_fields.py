"""The OTel fields stored beside ragtrail's columns, from OTLP messages (issue 21).

The same shapes as :mod:`ragtrail.tracing._otel_fields` writes for in-process spans: the span kind's
name (INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER; None when unspecified), links as a JSON list of
``{trace_id, span_id, attributes[, trace_state]}``, every resource attribute, the scope's name and version.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ragtrail import semconv
from ragtrail.tracing._secrets import mask_secrets

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def span_kind(sp: Any) -> str | None:
    k = int(sp.kind)
    return semconv.OTEL_SPAN_KINDS[k - 1] if 1 <= k <= len(semconv.OTEL_SPAN_KINDS) else None


def links_json(sp: Any, attributes: Callable[[Any], dict[str, Any]]) -> str | None:
    """The span's links as JSON; ``attributes`` turns a repeated ``KeyValue`` field into a dict."""
    if not len(sp.links):
        return None
    out = []
    for link in sp.links:
        item: dict[str, Any] = {
            "trace_id": link.trace_id.hex(),
            "span_id": link.span_id.hex(),
            "attributes": attributes(link.attributes),
        }
        if link.trace_state:
            item["trace_state"] = link.trace_state
        out.append(item)
    text = _dumps(out)
    masked, n = mask_secrets(text)
    return masked if n else text


def resource_json(res_attrs: dict[str, Any]) -> str | None:
    if not res_attrs:
        return None
    return mask_secrets(_dumps(res_attrs))[0]


def otel_fields(
    sp: Any, scope: Any, attributes: Callable[[Any], dict[str, Any]]
) -> tuple[str | None, str | None, str | None, str | None]:
    """(span_kind, links, scope_name, scope_version) of one OTLP span under its scope."""
    return span_kind(sp), links_json(sp, attributes), scope.name or None, scope.version or None
