"""The HF transformers connector against real transformers generate() on CPU with the tiny random Llama.

Nothing is faked: the model is a real (randomly initialised) LlamaForCausalLM; its text is nonsense but
its tokens and timings are real.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import ragtrail  # noqa: E402
from ragtrail import semconv  # noqa: E402
from ragtrail.connectors import transformers as hf_conn  # noqa: E402
from tests._tiny_model import tiny_llama_dir  # noqa: E402,F401  (session fixture)

GPU_FIGURES = (
    semconv.GPU_UTILIZATION,
    semconv.GPU_UTILIZATION_MAX,
    semconv.GPU_MEMORY_USED_BYTES,
    semconv.GPU_MEMORY_TOTAL_BYTES,
    semconv.GPU_PEAK_MEMORY_BYTES,
    semconv.GPU_SAMPLES,
    semconv.GPU_COUNT,
)


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):  # type: ignore[no-untyped-def]  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    model.eval()
    return tok, model


def _generates(t):  # type: ignore[no-untyped-def]
    """The generate() spans: ``text_completion {model}`` (the GenAI conventions' name)."""
    return [s for s in t.spans() if s.name.split(" ", 1)[0] == "text_completion"]


@pytest.fixture
def hf(traced):  # type: ignore[no-untyped-def]
    hf_conn.instrument()
    try:
        yield traced
    finally:
        hf_conn.uninstrument()


def _new_token_counts(out, prompt_width: int, eos: set[int]) -> list[int]:  # type: ignore[no-untyped-def]
    counts = []
    for row in out[:, prompt_width:].tolist():
        n = len(row)
        for j, t in enumerate(row):
            if t in eos:
                n = j + 1
                break
        counts.append(n)
    return counts


def test_generate_span_tokens_ttft_device_cost(hf, tiny) -> None:  # type: ignore[no-untyped-def]
    tok, model = tiny
    enc = tok(["hello there", "The quick brown fox jumps", '{"a": 1'], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=9, do_sample=False)
    (s,) = _generates(hf)
    a = s.attributes
    assert a[semconv.SPAN_KIND] == semconv.LLM
    assert a[semconv.GEN_AI_PROVIDER_NAME] == "huggingface"
    # loaded from a local directory: named by the directory (its last component), never by the path
    assert model.name_or_path.startswith("/")
    assert a[semconv.GEN_AI_REQUEST_MODEL] == os.path.basename(model.name_or_path.rstrip("/"))
    assert s.name == f"text_completion {a[semconv.GEN_AI_REQUEST_MODEL]}"
    assert a[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 9
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == int(enc["attention_mask"].sum())  # padding not counted
    expected = _new_token_counts(out, enc["input_ids"].shape[1], {model.config.eos_token_id})
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == sum(expected)
    assert len(a[semconv.GEN_AI_RESPONSE_FINISH_REASONS]) == 3
    duration = (s.end_time - s.start_time) / 1e9
    assert 0 < a[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] <= duration
    assert a[semconv.DEVICE] == "cpu"
    # cost from device time: the 'cpu' row of the price table
    assert a[semconv.COST_SOURCE] == "gpu_time"
    assert a[semconv.GPU_TYPE] == "cpu"
    assert 0 < a[semconv.GPU_SECONDS] <= duration
    rate = ragtrail.tracing.load_prices().gpu_rate("cpu")
    assert a[semconv.COST_USD] == pytest.approx(a[semconv.GPU_SECONDS] * rate / 3600)
    # on a CPU, GPU figures are absent (never zeros)
    assert not any(k in a for k in GPU_FIGURES)


def test_output_tokens_stop_at_eos_with_stop_finish_reason(hf, tiny) -> None:  # type: ignore[no-untyped-def]
    """Greedy decoding is deterministic: take the 3rd token the model writes as EOS, so that row stops there."""
    tok, model = tiny
    enc = tok(["hello there"], return_tensors="pt")
    hf_conn.uninstrument()
    with torch.no_grad():
        free = model.generate(**enc, max_new_tokens=8, do_sample=False)
    hf_conn.instrument()
    width = enc["input_ids"].shape[1]
    eos = int(free[0, width + 2])
    first = free[0, width:].tolist().index(eos)  # the token may also occur earlier
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=eos)
    (s,) = _generates(hf)
    assert s.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == first + 1 == _new_token_counts(out, width, {eos})[0]
    assert list(s.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS]) == ["stop"]


def test_sampling_params_return_dict_and_several_sequences(hf, tiny) -> None:  # type: ignore[no-untyped-def]
    tok, model = tiny
    enc = tok(["hello"], return_tensors="pt")
    with torch.no_grad():
        res = model.generate(
            **enc, max_new_tokens=6, min_new_tokens=6, do_sample=True, temperature=0.7, top_k=20,
            num_return_sequences=2, return_dict_in_generate=True,
        )  # fmt: skip
    assert res.sequences.shape[0] == 2
    (s,) = _generates(hf)
    a = s.attributes
    assert a[semconv.GEN_AI_REQUEST_TEMPERATURE] == pytest.approx(0.7)
    assert a[semconv.GEN_AI_REQUEST_TOP_K] == 20
    assert a[semconv.GEN_AI_REQUEST_N] == 2
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == enc["input_ids"].shape[1]  # the prompt counts once
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 12


def test_user_stopping_criteria_still_run_and_are_not_mutated(hf, tiny) -> None:  # type: ignore[no-untyped-def]
    from transformers import StoppingCriteria, StoppingCriteriaList

    calls = []

    class StopAfterThree(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(input_ids.shape[1])
            return torch.full((input_ids.shape[0],), len(calls) >= 3, dtype=torch.bool)

    tok, model = tiny
    enc = tok(["hello"], return_tensors="pt")
    user_list = StoppingCriteriaList([StopAfterThree()])
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=20, do_sample=False, stopping_criteria=user_list)
    assert len(user_list) == 1
    assert len(calls) == 3
    (s,) = _generates(hf)
    assert s.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == out.shape[1] - enc["input_ids"].shape[1] == 3


def test_pipeline_chain_span_wraps_llm_span_with_content(hf, tiny) -> None:  # type: ignore[no-untyped-def]
    from transformers import pipeline

    tok, model = tiny
    pipe = pipeline("text-generation", model=model, tokenizer=tok)
    result = pipe("hello", max_new_tokens=5, do_sample=False)
    (chain,) = hf.by_name("transformers.pipeline.text-generation")
    (llm,) = _generates(hf)
    assert chain.attributes[semconv.SPAN_KIND] == semconv.CHAIN
    assert llm.parent is not None and llm.parent.span_id == chain.context.span_id
    assert chain.attributes[semconv.INPUT_VALUE] == "hello"
    assert result[0]["generated_text"] in chain.attributes[semconv.OUTPUT_VALUE].encode().decode("unicode_escape")
    assert llm.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert semconv.OUTPUT_VALUE in llm.attributes  # decoded with the pipeline's tokenizer


def test_content_switch_off_records_tokens_not_text(store_path, tiny) -> None:  # type: ignore[no-untyped-def]
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from transformers import pipeline

    mem = InMemorySpanExporter()
    ragtrail.init(project="t", store=store_path, exporters=[mem], capture_content=False, schedule_delay_ms=50)
    hf_conn.instrument()
    try:
        tok, model = tiny
        pipeline("text-generation", model=model, tokenizer=tok)("secret prompt", max_new_tokens=3, do_sample=False)
        ragtrail.flush()
        spans = mem.get_finished_spans()
        assert sorted(s.name.split(" ", 1)[0] for s in spans) == [
            "text_completion",
            "transformers.pipeline.text-generation",
        ]
        for s in spans:
            assert semconv.INPUT_VALUE not in s.attributes and semconv.OUTPUT_VALUE not in s.attributes
        (llm,) = [s for s in spans if s.name.startswith("text_completion ")]
        assert llm.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    finally:
        hf_conn.uninstrument()
        ragtrail.shutdown()


def test_errors_propagate_unchanged_and_mark_the_span(hf, tiny) -> None:  # type: ignore[no-untyped-def]
    tok, model = tiny
    enc = tok(["hello"], return_tensors="pt")
    with pytest.raises(ValueError):
        model.generate(**enc, max_new_tokens=3, num_beams=2, num_return_sequences=3)  # more sequences than beams
    (s,) = _generates(hf)
    assert s.status.status_code.name == "ERROR"
    assert s.attributes[semconv.ERROR_TYPE] == "ValueError"


def test_uninstrument_suppress_and_idempotent_instrument(traced, tiny) -> None:  # type: ignore[no-untyped-def]
    tok, model = tiny
    enc = tok(["hello"], return_tensors="pt")
    hf_conn.instrument()
    hf_conn.instrument()  # idempotent: still one span per call
    try:
        model.generate(**enc, max_new_tokens=2, do_sample=False)
        with ragtrail.tracing.suppress_instrumentation():
            model.generate(**enc, max_new_tokens=2, do_sample=False)
    finally:
        hf_conn.uninstrument()
    model.generate(**enc, max_new_tokens=2, do_sample=False)
    assert len(_generates(traced)) == 1
    assert hf_conn.failures() == 0


def test_stored_span_reads_back_through_client(hf, tiny) -> None:  # type: ignore[no-untyped-def]
    tok, model = tiny
    enc = tok(["hello"], return_tensors="pt")
    model.generate(**enc, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    df = hf.client().spans_df()
    row = df[df["name"].str.startswith("text_completion ")].iloc[0]
    assert row["kind"] == semconv.LLM
    assert int(row["output_tokens"]) == 4
    assert row["cost_usd"] > 0


def test_version_range_declared_and_enforced(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ragtrail import RagtrailWarning
    from ragtrail.connectors import _common

    inst = hf_conn.TransformersInstrumentor()
    assert _common.version_in_range(transformers.__version__, inst.supported)
    monkeypatch.setattr(_common, "installed_version", lambda dist: "4.20.0")
    with pytest.warns(RagtrailWarning, match="tested with transformers"):
        inst.instrument()
    inst.uninstrument()


def test_importing_the_connector_does_not_import_transformers() -> None:
    code = "import sys, ragtrail.connectors.transformers; print('transformers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_local_directory_model_never_names_spans_by_its_path(hf, tiny, tiny_llama_dir) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """generate() and a pipeline over a model loaded from a directory: no span name or attribute holds the
    path (span names, gen_ai.request.model and gen_ai.response.model are the directory's stable name)."""
    from transformers import pipeline

    tok, model = tiny
    enc = tok(["hello there"], return_tensors="pt")
    with torch.no_grad():
        model.generate(**enc, max_new_tokens=3, do_sample=False)
    pipe = pipeline("text-generation", model=tiny_llama_dir, tokenizer=tiny_llama_dir, device="cpu")
    pipe("hello", max_new_tokens=3, do_sample=False)
    spans = hf.spans()
    assert len(_generates(hf)) == 2
    path = str(tiny_llama_dir).rstrip("/")
    expected = os.path.basename(path)
    for s in _generates(hf):
        assert s.name == f"text_completion {expected}"
        assert s.attributes[semconv.GEN_AI_REQUEST_MODEL] == expected
        assert s.attributes[semconv.GEN_AI_RESPONSE_MODEL] == expected
    for s in spans:
        assert path not in s.name
        assert not [k for k, v in s.attributes.items() if path in str(v)], s.name
