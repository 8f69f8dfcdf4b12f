"""GenAI metrics for every LLM and embedding call, whether or not its trace is sampled.

Instruments (OpenTelemetry GenAI metric conventions, through the OTel metrics SDK's public API):

* ``gen_ai.client.token.usage`` — histogram, ``{token}``, one point per call and token type
  (``gen_ai.token.type`` = ``input`` | ``output``), the convention's bucket boundaries;
* ``gen_ai.client.operation.duration`` — histogram, ``s``, the convention's boundaries;
* ``gen_ai.client.operation.time_to_first_chunk`` — histogram, ``s``, streamed calls only;
* ``ragtrail.gen_ai.client.cost`` — counter, ``USD``, calls whose price is known.

Attributes: ``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
``gen_ai.response.model`` and ``error.type`` when present. Figures are taken where connectors report a
call (:func:`ragtrail.tracing.record_usage`), not from exported spans, so a sampled-out (non-recording)
span still counts; each span is counted once even when two connectors report the same call.

Readers: the store (per-minute aggregates, delta temporality, every ``metrics_interval_s`` and at
flush), OTLP (``/v1/metrics`` beside the traces endpoint) when ``otlp_endpoint`` is set, a Prometheus
scrape endpoint with ``prometheus_port=`` (``pip install 'ragtrail[prometheus]'``), and any
``metric_readers=`` given. ragtrail uses its own MeterProvider and never replaces the application's.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, ObservableCounter, UpDownCounter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail._exceptions import ConfigError
from ragtrail._log import logger

__all__ = ["GenAIMetrics", "StoreMetricExporter", "points_from_metrics_data", "setup", "validate"]

# the bucket boundaries the GenAI metric conventions give
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFC_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

DELTA: dict[type, AggregationTemporality] = {
    Counter: AggregationTemporality.DELTA,
    Histogram: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
}
_SEEN_MAX = 16_384  # spans remembered for the once-per-span rule


def bucket_views() -> list[View]:
    """The GenAI conventions' histogram buckets, as views of the MeterProvider ragtrail creates (a view
    works with every SDK of the supported range; the instruments' bucket advisory needs SDK 1.30+)."""
    return [
        View(instrument_name=name, aggregation=ExplicitBucketHistogramAggregation(boundaries))
        for name, boundaries in (
            (semconv.METRIC_GEN_AI_TOKEN_USAGE, TOKEN_BUCKETS),
            (semconv.METRIC_GEN_AI_OPERATION_DURATION, DURATION_BUCKETS),
            (semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK, TTFC_BUCKETS),
        )
    ]


class GenAIMetrics:
    """The instruments of one ``ragtrail.init`` and the MeterProvider that owns them (built with
    :func:`bucket_views`)."""

    def __init__(self, provider: MeterProvider) -> None:
        self.provider = provider
        meter = provider.get_meter("ragtrail")
        self.tokens = meter.create_histogram(
            semconv.METRIC_GEN_AI_TOKEN_USAGE, unit="{token}", description="Input and output tokens per call"
        )  # fmt: skip
        self.duration = meter.create_histogram(
            semconv.METRIC_GEN_AI_OPERATION_DURATION, unit="s", description="GenAI operation duration"
        )  # fmt: skip
        self.ttfc = meter.create_histogram(
            semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK, unit="s", description="Time to the first chunk of a stream"
        )  # fmt: skip
        self.cost = meter.create_counter(semconv.METRIC_COST, unit="USD", description="Cost of GenAI calls")
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._lock = threading.Lock()

    def _first_time(self, span: Span) -> bool:
        """True the first time a call on ``span`` is reported (False for a second connector on it)."""
        sc = span.get_span_context()
        if not sc.span_id:
            return True
        key = (sc.trace_id, sc.span_id)
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > _SEEN_MAX:
                self._seen.popitem(last=False)
        return True

    def record(
        self,
        span: Span,
        *,
        operation: str | None,
        provider: str | None,
        request_model: str | None,
        response_model: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        cost_usd: float | None = None,
        ttft_s: float | None = None,
        duration_s: float | None = None,
        error_type: str | None = None,
    ) -> None:
        """Record one call. Never raises."""
        try:
            if not self._first_time(span):
                return
            op = operation or ("embeddings" if output_tokens is None and input_tokens is not None else "chat")
            attrs: dict[str, str] = {semconv.GEN_AI_OPERATION_NAME: op}
            if provider:
                attrs[semconv.GEN_AI_PROVIDER_NAME] = provider
            if request_model:
                attrs[semconv.GEN_AI_REQUEST_MODEL] = request_model
            if response_model:
                attrs[semconv.GEN_AI_RESPONSE_MODEL] = response_model
            if error_type:
                attrs[semconv.ERROR_TYPE] = error_type
            if input_tokens is not None:
                self.tokens.record(int(input_tokens), {**attrs, semconv.GEN_AI_TOKEN_TYPE: "input"})
            if output_tokens is not None:
                self.tokens.record(int(output_tokens), {**attrs, semconv.GEN_AI_TOKEN_TYPE: "output"})
            if duration_s is not None and duration_s >= 0:
                self.duration.record(float(duration_s), attrs)
            if ttft_s is not None and ttft_s >= 0:
                self.ttfc.record(float(ttft_s), attrs)
            if cost_usd is not None and cost_usd >= 0:
                self.cost.add(float(cost_usd), attrs)
        except Exception:
            logger.debug("ragtrail: recording GenAI metrics failed", exc_info=True)

    def flush(self, timeout_s: float = 10.0) -> bool:
        try:
            return bool(self.provider.force_flush(int(timeout_s * 1000)))
        except Exception:
            logger.debug("ragtrail: metric flush failed", exc_info=True)
            return False

    def shutdown(self) -> None:
        try:
            self.provider.shutdown()
        except Exception:  # pragma: no cover - shutdown must never raise
            logger.debug("ragtrail: metric provider shutdown failed", exc_info=True)


def points_from_metrics_data(data: MetricsData) -> list[Any]:
    """The delta histogram and counter points of ragtrail's metrics in ``data`` as store MetricPoints."""
    from ragtrail.store._metrics import MetricPoint

    out: list[MetricPoint] = []
    for rm in data.resource_metrics:
        res_project = rm.resource.attributes.get(semconv.PROJECT) if rm.resource else None
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if not m.name.startswith(("gen_ai.", "ragtrail.")):
                    continue
                points = getattr(m.data, "data_points", ())
                for p in points:
                    attrs = dict(p.attributes or {})
                    if res_project and semconv.PROJECT not in attrs:
                        attrs[semconv.PROJECT] = res_project
                    if hasattr(p, "bucket_counts"):
                        if not p.count:
                            continue
                        out.append(MetricPoint(m.name, attrs, p.time_unix_nano, p.count, p.sum, p.min, p.max))
                    elif hasattr(p, "value"):
                        if not p.value:
                            continue
                        v = float(p.value)
                        out.append(MetricPoint(m.name, attrs, p.time_unix_nano, 1, v, v, v))
    return out


class StoreMetricExporter(MetricExporter):
    """Writes delta GenAI metric points into the store's per-minute aggregates (``metric_minutes``)."""

    def __init__(self, store: Any, project: str) -> None:
        super().__init__(preferred_temporality=dict(DELTA))
        self.store = store
        self.project = project
        self.errors = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        from ragtrail.store._metrics import write_metric_points

        try:
            with suppress_instrumentation():
                write_metric_points(self.store, points_from_metrics_data(metrics_data), self.project)
            return MetricExportResult.SUCCESS
        except Exception:
            self.errors += 1
            logger.warning("ragtrail: writing GenAI metrics to the store failed", exc_info=True)
            return MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def _otlp_metric_exporter(endpoint: str) -> MetricExporter:
    from ragtrail._deps import require
    from ragtrail.tracing._otlp import _transport

    kind, target, insecure = _transport(endpoint)
    if kind == "grpc":
        mod = require("opentelemetry.exporter.otlp.proto.grpc.metric_exporter", extra="otlp",
                      package="opentelemetry-exporter-otlp-proto-grpc")  # fmt: skip
        return mod.OTLPMetricExporter(endpoint=target, insecure=insecure, preferred_temporality=dict(DELTA))  # type: ignore[no-any-return]
    mod = require("opentelemetry.exporter.otlp.proto.http.metric_exporter", extra="otlp",
                  package="opentelemetry-exporter-otlp-proto-http")  # fmt: skip
    if target.endswith("/v1/traces"):
        target = target[: -len("/v1/traces")] + "/v1/metrics"
    return mod.OTLPMetricExporter(endpoint=target, preferred_temporality=dict(DELTA))  # type: ignore[no-any-return]


_prom_servers: dict[int, Any] = {}
_prom_lock = threading.Lock()


def _prometheus_reader(port: int) -> MetricReader:
    """A Prometheus reader, plus the scrape endpoint on ``port`` (started once per process and port)."""
    from ragtrail._deps import require

    exp = require("opentelemetry.exporter.prometheus", extra="prometheus",
                  package="opentelemetry-exporter-prometheus")  # fmt: skip
    client = require("prometheus_client", extra="prometheus", package="prometheus-client")
    with _prom_lock:
        if port not in _prom_servers:
            _prom_servers[port] = client.start_http_server(port)
    return exp.PrometheusMetricReader()  # type: ignore[no-any-return]


def validate(options: Mapping[str, Any]) -> None:
    """Check the metric options of ``init`` before anything changes. Raises ConfigError /
    MissingDependencyError (``prometheus_port`` without ``ragtrail[prometheus]``)."""
    try:
        interval_s = float(options.get("metrics_interval_s", 60.0))
    except (TypeError, ValueError):
        interval_s = 0.0
    if interval_s <= 0:
        raise ConfigError(f"ragtrail.init(metrics_interval_s={options.get('metrics_interval_s')!r}) must be > 0")
    for r in options.get("metric_readers") or ():
        if not isinstance(r, MetricReader):
            raise ConfigError(f"ragtrail.init(metric_readers=...): {r!r} is not an OpenTelemetry MetricReader")
    port = options.get("prometheus_port")
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"ragtrail.init(prometheus_port={port!r}) must be a TCP port number")
        from ragtrail._deps import require

        require("opentelemetry.exporter.prometheus", extra="prometheus", package="opentelemetry-exporter-prometheus")
        require("prometheus_client", extra="prometheus", package="prometheus-client")


def setup(project: str, store: Any, otlp_endpoint: str | None, options: Mapping[str, Any]) -> GenAIMetrics | None:
    """The GenAI metrics of an ``init`` (options checked by :func:`validate`), or None when metrics are
    off or have nowhere to go. Options: ``metrics`` (default True), ``metrics_interval_s`` (default 60),
    ``prometheus_port``, ``metric_readers`` (extra MetricReaders). Never raises."""
    if not options.get("metrics", True):
        return None
    try:
        readers: list[MetricReader] = []
        ms = int(float(options.get("metrics_interval_s", 60.0)) * 1000)
        port = options.get("prometheus_port")
        if port is not None:
            try:
                readers.append(_prometheus_reader(int(port)))
            except OSError as exc:
                logger.warning(
                    "ragtrail: no Prometheus endpoint on port %s (%s); other metric readers go on", port, exc
                )
        if store is not None:
            exp = StoreMetricExporter(store, project)
            readers.append(PeriodicExportingMetricReader(exp, export_interval_millis=ms))
        if otlp_endpoint:
            exp_otlp = _otlp_metric_exporter(otlp_endpoint)
            readers.append(PeriodicExportingMetricReader(exp_otlp, export_interval_millis=ms))
        readers.extend(options.get("metric_readers") or ())
        if not readers:
            return None
        resource = Resource.create({"service.name": project, semconv.PROJECT: project})
        # no exit hook of its own: ragtrail's exit flush exports the last points
        provider = MeterProvider(
            metric_readers=readers, resource=resource, views=bucket_views(), shutdown_on_exit=False
        )
        return GenAIMetrics(provider)
    except Exception:
        logger.warning("ragtrail: GenAI metrics are off: their setup failed", exc_info=True)
        return None


def now_minus(start_ns: int | None) -> float | None:
    """Seconds since ``start_ns`` (epoch nanoseconds), or None."""
    if not start_ns:
        return None
    return max(0.0, (time.time_ns() - int(start_ns)) / 1e9)
