"""OTLP/HTTP metrics for ``ragtrail serve``: ``POST /v1/metrics`` → per-minute aggregates in the store.

Only ragtrail's metrics are kept (names starting ``gen_ai.`` or ``ragtrail.``), as *delta* histogram and
sum points (what ``ragtrail.init`` exports). Cumulative points cannot be added up without the sender's
previous value, so they are refused per point (``partial_success.rejected_data_points``, with the reason):
export with delta temporality (``OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=delta``). A retried
request is added again: metric aggregates are at-least-once, unlike spans (idempotent on their ids).
"""

from __future__ import annotations

import asyncio
import json
import zlib
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response  # module level: FastAPI resolves the route's annotations

from ragtrail import semconv
from ragtrail._log import logger

if TYPE_CHECKING:
    from ragtrail.server._receiver import Receiver

_DELTA = 1  # opentelemetry.proto.metrics.v1.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"


class MetricsPayloadError(ValueError):
    """The body is not an OTLP metrics export request."""


def _attrs(kvs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in kvs:
        v = kv.value
        which = v.WhichOneof("value")
        if which in ("string_value", "int_value", "double_value", "bool_value"):
            out[kv.key] = getattr(v, which)
    return out


def request_to_points(request: Any) -> tuple[list[Any], int, str]:
    """``(MetricPoints, rejected data points, reason)`` for a parsed ``ExportMetricsServiceRequest``."""
    from ragtrail.store._metrics import MetricPoint

    points: list[MetricPoint] = []
    rejected = 0
    reason = ""
    for rm in request.resource_metrics:
        res = _attrs(rm.resource.attributes)
        project = res.get(semconv.PROJECT)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if not m.name.startswith(("gen_ai.", "ragtrail.")):
                    continue
                kind = m.WhichOneof("data")
                if kind not in ("histogram", "sum"):
                    continue
                data = getattr(m, kind)
                if data.aggregation_temporality != _DELTA:
                    rejected += len(data.data_points)
                    reason = "cumulative points are not stored: export ragtrail's metrics with delta temporality"
                    continue
                for p in data.data_points:
                    attrs = _attrs(p.attributes)
                    if project and semconv.PROJECT not in attrs:
                        attrs[semconv.PROJECT] = project
                    if kind == "histogram":
                        if not p.count:
                            continue
                        lo = p.min if p.HasField("min") else None
                        hi = p.max if p.HasField("max") else None
                        points.append(MetricPoint(m.name, attrs, p.time_unix_nano, p.count, p.sum, lo, hi))
                    else:
                        v = float(p.as_double if p.WhichOneof("value") == "as_double" else p.as_int)
                        if v:
                            points.append(MetricPoint(m.name, attrs, p.time_unix_nano, 1, v, v, v))
    return points, rejected, reason


def _parse(body: bytes, content_type: str) -> Any:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    ctype = content_type.split(";", 1)[0].strip().lower()
    try:
        if ctype == _JSON:
            from google.protobuf import json_format

            return json_format.ParseDict(json.loads(body), ExportMetricsServiceRequest(), ignore_unknown_fields=True)
        return ExportMetricsServiceRequest.FromString(body)
    except Exception as exc:
        raise MetricsPayloadError(
            f"the body is not an OTLP metrics export request ({ctype or 'no type'}): {exc}"
        ) from exc


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    enc = (encoding or "identity").lower().strip()
    if enc == "identity":
        return body
    if enc not in ("gzip", "deflate"):
        raise MetricsPayloadError(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    d = zlib.decompressobj(16 + zlib.MAX_WBITS if enc == "gzip" else zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as exc:
        raise MetricsPayloadError(f"the body is not valid {enc} data: {exc}") from exc
    if len(out) > limit or d.unconsumed_tail:
        raise MetricsPayloadError(f"the decompressed body exceeds {limit} bytes")
    return out


def add_metrics_route(app: FastAPI, receiver: Receiver) -> None:
    """``POST /v1/metrics`` on ``app`` (the receiver's OTLP/HTTP application)."""

    @app.post("/v1/metrics")
    async def metrics(request: Request) -> Response:
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

        from ragtrail.store._metrics import write_metric_points

        ctype = request.headers.get("content-type", "")
        as_json = ctype.split(";", 1)[0].strip().lower() == _JSON
        if not receiver.authorized(request.headers.get("authorization")):
            return Response("missing or wrong bearer token", 401, {"WWW-Authenticate": 'Bearer realm="ragtrail"'})
        body = await request.body()
        if len(body) > receiver.max_body_bytes:
            return Response(f"the body exceeds {receiver.max_body_bytes} bytes", 413)
        try:
            msg = _parse(_decompress(body, request.headers.get("content-encoding"), receiver.max_body_bytes), ctype)
            points, rejected, reason = request_to_points(msg)
        except MetricsPayloadError as exc:
            return Response(str(exc), 400)
        try:
            await asyncio.get_running_loop().run_in_executor(
                None, write_metric_points, receiver.store, points, receiver.project
            )
        except Exception:
            logger.warning("ragtrail serve: writing metrics failed", exc_info=True)
            return Response("the store is failing; retry later", 503, {"Retry-After": "5"})
        out = ExportMetricsServiceResponse()
        if rejected:
            out.partial_success.rejected_data_points = rejected
            out.partial_success.error_message = reason
        if as_json:
            from google.protobuf import json_format

            return Response(json_format.MessageToJson(out, indent=None), 200, media_type=_JSON)
        return Response(out.SerializeToString(), 200, media_type=_PROTOBUF)
