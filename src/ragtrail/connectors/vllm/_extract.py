"""Small extractors for the vLLM connector: each reads one concern of a ``RequestOutput`` or the engine.

Clocks. vLLM stamps a request with two clocks: ``arrival_time`` is the front end's wall clock
(``time.time()``) and ``first_token_latency`` a wall-clock difference measured from it; ``queued_ts``,
``scheduled_ts``, ``first_token_ts`` and ``last_token_ts`` are the engine core's monotonic clock
(``time.monotonic()``, another process on the same host). Durations are computed within one clock only.
Wall-clock span times for the engine's monotonic stamps come from one (wall, monotonic) anchor pair taken
together when the batch span starts: ``wall = anchor_wall + (ts - anchor_mono)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ragtrail import semconv
from ragtrail.tracing import model_display_name


def _pos(x: Any) -> float | None:
    """A positive float, else None (vLLM leaves a timestamp at 0.0 when the event did not happen)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v > 0 else None


def token_counts(out: Any) -> tuple[int | None, int, int | None]:
    """(prompt tokens, completion tokens over all choices, cached prompt tokens)."""
    ids = getattr(out, "prompt_token_ids", None)
    prompt = len(ids) if ids is not None else None
    enc = getattr(out, "encoder_prompt_token_ids", None)
    if enc is not None:
        prompt = (prompt or 0) + len(enc)
    completion = sum(len(getattr(c, "token_ids", ()) or ()) for c in getattr(out, "outputs", ()) or ())
    cached = getattr(out, "num_cached_tokens", None)
    return prompt, completion, (int(cached) if isinstance(cached, int) and cached >= 0 else None)


def finish_reasons(out: Any) -> list[str]:
    return [str(c.finish_reason) for c in getattr(out, "outputs", ()) or () if getattr(c, "finish_reason", None)]


def sampling_attributes(params: Any) -> dict[str, Any]:
    """gen_ai.request.* from a SamplingParams (None-valued and disabled ones are left out)."""
    if params is None:
        return {}
    attrs: dict[str, Any] = {}
    for name, key, cast in (
        ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE, float),
        ("top_p", semconv.GEN_AI_REQUEST_TOP_P, float),
        ("max_tokens", semconv.GEN_AI_REQUEST_MAX_TOKENS, int),
        ("seed", semconv.GEN_AI_REQUEST_SEED, int),
        ("frequency_penalty", semconv.GEN_AI_REQUEST_FREQUENCY_PENALTY, float),
        ("presence_penalty", semconv.GEN_AI_REQUEST_PRESENCE_PENALTY, float),
        ("n", semconv.GEN_AI_REQUEST_N, int),
    ):
        v = getattr(params, name, None)
        if v is None:
            continue
        try:
            attrs[key] = cast(v)
        except (TypeError, ValueError):
            continue
    top_k = getattr(params, "top_k", None)
    if isinstance(top_k, int) and top_k > 0:  # vLLM uses 0 / -1 for "off"
        attrs[semconv.GEN_AI_REQUEST_TOP_K] = top_k
    stop = getattr(params, "stop", None)
    if stop:
        attrs[semconv.GEN_AI_REQUEST_STOP_SEQUENCES] = [stop] if isinstance(stop, str) else [str(s) for s in stop]
    return attrs


def params_for(params: Any, i: int) -> Any:
    """The SamplingParams of request ``i`` (one for all, or one per prompt)."""
    if isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        return params[i] if i < len(params) else None
    return params


def timings(metrics: Any) -> dict[str, float]:
    """Per-request engine timings, each computed within one clock. Empty when ``metrics`` is None.

    Keys: ttft_s, queue_s, prefill_s, decode_s, inference_s, tpot_s (any may be missing), plus the raw
    stamps arrival_wall, first_mono, last_mono, queued_mono (for placing the span).
    """
    if metrics is None:
        return {}
    t: dict[str, float] = {}
    arrival = _pos(getattr(metrics, "arrival_time", None))
    if arrival is not None:
        t["arrival_wall"] = arrival
    if hasattr(metrics, "queued_ts"):  # V1 engine: RequestStateStats
        queued = _pos(metrics.queued_ts)
        scheduled = _pos(getattr(metrics, "scheduled_ts", None))
        first = _pos(getattr(metrics, "first_token_ts", None))
        last = _pos(getattr(metrics, "last_token_ts", None))
        ttft = _pos(getattr(metrics, "first_token_latency", None))  # wall clock, from arrival
        if ttft is not None:
            t["ttft_s"] = ttft
        if queued is not None:
            t["queued_mono"] = queued
            if scheduled is not None and scheduled >= queued:
                t["queue_s"] = scheduled - queued
        if scheduled is not None and first is not None and first >= scheduled:
            t["prefill_s"] = first - scheduled
        if first is not None:
            t["first_mono"] = first
        if last is not None:
            t["last_mono"] = last
        if first is not None and last is not None and last >= first:
            t["decode_s"] = last - first
            n = int(getattr(metrics, "num_generation_tokens", 0) or 0)
            if n > 1:
                t["tpot_s"] = (last - first) / (n - 1)
        if scheduled is not None and last is not None and last >= scheduled:
            t["inference_s"] = last - scheduled
        return t
    # V0 engine: RequestMetrics, every stamp on the wall clock
    first_tok = _pos(getattr(metrics, "first_token_time", None))
    sched = _pos(getattr(metrics, "first_scheduled_time", None))
    last_tok = _pos(getattr(metrics, "last_token_time", None))
    finished = _pos(getattr(metrics, "finished_time", None))
    if arrival is not None and first_tok is not None and first_tok >= arrival:
        t["ttft_s"] = first_tok - arrival
    in_queue = getattr(metrics, "time_in_queue", None)
    if in_queue is not None and _pos(in_queue) is not None:
        t["queue_s"] = float(in_queue)
    if sched is not None and first_tok is not None and first_tok >= sched:
        t["prefill_s"] = first_tok - sched
    if first_tok is not None and last_tok is not None and last_tok >= first_tok:
        t["decode_s"] = last_tok - first_tok
    if sched is not None and last_tok is not None and last_tok >= sched:
        t["inference_s"] = last_tok - sched
    end = finished or last_tok
    if end is not None:
        t["end_wall"] = end
    return t


def timing_attributes(t: dict[str, float]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for k, key in (
        ("queue_s", semconv.LATENCY_QUEUE_S),
        ("prefill_s", semconv.LATENCY_PREFILL_S),
        ("decode_s", semconv.LATENCY_DECODE_S),
        ("inference_s", semconv.LATENCY_INFERENCE_S),
        ("tpot_s", semconv.LATENCY_TPOT_S),
    ):
        if k in t:
            attrs[key] = t[k]
    return attrs


def place(t: dict[str, float], wall0_s: float, mono0_s: float, wall_end_s: float) -> tuple[float, float, bool]:
    """Wall-clock (start, end) in seconds for one request span, and whether engine timings placed it.

    start: the front end's arrival time (wall clock). end: the engine's last-token stamp moved onto the
    wall clock through the batch's (wall, monotonic) anchor, never before arrival + TTFT (the front end
    saw the first token then) and never outside the batch span. Falls back to the batch's bounds.
    """
    start = t.get("arrival_wall")
    if start is None or not (wall0_s - 1.0 <= start <= wall_end_s):
        start = wall0_s
    start = max(start, wall0_s)
    end = None
    if "last_mono" in t:
        end = wall0_s + (t["last_mono"] - mono0_s)
    elif "end_wall" in t:
        end = t["end_wall"]
    placed = end is not None and wall0_s - 1.0 <= end <= wall_end_s + 1.0
    if not placed:
        end = wall_end_s
    assert end is not None
    if "ttft_s" in t:
        end = max(end, start + t["ttft_s"])
    end = min(max(end, start), wall_end_s)
    return start, end, placed


def engine_facts(llm: Any) -> dict[str, Any]:
    """Model name, device type and GPU count of an ``LLM`` (cached by the caller)."""
    facts: dict[str, Any] = {"model": None, "device_type": None, "world_size": 1}
    mc = getattr(llm, "model_config", None) or getattr(getattr(llm, "llm_engine", None), "model_config", None)
    if mc is not None:
        served = getattr(mc, "served_model_name", None)
        if isinstance(served, (list, tuple)):
            served = served[0] if served else None
        name = served or getattr(mc, "model", None)
        # a model loaded from a directory is named by its card or path tail, never by the path (issue 19)
        facts["model"] = model_display_name(name) if isinstance(name, str) else name
    cfg = getattr(getattr(llm, "llm_engine", None), "vllm_config", None)
    if cfg is not None:
        facts["device_type"] = getattr(getattr(cfg, "device_config", None), "device_type", None)
        ws = getattr(getattr(cfg, "parallel_config", None), "world_size", None)
        if isinstance(ws, int) and ws > 0:
            facts["world_size"] = ws
    if facts["device_type"] is None:
        try:
            from vllm.platforms import current_platform

            facts["device_type"] = getattr(current_platform, "device_type", None)
        except Exception:
            pass
    return facts
