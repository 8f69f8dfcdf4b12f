"""Sampling of whole traces: the SDK's parent-based trace-id-ratio sampler, plus ragtrail's rules.

What is kept, and when the decision is made
-------------------------------------------
* **At the root span's start** (a span with no parent, or whose parent came from another process):
  1. a root carrying ``ragtrail.eval.run_id`` (every example the eval harness runs) is always kept;
  2. else the first ``rules`` entry whose glob matches the root span's name gives the rate;
  3. else the rate of this process's project (``sample_rate`` may be a ``{project: rate}`` mapping,
     ``"*"`` the default), else ``sample_rate``.
  The rate is applied by the SDK's :class:`TraceIdRatioBased` on the trace id, so every process that
  sees the same trace id with the same rate decides alike.
* **Children** follow their parent (:class:`ParentBased`): the decision travels in ``traceparent``'s
  sampled flag, so a trace is kept or dropped whole across processes.
* **Errors** (``keep_errors=True``): a root that the ratio drops is still *recorded* (``RECORD_ONLY``)
  and so are its local children; :class:`ErrorKeeper` buffers their ended spans per trace, bounded,
  and when the local root ends it exports the whole buffer if any span of the trace had ERROR status,
  else discards it. Spans of that trace that end *after* the root, and traces whose buffer overflowed
  ``max_spans_per_trace`` (or more than ``max_traces`` open at once) are not kept. A trace dropped by
  another process (``traceparent`` sampled flag off) is dropped here too, errors included: the
  decision stays whole across processes. Recording costs what a full span costs minus the export; with
  ``keep_errors=False`` a dropped trace's spans are non-recording and cost close to nothing.

Nothing here replaces an application's provider: :func:`make_sampler` gives a sampler to pass to
``TracerProvider(sampler=...)``; ``ragtrail.init`` does that for the provider it creates and
reconfigures a ragtrail sampler already on a provider.
"""

from __future__ import annotations

import fnmatch
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, StatusCode, TraceFlags
from opentelemetry.util.types import Attributes

from ragtrail import semconv
from ragtrail._exceptions import ConfigError
from ragtrail._log import logger
from ragtrail.tracing._readable import replace_span

__all__ = ["ErrorKeeper", "RagtrailSampler", "SamplingConfig", "apply", "make_sampler", "sampling_from_options"]

_ENV_RATE = "RAGTRAIL_SAMPLE_RATE"


def _rate(value: Any, where: str) -> float:
    try:
        r = float(value)
    except (TypeError, ValueError):
        r = -1.0
    if not 0.0 <= r <= 1.0:
        raise ConfigError(f"{where}={value!r}: a sample rate is a number from 0.0 (keep none) to 1.0 (keep all)")
    return r


class SamplingConfig:
    """The resolved sampling settings of one ``init`` (rates validated)."""

    __slots__ = ("keep_errors", "max_spans_per_trace", "max_traces", "rate", "rules")

    def __init__(
        self,
        rate: float = 1.0,
        rules: Sequence[tuple[str, float]] = (),
        keep_errors: bool = True,
        max_spans_per_trace: int = 1_000,
        max_traces: int = 10_000,
    ) -> None:
        self.rate = rate
        self.rules = tuple(rules)
        self.keep_errors = keep_errors
        self.max_spans_per_trace = max_spans_per_trace
        self.max_traces = max_traces

    @property
    def samples_all(self) -> bool:
        return self.rate >= 1.0 and all(r >= 1.0 for _, r in self.rules)


def sampling_from_options(project: str, options: Mapping[str, Any]) -> SamplingConfig:
    """``init``'s ``sample_rate`` / ``sample_rules`` / ``keep_errors`` options (``$RAGTRAIL_SAMPLE_RATE``
    when ``sample_rate`` is not given) as a :class:`SamplingConfig`. Raises ConfigError."""
    raw = options.get("sample_rate")
    where = "ragtrail.init(sample_rate)"
    if raw is None and os.environ.get(_ENV_RATE):
        raw, where = os.environ[_ENV_RATE], f"${_ENV_RATE}"
    if raw is None:
        rate = 1.0
    elif isinstance(raw, Mapping):
        chosen = raw.get(project, raw.get("*", 1.0))
        rate = _rate(chosen, f"{where}[{project!r}]")
        for k, v in raw.items():
            _rate(v, f"{where}[{k!r}]")
    else:
        rate = _rate(raw, where)
    rules_raw = options.get("sample_rules") or {}
    if not isinstance(rules_raw, Mapping):
        raise ConfigError(
            "ragtrail.init(sample_rules=...) must map a root span name glob to a rate, e.g. {'chat *': 0.5}"
        )
    rules = [(str(k), _rate(v, f"ragtrail.init(sample_rules)[{k!r}]")) for k, v in rules_raw.items()]
    keep_errors = bool(options.get("keep_errors", True))
    return SamplingConfig(rate, rules, keep_errors)


class _Root(Sampler):
    """The decision for a local root: eval runs kept, then name rules, then the ratio."""

    def __init__(self, cfg: SamplingConfig) -> None:
        self._cfg = cfg
        self._default = TraceIdRatioBased(cfg.rate)
        self._rules = [(pattern, TraceIdRatioBased(r)) for pattern, r in cfg.rules]
        self._unsampled = Decision.RECORD_ONLY if cfg.keep_errors else Decision.DROP

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if attributes and semconv.EVAL_RUN_ID in attributes:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        ratio = self._default
        for pattern, r in self._rules:
            if fnmatch.fnmatchcase(name, pattern):
                ratio = r
                break
        res = ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)
        if res.decision is Decision.DROP and self._unsampled is Decision.RECORD_ONLY:
            return SamplingResult(Decision.RECORD_ONLY, attributes, res.trace_state)
        return res

    def get_description(self) -> str:
        rules = ",".join(f"{p}={s.rate}" for p, s in self._rules)
        return f"RagtrailRoot{{rate={self._cfg.rate},rules=[{rules}],keep_errors={self._cfg.keep_errors}}}"


class _RecordIfParentRecords(Sampler):
    """A child of an unsampled local parent: recorded (for the error rule) when the parent is."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if otel_trace.get_current_span(parent_context).is_recording():
            return SamplingResult(Decision.RECORD_ONLY, attributes)
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "RecordIfParentRecords"


def _build(cfg: SamplingConfig) -> Sampler:
    if cfg.samples_all:
        return ParentBased(ALWAYS_ON)  # exactly the SDK's default
    return ParentBased(
        _Root(cfg),
        local_parent_not_sampled=_RecordIfParentRecords() if cfg.keep_errors else ALWAYS_OFF,
    )


class RagtrailSampler(Sampler):
    """A parent-based sampler whose settings a later ``ragtrail.init()`` can change.

    Describes itself as the sampler it delegates to; with a rate of 1.0 that is the SDK's default
    ``ParentBased(ALWAYS_ON)``, so it behaves, and reads, exactly like the default.
    """

    def __init__(self, cfg: SamplingConfig | None = None) -> None:
        self.configure(cfg or SamplingConfig())

    def configure(self, cfg: SamplingConfig) -> None:
        self.config = cfg
        self._delegate = _build(cfg)

    @property
    def samples_all(self) -> bool:
        """Whether every trace is kept (then it decides exactly as the SDK's default sampler)."""
        return self.config.samples_all

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        return self._delegate.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return self._delegate.get_description()


def make_sampler(
    sample_rate: float | Mapping[str, float] = 1.0,
    *,
    project: str = "default",
    sample_rules: Mapping[str, float] | None = None,
    keep_errors: bool = True,
) -> RagtrailSampler:
    """A sampler for ``TracerProvider(sampler=...)`` when the application builds its own provider.

    ``ragtrail.init(sample_rate=...)`` later reconfigures it. Raises ConfigError for a bad rate.
    """
    opts = {"sample_rate": sample_rate, "sample_rules": sample_rules, "keep_errors": keep_errors}
    return RagtrailSampler(sampling_from_options(project, opts))


# ----------------------------------------------------------------------------------- error keeper
class _Buffer:
    __slots__ = ("error", "overflow", "spans")

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []
        self.error = False
        self.overflow = False


def _as_sampled(span: ReadableSpan) -> ReadableSpan:
    """The same span with the sampled flag set, so the stock BatchSpanProcessor exports it."""
    sc = span.context
    ctx = otel_trace.SpanContext(
        sc.trace_id, sc.span_id, sc.is_remote, TraceFlags(sc.trace_flags | TraceFlags.SAMPLED), sc.trace_state
    )
    return replace_span(span, context=ctx)


class ErrorKeeper(SpanProcessor):
    """Keeps recorded-but-unsampled traces that contain an error (see the module docstring).

    Sampled spans pass by untouched (the export processors handle them). Unsampled recording spans are
    buffered per trace; when the trace's local root ends, the buffer is sent to ``targets`` (as sampled
    spans) if any span had ERROR status, else dropped. Counts: ``kept_traces``, ``discarded_traces``,
    ``overflowed_traces``.
    """

    def __init__(self, targets: Sequence[SpanProcessor], cfg: SamplingConfig) -> None:
        self.targets = tuple(targets)
        self.max_spans = cfg.max_spans_per_trace
        self.max_traces = cfg.max_traces
        self._buffers: OrderedDict[int, _Buffer] = OrderedDict()
        self._lock = threading.Lock()
        self.kept_traces = 0
        self.discarded_traces = 0
        self.overflowed_traces = 0

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        sc = span.context
        if sc is None or sc.trace_flags.sampled:
            return
        try:
            self._on_unsampled_end(span)
        except Exception:  # never raise into the traced code
            logger.debug("ragtrail: the error keeper failed", exc_info=True)

    def _on_unsampled_end(self, span: ReadableSpan) -> None:
        tid = span.context.trace_id  # type: ignore[union-attr]
        parent = span.parent
        is_root = parent is None or parent.is_remote
        with self._lock:
            buf = self._buffers.get(tid)
            if buf is None:
                if is_root and span.status.status_code is not StatusCode.ERROR:
                    self.discarded_traces += 1  # a lone root without error: nothing to buffer
                    return
                buf = _Buffer()
                self._buffers[tid] = buf
                while len(self._buffers) > self.max_traces:
                    _, old = self._buffers.popitem(last=False)
                    old.spans.clear()
                    self.overflowed_traces += 1
            if span.status.status_code is StatusCode.ERROR:
                buf.error = True
            if len(buf.spans) < self.max_spans:
                buf.spans.append(span)
            elif not buf.overflow:
                buf.overflow = True
            if not is_root:
                return
            del self._buffers[tid]
        if buf.overflow:
            self.overflowed_traces += 1
            return
        if not buf.error:
            self.discarded_traces += 1
            return
        self.kept_traces += 1
        for s in buf.spans:
            out = _as_sampled(s)
            for p in self.targets:
                try:
                    p.on_end(out)
                except Exception:
                    logger.debug("ragtrail: a span processor failed in on_end", exc_info=True)

    @property
    def open_traces(self) -> int:
        return len(self._buffers)

    def shutdown(self) -> None:
        with self._lock:
            self._buffers.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def apply(provider: Any, cfg: SamplingConfig, processors: Sequence[SpanProcessor]) -> ErrorKeeper | None:
    """Put ``cfg`` into effect on ``provider``; returns the :class:`ErrorKeeper` to add beside
    ``processors`` (None when nothing is recorded unsampled).

    A provider built with a :class:`RagtrailSampler` (ragtrail's own, or the app's through
    :func:`make_sampler`) is reconfigured. Any other sampler is left alone, with a warning when
    sampling was asked for: ragtrail never replaces an application's sampler.
    """
    import warnings

    from ragtrail._exceptions import RagtrailWarning

    sampler = getattr(provider, "sampler", None)
    if isinstance(sampler, RagtrailSampler):
        sampler.configure(cfg)
    elif not cfg.samples_all:
        warnings.warn(
            "ragtrail.init(sample_rate=...): the tracer provider was created by the application with its own "
            f"sampler ({type(sampler).__name__}), which ragtrail does not replace; build the provider with "
            "TracerProvider(sampler=ragtrail.tracing.make_sampler(...)) to sample with ragtrail's rules.",
            RagtrailWarning,
            stacklevel=3,
        )
        return None
    if cfg.samples_all or not cfg.keep_errors:
        return None
    return ErrorKeeper(processors, cfg)
