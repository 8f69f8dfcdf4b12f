"""OTLP trace payloads built with the ``opentelemetry-proto`` messages, for the hardening tests and the
serve soak: innocent spans and one poison span of each kind (issue 13)."""

from __future__ import annotations

import os
import random
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from ragtrail import semconv


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def span(name: str, *, project: str, attrs: dict[str, Any] | None = None, start: int | None = None,
         trace_id: bytes | None = None, span_id: bytes | None = None) -> Span:  # fmt: skip
    t0 = time.time_ns() if start is None else start
    return Span(
        trace_id=trace_id if trace_id is not None else os.urandom(16),
        span_id=span_id if span_id is not None else os.urandom(8),
        name=name,
        start_time_unix_nano=t0,
        end_time_unix_nano=t0 + 1_000_000 if t0 < 2**64 - 1_000_000 else t0,
        attributes=[kv(semconv.PROJECT, project), *(kv(k, v) for k, v in (attrs or {}).items())],
    )


def request(spans: list[Span]) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=spans)])])


def innocent(n: int, project: str = "innocent", prefix: str = "ok") -> ExportTraceServiceRequest:
    return request([span(f"{prefix}-{i}", project=project, attrs={"app.i": i, semconv.GEN_AI_USAGE_INPUT_TOKENS: i})
                    for i in range(n)])  # fmt: skip


POISON_KINDS = ("tokens-20-nines", "start-2^63", "nul-in-string", "nan-cost", "huge-int-tokens")


def poison(kind: str, project: str = "poison") -> ExportTraceServiceRequest:
    """One poison span of ``kind`` (see :data:`POISON_KINDS`)."""
    if kind == "tokens-20-nines":
        sp = span("poison-nines", project=project, attrs={semconv.GEN_AI_USAGE_INPUT_TOKENS: "9" * 20})
    elif kind == "start-2^63":
        sp = span("poison-time", project=project, start=2**63 + random.randrange(1000))
    elif kind == "nul-in-string":
        sp = span(
            "poison-nul\x00", project=project, attrs={"app.text": "a\x00b", semconv.GEN_AI_REQUEST_MODEL: "m\x00"}
        )
    elif kind == "nan-cost":
        sp = span("poison-nan", project=project, attrs={semconv.COST_USD: float("nan")})
    elif kind == "huge-int-tokens":
        sp = span("poison-big", project=project, attrs={semconv.GEN_AI_USAGE_OUTPUT_TOKENS: 2**63 - 1,
                                                         semconv.GEN_AI_USAGE_INPUT_TOKENS: -(2**63)})  # fmt: skip
    else:  # pragma: no cover
        raise ValueError(kind)
    return request([sp])
