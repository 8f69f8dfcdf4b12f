"""OTLP trace payloads (``opentelemetry-proto`` messages) → store rows in ``SPAN_COLUMNS`` order.

The row layout is the one :func:`ragtrail.tracing.span_to_row` writes for spans made in-process, so
spans that arrive over OTLP and spans exported locally are indistinguishable in the store.

Parsing goes through the generated protobuf classes only: binary payloads with
``ExportTraceServiceRequest.FromString``, OTLP/JSON with ``google.protobuf.json_format`` after the one
documented OTLP/JSON deviation from the proto3 JSON mapping (trace and span ids are hex, not base64).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

from ragtrail import semconv
from ragtrail.server import _otel_fields as _otel
from ragtrail.store._storable import _row_ok, storable_row
from ragtrail.tracing._classify import classify, int_or_none
from ragtrail.tracing._content import (
    DEFAULT_SANITIZER,
    Sanitizer,
    mark_sanitized,
    sanitize_attributes,
    sanitize_events,
    sanitize_name,
)

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}
_ZERO16 = b"\0" * 16
_ZERO8 = b"\0" * 8
_ID_KEYS = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")


class PayloadError(ValueError):
    """The payload is not a valid OTLP trace export request (the message says what is wrong)."""


def parse_protobuf(body: bytes) -> Any:
    """An ``ExportTraceServiceRequest`` from OTLP/protobuf bytes; raises :class:`PayloadError`."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        return ExportTraceServiceRequest.FromString(body)
    except RecursionError as exc:
        raise PayloadError("the protobuf message is nested too deeply") from exc
    except DecodeError as exc:
        raise PayloadError(f"the body is not an OTLP ExportTraceServiceRequest in protobuf encoding: {exc}") from exc


def _hex_to_b64(obj: Any) -> None:
    """OTLP/JSON encodes ids as hex; the proto3 JSON mapping of ``bytes`` is base64. Rewrite in place."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in _ID_KEYS and isinstance(v, str) and len(v) in (16, 32):
                try:
                    obj[k] = base64.b64encode(bytes.fromhex(v)).decode("ascii")
                except ValueError:
                    pass  # not hex: leave it, json_format reports it if it is not base64 either
            else:
                _hex_to_b64(v)
    elif isinstance(obj, list):
        for v in obj:
            _hex_to_b64(v)


def parse_json(body: bytes) -> Any:
    """An ``ExportTraceServiceRequest`` from an OTLP/JSON body; raises :class:`PayloadError`."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(f"the body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError("the JSON is nested too deeply") from exc
    if not isinstance(data, dict):
        raise PayloadError("an OTLP/JSON trace export must be a JSON object with a 'resourceSpans' list")
    try:
        _hex_to_b64(data)
        return json_format.ParseDict(data, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, binascii.Error, TypeError, ValueError) as exc:
        raise PayloadError(f"the JSON is not an OTLP trace export request: {exc}") from exc
    except RecursionError as exc:
        raise PayloadError("the JSON is nested too deeply") from exc


_MAX_VALUE_DEPTH = 32


def any_value(v: Any, depth: int = 0) -> Any:
    """A Python value from an OTLP ``AnyValue`` (nesting deeper than 32 levels is kept as text)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if depth >= _MAX_VALUE_DEPTH and which in ("array_value", "kvlist_value"):
        return "<nested too deeply>"
    if which == "array_value":
        return [any_value(x, depth + 1) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value, depth + 1) for kv in v.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    return getattr(v, which)


def attributes(kvs: Any) -> dict[str, Any]:
    """A dict from a repeated ``KeyValue`` field."""
    return {kv.key: any_value(kv.value) for kv in kvs}


def _float_or_none(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _kind(attrs: dict[str, Any]) -> str | None:
    kind = attrs.get(semconv.SPAN_KIND)
    if isinstance(kind, str) and kind:
        return kind
    oi = attrs.get(semconv.OI_SPAN_KIND)
    if isinstance(oi, str) and oi.upper() in semconv.SPAN_KINDS:
        return oi.upper()
    return None


def request_to_rows(
    request: Any, default_project: str, policy: Sanitizer | None = None
) -> tuple[list[tuple[Any, ...]], int, str]:
    """Rows for every valid span of ``request``; returns (rows, rejected_count, first_rejection_reason).

    Spans with a trace id that is not 16 bytes or a span id that is not 8 bytes, or an id of all zeros
    (invalid in OTLP), are rejected (counted, not stored): the rest of the request is still written
    (OTLP partial success). Every row goes through the same sanitising step as spans made in-process
    (secret masking, the ``mask`` hook, the byte cap: ``policy``, default masking with a 32 KiB cap),
    and is made storable (:func:`ragtrail.store.storable_row`).
    """
    pol = policy if policy is not None else DEFAULT_SANITIZER
    rows: list[tuple[Any, ...]] = []
    rejected = 0
    reason = ""
    for rs in request.resource_spans:
        res_attrs = attributes(rs.resource.attributes)
        resource_json = _otel.resource_json(res_attrs)  # every resource attribute (issue 21)
        res_project = res_attrs.get(semconv.PROJECT)
        for ss in rs.scope_spans:
            scope = ss.scope.name or None
            for sp in ss.spans:
                if len(sp.trace_id) != 16 or len(sp.span_id) != 8:
                    rejected += 1
                    reason = reason or (
                        f"span {sp.name[:100]!r} has a trace id of {len(sp.trace_id)} bytes and a span id of "
                        f"{len(sp.span_id)} bytes (OTLP needs 16 and 8)"
                    )
                    continue
                if sp.trace_id == _ZERO16 or sp.span_id == _ZERO8:
                    rejected += 1
                    reason = reason or f"span {sp.name[:100]!r} has an all-zero trace or span id (invalid in OTLP)"
                    continue
                otel = _otel.otel_fields(sp, ss.scope, attributes)  # span kind, links, scope (issue 21)
                row = _row(sp, res_project, default_project, resource_json, scope, pol, otel)
                rows.append(row if _row_ok(row) else storable_row(row)[0])
    return rows, rejected, reason


def _row(
    sp: Any,
    res_project: Any,
    default_project: str,
    resource_json: str | None,
    scope: str | None,
    pol: Sanitizer,
    otel: tuple[Any, ...],
) -> tuple[Any, ...]:
    attrs = attributes(sp.attributes)
    attrs = classify(attrs) or attrs  # kind, tokens and cost for GenAI spans of any SDK (issue 21)
    if scope and semconv.OTLP_SCOPE_NAME not in attrs:
        attrs[semconv.OTLP_SCOPE_NAME] = scope
    clean, cut, n = sanitize_attributes(attrs, pol)
    if clean is not None:
        attrs = mark_sanitized(clean, attrs, cut, n)
    parent = sp.parent_span_id
    start = int(sp.start_time_unix_nano)
    end = int(sp.end_time_unix_nano) or start
    events = None
    if len(sp.events):
        ev = [
            {"name": e.name, "time_ns": int(e.time_unix_nano), "attributes": attributes(e.attributes)}
            for e in sp.events
        ]
        events = _dumps(sanitize_events(ev, pol) or ev)
    model = (
        attrs.get(semconv.GEN_AI_RESPONSE_MODEL)
        or attrs.get(semconv.GEN_AI_REQUEST_MODEL)
        or attrs.get(semconv.EMBEDDING_MODEL)
    )
    project = attrs.get(semconv.PROJECT) or res_project or default_project
    return (
        sp.trace_id.hex(),
        sp.span_id.hex(),
        parent.hex() if len(parent) == 8 and parent != b"\0" * 8 else None,
        sanitize_name(sp.name, pol),
        _kind(attrs),
        start,
        end,
        (end - start) / 1e6,
        _STATUS.get(int(sp.status.code), "UNSET"),
        pol.capped(sp.status.message)[0] if sp.status.message else None,
        model if isinstance(model, str) else None,
        # Only the current GenAI names are promoted to the token columns: vLLM's server spans (older
        # names) describe the same tokens as the client's LLM span and would count them twice.
        int_or_none(attrs.get(semconv.GEN_AI_USAGE_INPUT_TOKENS)),
        int_or_none(attrs.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS)),
        _float_or_none(attrs.get(semconv.COST_USD)),
        str(project),
        _dumps(attrs),
        events,
        resource_json,
        _text_or_none(attrs.get(semconv.SESSION_ID)),
        _text_or_none(attrs.get(semconv.USER_ID)),
        *otel,
        # as the exporter gives it: a value that is not a whole count is emptied and marked by storable_row
        attrs.get(semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS),
    )


def _text_or_none(v: Any) -> str | None:
    return None if v is None or isinstance(v, (dict, list)) else str(v)


def iter_span_ids(request: Any) -> Iterator[tuple[str, str]]:
    """(trace_id, span_id) hex pairs of a request (for tests and diagnostics)."""
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                yield sp.trace_id.hex(), sp.span_id.hex()
