"""Usage and cost: the price table (exact names, dated snapshots, unknown models, user overrides),
GPU-time cost, token provenance and time to first token, and repricing stored spans."""

from __future__ import annotations

import json

import pytest

import ragtrail
from ragtrail import semconv
from ragtrail.tracing import compute_cost, gpu_cost, load_prices


def test_exact_and_dated_snapshot_prices():
    t = load_prices()
    mini = t.lookup("openai", "gpt-4o-mini")
    assert (mini.input, mini.output, mini.cached_input) == (0.15, 0.60, 0.075)
    assert mini.date == "2025-06-01"  # the table is dated
    assert t.lookup("openai", "gpt-4o-mini-2024-07-18") == mini  # longest known prefix wins, not gpt-4o
    assert t.lookup("anthropic", "claude-3-5-sonnet-20241022") == t.lookup("anthropic", "claude-3-5-sonnet")
    assert t.lookup("azure", "GPT-4o") == t.lookup("openai", "gpt-4o")  # provider alias, case-insensitive
    assert t.lookup(None, "openai/gpt-4o") == t.lookup("openai", "gpt-4o")
    # a different model that merely shares a prefix is unknown, not mispriced
    assert t.lookup("openai", "o3-mini") is None
    assert t.lookup("google", "gemini-2.0-flash-lite") is None


def test_cost_arithmetic_with_cached_tokens():
    cost, price = compute_cost("openai", "gpt-4o", 1_000_000, 100_000, cached_input_tokens=400_000)
    assert cost == pytest.approx(600_000 * 2.50 / 1e6 + 400_000 * 1.25 / 1e6 + 100_000 * 10.0 / 1e6)
    assert price.input == 2.50


def test_unknown_model_gets_no_cost_attribute(traced):
    with ragtrail.span("llm", kind="LLM") as s:
        ragtrail.record_usage(
            s,
            provider="acme",
            model="acme-giant-9",
            input_tokens=10,
            output_tokens=5,
            source="tokenizer_estimate",
            ttft_s=0.25,
        )
    [sp] = traced.by_name("llm")
    a = dict(sp.attributes)
    assert semconv.COST_USD not in a and semconv.COST_SOURCE not in a
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 10 and a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 5
    assert a[semconv.USAGE_SOURCE] == "tokenizer_estimate"
    assert a[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] == 0.25
    row = traced.client().spans_df(name="llm").iloc[0]
    assert row.cost_usd != row.cost_usd  # NaN in the frame, never 0
    assert row.input_tokens == 10


def test_known_model_cost_provenance_and_cached_tokens(traced):
    with ragtrail.span("llm", kind="LLM") as s:
        ragtrail.record_usage(
            s,
            provider="openai",
            model="gpt-4o-mini-2024-07-18",
            input_tokens=2000,
            output_tokens=500,
            cached_input_tokens=1000,
        )
    a = dict(traced.by_name("llm")[0].attributes)
    assert a[semconv.COST_USD] == pytest.approx((1000 * 0.15 + 1000 * 0.075 + 500 * 0.60) / 1e6)
    assert a[semconv.COST_SOURCE] == "price_table"
    assert a[semconv.COST_PRICE_DATE] == "2025-06-01"
    assert a[semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS] == 1000
    assert a[semconv.USAGE_SOURCE] == "provider"
    assert a[semconv.USAGE_TOTAL_TOKENS] == 2500


def test_user_price_overrides_by_dict_and_file(tmp_path, monkeypatch):
    t = load_prices({"my-model": {"input": 1.0, "output": 2.0}, "gpt-4o": {"input": 100.0, "output": 200.0}})
    assert t.lookup(None, "my-model").input == 1.0
    assert t.lookup("openai", "gpt-4o").input == 100.0  # the user's row wins
    assert t.lookup(None, "my-model").date == "user"
    f = tmp_path / "prices.json"
    f.write_text(
        json.dumps(
            {
                "models": [{"provider": "acme", "model": "acme-giant-9", "input": 5, "output": 7}],
                "gpu_hourly_usd": {"Acme GPU": 9.0},
            }
        )
    )
    t2 = load_prices(str(f))
    assert t2.lookup("acme", "acme-giant-9").output == 7
    assert t2.gpu_rate("Acme GPU") == 9.0
    monkeypatch.setenv("RAGTRAIL_PRICES", str(f))
    assert load_prices().lookup("acme", "acme-giant-9") is not None
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ragtrail.ConfigError, match="bad.json:1"):
        load_prices(str(bad))
    with pytest.raises(ragtrail.ConfigError, match="does not exist"):
        load_prices(str(tmp_path / "missing.json"))
    with pytest.raises(ragtrail.ConfigError, match="input"):
        load_prices({"m": {"output": 1}})


def test_init_prices_option_applies_to_spans(store_path):
    ragtrail.init(project="p", store=store_path, prices={"house-llm": {"input": 3.0, "output": 4.0}})
    try:
        with ragtrail.span("llm", kind="LLM") as s:
            ragtrail.record_usage(s, provider="self", model="house-llm", input_tokens=1_000_000, output_tokens=0)
        ragtrail.flush()
        row = ragtrail.Client(store_path).spans_df().iloc[0]
        assert row.cost_usd == pytest.approx(3.0)
        assert row.attributes[semconv.COST_SOURCE] == "user_prices"
    finally:
        ragtrail.shutdown()


def test_gpu_time_cost(store_path, monkeypatch, tmp_path):
    t = load_prices()
    assert gpu_cost(3600, "NVIDIA H100 80GB HBM3", t) == pytest.approx(2.5)  # substring match of the type
    assert gpu_cost(1800, "NVIDIA H200", t) == pytest.approx(1.75)
    assert gpu_cost(3600, "Mystery GPU", t) == pytest.approx(t.gpu_hourly["default"])
    f = tmp_path / "gpu.json"
    f.write_text(json.dumps({"NVIDIA H100": 4.0}))
    monkeypatch.setenv("RAGTRAIL_GPU_PRICES", str(f))
    assert gpu_cost(3600, "NVIDIA H100", load_prices()) == pytest.approx(4.0)
    monkeypatch.delenv("RAGTRAIL_GPU_PRICES")
    ragtrail.init(project="gpu", store=store_path, gpu_prices={"NVIDIA L4": 1.2})
    try:
        with ragtrail.span("gen", kind="LLM") as s:
            # 2 GPUs × 90 s of engine time = 180 GPU-seconds
            ragtrail.record_usage(
                s,
                provider="vllm",
                model="qwen",
                input_tokens=10,
                output_tokens=20,
                source="server",
                gpu_seconds=180.0,
                gpu_type="NVIDIA L4",
                gpu_count=2,
            )
        ragtrail.flush()
        row = ragtrail.Client(store_path).spans_df().iloc[0]
        assert row.cost_usd == pytest.approx(180 * 1.2 / 3600)
        assert row.attributes[semconv.COST_SOURCE] == "gpu_time"
        assert row.attributes[semconv.GPU_COUNT] == 2
    finally:
        ragtrail.shutdown()


def test_record_documents_ranks_and_ids(traced):
    with ragtrail.span("ret", kind="RETRIEVER") as s:
        ragtrail.record_documents(s, [{"id": 7, "score": "0.9", "content": "a"}, {"id": "x", "score": None}])
    tr = traced.client().trace(traced.by_name("ret")[0].context.trace_id.to_bytes(16, "big").hex())
    assert tr.retrieved_documents() == [{"id": "7", "rank": 0, "score": 0.9, "content": "a"}, {"id": "x", "rank": 1}]


def test_reprice_recomputes_stored_costs(traced, tmp_path):
    with ragtrail.span("a", kind="LLM") as s:
        ragtrail.record_usage(s, provider="openai", model="gpt-4o", input_tokens=1_000_000, output_tokens=0)
    with ragtrail.span("b", kind="LLM") as s:
        ragtrail.record_usage(s, provider="acme", model="acme-9", input_tokens=1_000_000, output_tokens=0)
    with ragtrail.span("c", kind="CHAIN"):
        pass
    client = traced.client()
    assert client.reprice() == 0  # nothing changed: no spurious rewrites
    n = client.reprice(prices={"gpt-4o": {"input": 5.0, "output": 0.0}, "acme-9": {"input": 1.0, "output": 1.0}})
    assert n == 2
    df = client.spans_df().set_index("name")
    assert df.loc["a", "cost_usd"] == pytest.approx(5.0)
    assert df.loc["b", "cost_usd"] == pytest.approx(1.0)  # was unknown, now priced
    assert df.loc["b", "attributes"][semconv.COST_SOURCE] == "user_prices"
    assert df.loc["c", "cost_usd"] != df.loc["c", "cost_usd"]
    assert client.trace(df.loc["a", "trace_id"]).cost_usd == pytest.approx(5.0)
    # back to the built-in table: acme loses its cost entirely (unknown → no cost, not 0)
    assert client.reprice() == 2
    df = client.spans_df().set_index("name")
    assert df.loc["a", "cost_usd"] == pytest.approx(2.5)
    assert df.loc["b", "cost_usd"] != df.loc["b", "cost_usd"]
    assert semconv.COST_USD not in df.loc["b", "attributes"]


def test_provider_less_user_rows_apply_to_any_provider():
    t = load_prices({"my-model": {"input": 1.0, "output": 2.0}})
    assert t.lookup("openai", "my-model").input == 1.0  # e.g. an OpenAI-compatible server
    assert t.lookup("openai", "claude-3-haiku") is None  # but built-in rows stay with their provider
