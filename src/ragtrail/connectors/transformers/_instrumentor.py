"""HF transformers connector: ``generate()`` → LLM span; text-generation pipelines → CHAIN span around it.

What an LLM span carries: input and output tokens (source ``tokenizer_estimate`` is never needed: the
counts are the model's own token ids), finish reasons (``stop`` at EOS, else ``length``), sampling
parameters, the model name and device, time to first token, GPU figures (type, utilisation, memory,
torch peak memory) and a cost from device time (``$/GPU-hour × GPUs × seconds``, ``cpu`` price row on
a CPU).

Hot-path cost: TTFT comes from one extra stopping criterion whose only work after the first step is an
attribute check (on CUDA the first token's time is a CUDA event, so no synchronisation is added). GPU
memory and utilisation are read at the span's start and end or by the background sampler
(:mod:`ragtrail.tracing._gpu`). Token counting runs once, after ``generate`` returns, with one
device-to-host transfer.
"""

from __future__ import annotations

import contextvars
import time
from typing import Any, ClassVar

from opentelemetry.trace import Span

from ragtrail import semconv
from ragtrail._log import logger
from ragtrail.connectors._common import FailureCounter, RagtrailInstrumentor, module_functions
from ragtrail.connectors.transformers import _extract as ex
from ragtrail.tracing import (
    capture_content,
    is_enabled,
    model_display_name,
    record_messages,
    record_usage,
    set_content,
    span,
)
from ragtrail.tracing import gpu as _gpu

_GEN_MODULE = "transformers.generation.utils"
_PIPE_MODULE = "transformers.pipelines.text_generation"

_in_generate: contextvars.ContextVar[bool] = contextvars.ContextVar("ragtrail_hf_in_generate", default=False)
_pipeline_tokenizer: contextvars.ContextVar[Any] = contextvars.ContextVar("ragtrail_hf_pipe_tok", default=None)
_options: dict[str, Any] = {"reset_peak_memory": True}

_counter = FailureCounter("transformers", "the transformers connector")
failures = _counter.count
_failed = _counter.failed


_criterion_cls: Any = None


def _first_token_criterion() -> Any:
    """A StoppingCriteria subclass (built lazily: transformers is imported only by instrument())."""
    global _criterion_cls
    if _criterion_cls is not None:
        return _criterion_cls
    from transformers import StoppingCriteria

    class _FirstTokenTime(StoppingCriteria):  # type: ignore[misc]
        """Never stops anything; notes when the first new token exists (perf_counter, or a CUDA event)."""

        def __init__(self, cuda_module: Any) -> None:
            self.t: float | None = None
            self.event: Any = None
            self._cuda = cuda_module
            self._false: Any = None

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            if self.t is None:
                self.t = time.perf_counter()
                if self._cuda is not None and input_ids.is_cuda:
                    try:
                        self.event = self._cuda.Event(enable_timing=True)
                        self.event.record()
                    except Exception:
                        self.event = None
            f = self._false
            if f is None or f.shape[0] != input_ids.shape[0] or f.device != input_ids.device:
                import torch

                f = self._false = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            return f

    _criterion_cls = _FirstTokenTime
    return _criterion_cls


def _with_criterion(kwargs: dict[str, Any], criterion: Any) -> dict[str, Any]:
    from transformers import StoppingCriteriaList

    user = kwargs.get("stopping_criteria")
    merged = StoppingCriteriaList(list(user) if user is not None else [])
    merged.append(criterion)
    new = dict(kwargs)
    new["stopping_criteria"] = merged
    return new


def _cuda_if_initialised() -> Any:
    import sys

    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            return torch.cuda
    except Exception:
        return None
    return None


def _generate_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not is_enabled() or _in_generate.get():
        return wrapped(*args, **kwargs)
    try:
        name = ex.model_name(instance)
        attrs: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: "text_completion",
            semconv.GEN_AI_PROVIDER_NAME: "huggingface",
            semconv.GEN_AI_REQUEST_MODEL: name,
        }
        attrs.update(ex.request_attributes(instance, kwargs))
        device = ex.device_of(instance)
        attrs[semconv.DEVICE] = (
            str(device) if not isinstance(device, dict) else ",".join(sorted({str(d) for d in device.values()}))
        )
        indices = _gpu.cuda_indices(device)
        cuda = _cuda_if_initialised() if indices else None
        criterion = _first_token_criterion()(cuda)
        call_kwargs = _with_criterion(kwargs, criterion)
    except Exception:
        _failed("the generate() call's set-up")
        return wrapped(*args, **kwargs)

    token = _in_generate.set(True)
    try:
        span_name = f"{semconv.GEN_AI_OP_TEXT_COMPLETION} {name}" if name else semconv.GEN_AI_OP_TEXT_COMPLETION
        with span(span_name, kind=semconv.LLM, attributes=attrs) as s:
            window = (
                _gpu.begin(indices, torch_memory=True, reset_peak=_options["reset_peak_memory"]) if indices else None
            )
            start_event = None
            if cuda is not None:
                try:
                    start_event = cuda.Event(enable_timing=True)
                    start_event.record()
                except Exception:
                    start_event = None
            t0 = time.perf_counter()
            try:
                output = wrapped(*args, **call_kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                gpu_attrs = window.finish(s) if window is not None else {}
            _record(s, instance, args, kwargs, output, criterion, t0, elapsed, start_event, indices, gpu_attrs)
            return output
    finally:
        _in_generate.reset(token)


def _record(
    s: Span,
    model: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    output: Any,
    criterion: Any,
    t0: float,
    elapsed: float,
    start_event: Any,
    indices: list[int] | None,
    gpu_attrs: dict[str, Any],
) -> None:
    if not s.is_recording():
        return
    try:
        counts = ex.token_counts(model, args, kwargs, output)
    except Exception:
        counts = None
        _failed("token counts")
    try:
        ttft = None
        if criterion.t is not None:
            ttft = criterion.t - t0
            if criterion.event is not None and start_event is not None:
                criterion.event.synchronize()  # long done: generate has returned
                ttft = start_event.elapsed_time(criterion.event) / 1000.0
            ttft = min(max(ttft, 0.0), elapsed)
        if indices:
            gpu_type = gpu_attrs.get(semconv.GPU_TYPE) or _gpu.device_name(indices[0])
            gpu_count: int | None = len(indices)
        else:
            dev = str(getattr(model, "device", "cpu"))
            gpu_type = "cpu" if dev.startswith("cpu") else None
            gpu_count = None
        record_usage(
            s,
            input_tokens=counts["input_tokens"] if counts else None,
            output_tokens=counts["output_tokens"] if counts else None,
            source="provider",
            ttft_s=ttft,
            gpu_seconds=elapsed * (gpu_count or 1) if gpu_type else None,
            gpu_type=gpu_type,
            gpu_count=gpu_count,
        )
        if counts:
            s.set_attribute(semconv.GEN_AI_RESPONSE_FINISH_REASONS, counts["finish_reasons"])
            model_out = getattr(getattr(model, "config", None), "_name_or_path", None)
            if isinstance(model_out, str) and model_out:
                s.set_attribute(semconv.GEN_AI_RESPONSE_MODEL, model_display_name(model_out))
    except Exception:
        _failed("usage and timing")
    if counts and capture_content():
        tok = kwargs.get("tokenizer") or _pipeline_tokenizer.get()
        if tok is not None:
            try:
                ids, _embeds, _mask = ex.prompt_inputs(args, kwargs)
                if ids is not None:
                    set_content(s, semconv.INPUT_VALUE, tok.batch_decode(ids, skip_special_tokens=True))
                texts = tok.batch_decode(counts["new_tokens"], skip_special_tokens=True)
                set_content(s, semconv.OUTPUT_VALUE, texts)
            except Exception:
                _failed("content")


def _pipeline_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if not is_enabled():
        return wrapped(*args, **kwargs)
    try:
        model = getattr(instance, "model", None)
        name = ex.model_name(model) if model is not None else "text-generation"
        attrs = {
            semconv.GEN_AI_OPERATION_NAME: "text_completion",
            semconv.GEN_AI_PROVIDER_NAME: "huggingface",
            semconv.GEN_AI_REQUEST_MODEL: name,
            semconv.DEVICE: str(getattr(instance, "device", "")),
        }
        text_inputs = args[0] if args else kwargs.get("text_inputs")
        if _is_chat(text_inputs):
            attrs[semconv.GEN_AI_OPERATION_NAME] = "chat"
    except Exception:
        _failed("the pipeline call's set-up")
        return wrapped(*args, **kwargs)
    tok_token = _pipeline_tokenizer.set(getattr(instance, "tokenizer", None))
    try:
        with span("transformers.pipeline.text-generation", kind=semconv.CHAIN, attributes=attrs) as s:
            if _is_chat(text_inputs) and isinstance(text_inputs, (list, tuple)) and isinstance(text_inputs[0], dict):
                record_messages(s, text_inputs)
            elif s.is_recording() and capture_content():
                set_content(s, semconv.INPUT_VALUE, text_inputs)
            result = wrapped(*args, **kwargs)
            if s.is_recording() and capture_content():
                set_content(s, semconv.OUTPUT_VALUE, result)
            return result
    finally:
        _pipeline_tokenizer.reset(tok_token)


def _is_chat(value: Any) -> bool:
    if isinstance(value, (list, tuple)) and value:
        first = value[0]
        if isinstance(first, dict) and "role" in first:
            return True
        if isinstance(first, (list, tuple)) and first and isinstance(first[0], dict) and "role" in first[0]:
            return True
    return False


class TransformersInstrumentor(RagtrailInstrumentor):
    """Traces ``GenerationMixin.generate`` (every generative model) and ``TextGenerationPipeline.__call__``.

    Options of ``instrument()``:
        reset_peak_memory (bool, default True): reset torch's peak-memory counter when a GPU ``generate``
            starts, so that ``ragtrail.gpu.peak_memory_allocated_bytes`` is that call's own peak. With
            False ragtrail leaves the counter alone and records the peak only when the call raised it.
    """

    library: ClassVar[str] = "transformers"
    distribution: ClassVar[str] = "transformers"
    extra: ClassVar[str] = "transformers"
    supported: ClassVar[tuple[str, ...]] = (">=4.45", "<5.20")

    def _instrument(self, **kwargs: Any) -> None:
        import wrapt

        _options["reset_peak_memory"] = bool(kwargs.get("reset_peak_memory", True))
        wrapt.wrap_function_wrapper(_GEN_MODULE, "GenerationMixin.generate", _generate_wrapper)
        try:
            wrapt.wrap_function_wrapper(_PIPE_MODULE, "TextGenerationPipeline.__call__", _pipeline_wrapper)
        except Exception:
            logger.debug("ragtrail: TextGenerationPipeline not patched", exc_info=True)

    def _uninstrument(self, **kwargs: Any) -> None:
        import importlib

        from opentelemetry.instrumentation.utils import unwrap

        unwrap(importlib.import_module(_GEN_MODULE).GenerationMixin, "generate")
        try:
            unwrap(importlib.import_module(_PIPE_MODULE).TextGenerationPipeline, "__call__")
        except Exception:
            pass


instrument, uninstrument = module_functions(TransformersInstrumentor)
