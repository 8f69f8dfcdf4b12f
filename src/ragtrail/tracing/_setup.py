"""``ragtrail.init()``: wiring the OpenTelemetry SDK to the store (and optionally OTLP).

Only this module touches the SDK. Before :func:`init`, every helper is a no-op. ``init`` either
creates a TracerProvider (and sets it as the global one) or, when the application already set an SDK
provider, adds ragtrail's processor to it. The processor is added once per provider; calling ``init``
again warns and swaps what it feeds instead of stacking processors.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from ragtrail._exceptions import ConfigError, RagtrailWarning
from ragtrail._log import logger
from ragtrail.tracing import _background, _content, _sampling
from ragtrail.tracing._batch import CountedBatchProcessor
from ragtrail.tracing._content import DEFAULT_MAX_BYTES, MaskHook
from ragtrail.tracing._context import apply_context, set_defaults

if TYPE_CHECKING:
    from ragtrail.store import Store
    from ragtrail.tracing._exporter import StoreSpanExporter

_TRACER_NAME = "ragtrail"
# Spans per store transaction. Big batches matter for SQLite: trace ids are random, so every batch
# touches index pages all over the file; 8,192 spans per commit cost ~35% less CPU than 2,048.
DEFAULT_EXPORT_BATCH = 8_192


@dataclass
class Config:
    """What :func:`init` configured. Read by span helpers and connectors on every span."""

    project: str
    capture_content: bool = True
    max_attribute_bytes: int = DEFAULT_MAX_BYTES
    mask: MaskHook | None = None
    mask_secrets: bool = True
    tracer: otel_trace.Tracer = field(default_factory=lambda: otel_trace.NoOpTracer())
    provider: TracerProvider | None = None
    store: Store | None = None
    store_exporter: StoreSpanExporter | None = None
    processors: list[SpanProcessor] = field(default_factory=list)
    prices: Any = None  # ragtrail.tracing._usage.PriceTable, set lazily
    gpu_prices: dict[str, float] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    flushed_counts: dict[str, int] = field(default_factory=dict)
    sampling: Any = None  # ragtrail.tracing._sampling.SamplingConfig
    error_keeper: Any = None  # ragtrail.tracing._sampling.ErrorKeeper, when unsampled traces are recorded
    metrics: Any = None  # ragtrail.tracing._metrics.GenAIMetrics, when metrics have somewhere to go
    # the store is the only place spans go (ragtrail's own provider, no OTLP or extra exporter, no mask hook)
    store_only: bool = False

    def masked_in_writer(self) -> bool:
        """True when content may be recorded unscanned because the writer process masks it: the store is
        the only consumer, its writer process is running, and no eval harness is reading spans in-process."""
        exp = self.store_exporter
        if not self.store_only or exp is None:
            return False
        w = exp.writer
        return w is not None and w.ready and not _content.collector_watching()


_config: Config | None = None
_lock = threading.Lock()
_hooks_registered = False


def get_config() -> Config | None:
    """The active configuration, or ``None`` before :func:`init`."""
    return _config


class _Switch(SpanProcessor):
    """The one processor ragtrail adds to a provider; what it feeds can be swapped by a later init()."""

    def __init__(self) -> None:
        self._targets: tuple[SpanProcessor, ...] = ()
        self._starts: tuple[SpanProcessor, ...] = ()

    @property
    def targets(self) -> tuple[SpanProcessor, ...]:
        return self._targets

    @targets.setter
    def targets(self, value: tuple[SpanProcessor, ...]) -> None:
        self._targets = tuple(value)
        # the batch processors do nothing on start: skip the call on the hot path
        self._starts = tuple(p for p in self._targets if not isinstance(p, (CountedBatchProcessor, BatchSpanProcessor)))

    @property
    def dropped(self) -> int:
        """Spans the batch processors fed by this switch dropped (queue full), counted by them."""
        return sum(p.dropped for p in self._targets if isinstance(p, CountedBatchProcessor))

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        try:
            apply_context(span, parent_context)  # ragtrail.context(): session, user, tags, metadata
        except Exception:  # pragma: no cover - never raise into the traced code
            logger.debug("ragtrail: could not apply the context to a span", exc_info=True)
        for p in self._starts:
            p.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        for p in self._targets:
            try:
                p.on_end(span)
            except Exception:  # a processor must never raise into the traced code
                logger.debug("ragtrail: a span processor failed in on_end", exc_info=True)

    def shutdown(self) -> None:
        _background.drain_all()  # the app shut its provider down: queued spans go out first
        for p in self._targets:
            p.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        _background.drain_all()  # spans still being built off-thread belong to this flush
        ok = True
        for p in self._targets:
            ok = p.force_flush(timeout_millis) and ok
        return ok


_SWITCH_ATTR = "_ragtrail_switch"
_OWNED_ATTR = "_ragtrail_created"  # set on a provider ragtrail created (its processor is the first one)


def _switch_of(provider: Any) -> _Switch | None:
    """The switch ragtrail added to ``provider`` (kept on the provider itself: an id() could be reused)."""
    sw = getattr(provider, _SWITCH_ATTR, None) if provider is not None else None
    return sw if isinstance(sw, _Switch) else None


def init(
    project: str = "default",
    store: str | os.PathLike[str] | Store | None = None,
    capture_content: bool = True,
    otlp_endpoint: str | None = None,
    openinference: bool = False,
    **options: Any,
) -> Config:
    """Start tracing into the store (and optionally an OTLP endpoint). Returns the active config.

    Args:
        project: name every span of this process is filed under.
        store: a SQLite path, a ``sqlite:///path`` or ``postgresql://`` URL, or a :class:`Store`.
            Default: ``$RAGTRAIL_STORE``, else ``$RAGTRAIL_HOME/ragtrail.db`` (``~/.ragtrail``).
        capture_content: record inputs/outputs/messages/documents. Tokens, cost and latency are
            recorded either way.
        otlp_endpoint: also export to this OTLP endpoint (``http://host:4318`` → HTTP,
            ``grpc://host:4317`` or a ``:4317`` port → gRPC).
        openinference: translate attributes to OpenInference names on the OTLP exporter (Phoenix).
        options: ``max_attribute_bytes`` (default 32 KiB), ``mask`` (callable str → str),
            ``mask_secrets`` (default True), ``prices`` (path or dict of model prices),
            ``gpu_prices`` ($/GPU-hour by GPU type), ``max_queue_size`` (default 65,536),
            ``max_export_batch_size`` (default 8,192), ``schedule_delay_ms`` (default 500),
            ``exporters`` (extra SpanExporters), ``tracer_provider`` (use this provider),
            ``store_exporter`` (False to skip the store, e.g. OTLP only), ``session_id``, ``user_id``,
            ``tags``, ``metadata`` (defaults under every ``ragtrail.context()``), ``sample_rate`` (0.0–1.0 or
            ``{project: rate}``; default ``$RAGTRAIL_SAMPLE_RATE`` else 1.0), ``sample_rules`` (root span
            name glob → rate), ``keep_errors`` (default True), ``metrics`` (GenAI metrics for every
            call, default True), ``metrics_interval_s`` (default 60), ``prometheus_port``, ``otlp_metrics``
            (send them to ``otlp_endpoint``'s ``/v1/metrics``; default True, False with ``openinference=True``:
            Phoenix has no metrics endpoint),
            ``metric_readers`` — see docs/production-scale.md; ``spool_dir`` (where spans
            wait while the store is unavailable; default ``$RAGTRAIL_SPOOL_DIR`` or
            ``~/.cache/ragtrail/spool``), ``spool_max_bytes`` (default 512 MiB; 0 turns the spool off), ``writer``
            (``"auto"``, the default or ``$RAGTRAIL_WRITER``: store writes move into a child process that
            ragtrail starts and supervises, off the app's GIL, once the load calls for it; ``"thread"``:
            always in-process; ``"process"``: always in the child; see docs/busy-apps.md).

    Raises:
        ConfigError: a bad option; StoreError: the store cannot be opened (the message says why).
    """
    global _config
    from ragtrail.store import Store as _Store
    from ragtrail.store import open_store, resolve_store_url
    from ragtrail.tracing._exporter import StoreSpanExporter
    from ragtrail.tracing._spool import make_spool
    from ragtrail.tracing._usage import load_prices
    from ragtrail.tracing._writer import make_writer

    known = {
        "max_attribute_bytes", "mask", "mask_secrets", "prices", "gpu_prices", "max_queue_size",
        "max_export_batch_size", "schedule_delay_ms", "exporters", "tracer_provider", "store_exporter",
        "session_id", "user_id", "tags", "metadata",
        "sample_rate", "sample_rules", "keep_errors", "metrics", "metrics_interval_s", "prometheus_port",
        "metric_readers", "otlp_metrics", "spool_dir", "spool_max_bytes", "writer",
    }  # fmt: skip
    unknown = set(options) - known
    if unknown:
        raise ConfigError(f"ragtrail.init() got unknown option(s) {sorted(unknown)}; valid options: {sorted(known)}")
    if not isinstance(project, str) or not project:
        raise ConfigError("ragtrail.init(project=...) must be a non-empty string")
    mask = options.get("mask")
    if mask is not None and not callable(mask):
        raise ConfigError("ragtrail.init(mask=...) must be a callable taking and returning a str")
    max_bytes = int(options.get("max_attribute_bytes", DEFAULT_MAX_BYTES))
    if max_bytes < 64:
        raise ConfigError("ragtrail.init(max_attribute_bytes=...) must be at least 64")

    extra_exporters = list(options.get("exporters") or ())
    for exp in extra_exporters:
        if not isinstance(exp, SpanExporter):
            raise ConfigError(f"ragtrail.init(exporters=...): {exp!r} is not an OpenTelemetry SpanExporter")
    gpu_prices = options.get("gpu_prices") or {}
    if not isinstance(gpu_prices, Mapping):
        raise ConfigError("ragtrail.init(gpu_prices=...) must map GPU types to $/GPU-hour, e.g. {'H100': 2.5}")
    for gpu, price in gpu_prices.items():
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not price >= 0 or price == float("inf"):
            raise ConfigError(
                f"ragtrail.init(gpu_prices=...): the price of {gpu!r} is {price!r}; give $/GPU-hour as a number >= 0"
            )
    bsp_kwargs = _batch_options(options)
    prices = load_prices(options.get("prices"))  # a bad price file fails here, before anything changes
    set_defaults(**{k: options.get(k) for k in ("session_id", "user_id", "tags", "metadata")})  # checked here too
    sampling = _sampling.sampling_from_options(project, options)
    from ragtrail.tracing import _metrics

    _metrics.validate(options)

    with _lock:
        # open the new store first: if it cannot be opened, the running configuration stays as it was
        store_obj: _Store | None = None
        if options.get("store_exporter", True):
            store_obj = store if isinstance(store, _Store) else open_store(resolve_store_url(store))  # type: ignore[arg-type]
        if _config is not None:
            warnings.warn(
                "ragtrail.init() called again: the previous configuration is flushed and replaced "
                "(no second processor is added).",
                RagtrailWarning,
                stacklevel=2,
            )
            old_store = _config.store
            if old_store is store_obj:
                _config.store = None  # the same store object carries on: do not close it
            _shutdown_locked()

        processors: list[SpanProcessor] = []
        store_exporter: StoreSpanExporter | None = None
        if store_obj is not None:
            store_exporter = StoreSpanExporter(
                store_obj,
                project=project,
                mask_secrets=bool(options.get("mask_secrets", True)),
                spool=make_spool(store_obj, options),
                writer=make_writer(store_obj, project, options),
            )
            store_bsp = CountedBatchProcessor(store_exporter, **bsp_kwargs)
            if store_exporter.writer is not None and store_exporter.writer.auto:
                store_bsp.pulse = store_exporter.writer.pulse  # writer="auto" starts its child on a high rate
            processors.append(store_bsp)
        if otlp_endpoint:
            from ragtrail.tracing._otlp import make_otlp_exporter

            processors.append(
                CountedBatchProcessor(
                    make_otlp_exporter(otlp_endpoint, openinference=openinference, project=project), **bsp_kwargs
                )
            )
        for exp in extra_exporters:
            processors.append(CountedBatchProcessor(exp, **bsp_kwargs))

        provider = options.get("tracer_provider")
        if provider is None:
            current = otel_trace.get_tracer_provider()
            if isinstance(current, TracerProvider):
                provider = current  # the app's own provider: add to it, never replace it
            else:
                provider = TracerProvider(
                    resource=Resource.create({"service.name": project}),
                    sampler=_sampling.RagtrailSampler(sampling),
                    id_generator=_background.PresetIdGenerator(),
                )
                setattr(provider, _OWNED_ATTR, True)
                otel_trace.set_tracer_provider(provider)
                if otel_trace.get_tracer_provider() is not provider:  # someone else won the race
                    provider = otel_trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            raise ConfigError("ragtrail needs an OpenTelemetry SDK TracerProvider (opentelemetry-sdk)")
        switch = _switch_of(provider)
        if switch is None:
            switch = _Switch()
            setattr(provider, _SWITCH_ATTR, switch)
            provider.add_span_processor(switch)
        keeper = _sampling.apply(provider, sampling, processors)
        otlp_metrics = options.get("otlp_metrics", not openinference)
        metrics = _metrics.setup(project, store_obj, otlp_endpoint if otlp_metrics else None, options)
        switch.targets = (*processors, keeper) if keeper is not None else tuple(processors)
        tracer = provider.get_tracer(_TRACER_NAME)
        if getattr(provider, _OWNED_ATTR, False):
            # background spans only on ragtrail's own provider, with a sampler that keeps every trace
            # (see ragtrail.tracing._background); otherwise spans are built the ordinary way
            _background.enable(tracer)

        _config = Config(
            project=project,
            capture_content=bool(capture_content),
            max_attribute_bytes=max_bytes,
            mask=mask,
            mask_secrets=bool(options.get("mask_secrets", True)),
            tracer=tracer,
            provider=provider,
            store=store_obj,
            store_exporter=store_exporter,
            processors=processors,
            prices=prices,
            gpu_prices=dict(options.get("gpu_prices") or {}),
            options=dict(options),
            sampling=sampling,
            error_keeper=keeper,
            metrics=metrics,
            store_only=(
                store_exporter is not None
                and not otlp_endpoint
                and not extra_exporters
                and mask is None
                and bool(getattr(provider, _OWNED_ATTR, False))
            ),
        )
        _content.use_config(_config)  # the masking step reads its settings from here (pushed, not pulled)
        _register_hooks()
        return _config


def _batch_options(options: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, sdk_key, default in (
        ("max_queue_size", "max_queue_size", 65_536),
        ("max_export_batch_size", "max_export_batch_size", DEFAULT_EXPORT_BATCH),
        ("schedule_delay_ms", "schedule_delay_millis", 500),
    ):
        raw = options.get(key, default)
        try:
            value = int(raw)
        except (TypeError, ValueError):
            value = 0
        if value <= 0:
            raise ConfigError(f"ragtrail.init({key}={raw!r}) must be a positive integer (default {default})")
        out[sdk_key] = value
    # a batch can never be larger than the queue it is taken from
    out["max_export_batch_size"] = min(out["max_export_batch_size"], out["max_queue_size"])
    return out


def _shutdown_locked() -> None:
    global _config
    cfg = _config
    if cfg is None:
        return
    _config = None
    _content.use_config(None)
    _background.stop_for(cfg.tracer)  # queued background spans go out before the processors stop
    if cfg.metrics is not None:
        cfg.metrics.shutdown()  # the last metric points go to the store before it closes
    if cfg.provider is not None:
        sw = _switch_of(cfg.provider)
        if sw is not None:
            sw.targets = ()
    for p in cfg.processors:
        try:
            p.shutdown()
        except Exception:  # pragma: no cover - shutdown must never raise
            logger.debug("processor shutdown failed", exc_info=True)
    if cfg.store is not None:
        try:
            cfg.store.close()
        except Exception:  # pragma: no cover
            logger.debug("store close failed", exc_info=True)


def shutdown() -> None:
    """Flush and stop tracing; helpers become no-ops again. Safe to call twice."""
    with _lock:
        _shutdown_locked()


def flush(timeout_s: float = 10.0) -> bool:
    """Write every ended span out; returns True when all spans ended since the previous flush (or
    init) were written within ``timeout_s``.

    False means some spans were dropped (queue full), failed to export (store unavailable after its
    retries) or the timeout passed. ``ragtrail.stats()`` has the counts. Never raises.
    """
    cfg = _config
    if cfg is None:
        return True
    ok = True
    deadline = time.monotonic() + max(0.0, timeout_s)
    try:
        _background.drain_all()
        for p in cfg.processors:
            left_ms = max(1, int((deadline - time.monotonic()) * 1000))
            try:
                ok = bool(p.force_flush(left_ms)) and ok
            except Exception:
                ok = False
        if cfg.metrics is not None:
            ok = cfg.metrics.flush(max(0.001, deadline - time.monotonic())) and ok
        exp = cfg.store_exporter
        if exp is not None and (exp.spool is not None or exp.writer is not None):  # spooled spans are unwritten
            ok = exp.force_flush(max(1, int((deadline - time.monotonic()) * 1000))) and ok
        if time.monotonic() > deadline:
            ok = False
        now = stats()
        seen = cfg.flushed_counts
        cfg.flushed_counts = now
        if now["failed"] != seen.get("failed", 0) or now["dropped"] != seen.get("dropped", 0):
            ok = False
    except Exception:  # pragma: no cover - flush must never raise
        logger.debug("ragtrail: flush failed", exc_info=True)
        return False
    return ok


def stats() -> dict[str, int]:
    """Counts since :func:`init`: spans ``exported`` to the store, ``dropped`` (queue full, or the
    spool's size cap), ``failed`` (store errors after retries with no spool, or connector spans that
    could not be built off-thread), ``export_errors`` (failed store writes), ``spooled`` (waiting in
    the spool for the store to come back), ``repaired`` (stored with unstorable columns emptied),
    ``reduced`` (stored as ids, name and times only), ``rejected`` (refused by the store even so) and
    ``rejected.<reason>`` per reason."""
    cfg = _config
    if cfg is None:
        return {"exported": 0, "dropped": 0, "failed": 0, "export_errors": 0, "spooled": 0}
    sw = _switch_of(cfg.provider)
    exp = cfg.store_exporter
    out = {
        "exported": exp.exported if exp else 0,
        "dropped": (sw.dropped if sw else 0) + (exp.spool_dropped if exp else 0),
        "spooled": exp.spooled if exp else 0,
        "failed": (exp.failed if exp else 0) + _background.failures_for(cfg.tracer),
        "export_errors": exp.errors if exp else 0,
    }
    if cfg.store is not None:  # spans stored with columns emptied / in reduced form / refused, by reason
        out.update(cfg.store.span_stats())
        w = exp.writer if exp is not None else None
        for k, v in (w.store_counts if w is not None else {}).items():  # the same, by the writer process
            out[k] = out.get(k, 0) + v
    return out


def _register_hooks() -> None:
    global _hooks_registered
    if not _hooks_registered:
        _hooks_registered = True
        atexit.register(_atexit_flush)
    _register_ipython()


_ipython_shells: set[int] = set()


def _post_cell_flush(*_args: Any, **_kwargs: Any) -> None:
    """Jupyter/IPython ``post_run_cell`` hook: the spans of the cell reach the store before the next one."""
    try:
        flush(5.0)
    except Exception:  # pragma: no cover - flush never raises, but a hook must not break the kernel
        pass


def _register_ipython() -> None:
    """Register the post-cell flush on the running IPython shell (once per shell); a no-op elsewhere."""
    import sys

    ipy_mod = sys.modules.get("IPython")
    if ipy_mod is None:
        return
    try:
        ip = ipy_mod.get_ipython()  # type: ignore[attr-defined]
        if ip is None or id(ip) in _ipython_shells:
            return
        ip.events.register("post_run_cell", _post_cell_flush)
        _ipython_shells.add(id(ip))
    except Exception:  # pragma: no cover - an old or unusual IPython
        logger.debug("could not register the Jupyter post-cell flush", exc_info=True)


def _atexit_flush() -> None:
    try:
        flush(5.0)
    except Exception:  # pragma: no cover
        pass


def set_prices(prices: str | os.PathLike[str] | Mapping[str, Any] | None) -> None:
    """Replace the price table overrides of the running configuration."""
    from ragtrail.tracing._usage import load_prices

    if _config is not None:
        _config.prices = load_prices(prices)
