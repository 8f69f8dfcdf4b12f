"""What tracing (GPU sampling included) adds to a batched ``generate`` call, and the cost ragtrail computes.

On a GPU (the figure the issue asks for, measured on an NVIDIA H200)::

    python benchmarks/gpu_generate.py                 # random ~1.1B Llama (TinyLlama shape), bf16, 32 x 256
    python benchmarks/gpu_generate.py --rounds 3      # fewer alternations

On a CPU, with the tiny random byte-level Llama of the tests (and vLLM on CPU when it is installed)::

    .venv/bin/python benchmarks/gpu_generate.py --tiny [--vllm] [--quick]

Method: the model is built from a config (random weights, no download). Each round runs the same batch
once untraced (connector uninstrumented: plain transformers) and once traced (``ragtrail.init`` into a
SQLite store + ``ragtrail.connectors.transformers.instrument()``, NVML sampler on), alternating which
goes first; greedy decoding with ``min_new_tokens = max_new_tokens`` so every run makes exactly the same
number of tokens. The overhead is the median over rounds of (traced / untraced - 1). The cost per 1,000
output tokens is read back from the traced spans (``ragtrail.cost.usd`` / output tokens) and printed
next to the rate it implies, so that a reader can check it: tokens/s and $/GPU-hour give the same figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ragtrail  # noqa: E402
from ragtrail import semconv  # noqa: E402


def _build_model(tiny: bool, device: str):  # type: ignore[no-untyped-def]
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if tiny:
        from tests._tiny_model import build_tiny_llama

        path = build_tiny_llama(os.environ.get("RAGTRAIL_TINY_LLAMA_DIR") or Path(tempfile.gettempdir()) / "ragtrail_tiny_llama")
        model = LlamaForCausalLM.from_pretrained(path, dtype=torch.float32).to(device)
        return model, path
    config = LlamaConfig(
        vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
        num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )  # fmt: skip
    with torch.device(device):
        torch.set_default_dtype(torch.bfloat16)
        model = LlamaForCausalLM(config)
        torch.set_default_dtype(torch.float32)
    model.eval()
    return model, None


def _micro_costs(device: str) -> dict[str, float]:
    """µs per call of the reads that must stay off the per-token path."""
    out: dict[str, float] = {}
    from ragtrail.tracing import _gpu

    if device.startswith("cuda"):
        import torch

        n = 2000
        t = time.perf_counter()
        for _ in range(n):
            torch.cuda.max_memory_allocated(0)
        out["torch_max_memory_allocated_us"] = (time.perf_counter() - t) / n * 1e6
        if _gpu.nvml_available():
            nv = _gpu._nvml_mod
            h = _gpu._handle(0)
            t = time.perf_counter()
            for _ in range(n):
                nv.nvmlDeviceGetUtilizationRates(h)
            out["nvml_utilization_us"] = (time.perf_counter() - t) / n * 1e6
            t = time.perf_counter()
            for _ in range(n):
                nv.nvmlDeviceGetMemoryInfo(h)
            out["nvml_memory_us"] = (time.perf_counter() - t) / n * 1e6
    return out


def _cpu_s() -> float:
    """CPU seconds of this process and its children (vLLM's engine core), all threads: on a shared, loaded
    CPU machine this is far steadier than wall time, which mostly measures waiting for a core."""
    try:
        import psutil

        me = psutil.Process()
        total = sum(me.cpu_times()[:2])
        for c in me.children(recursive=True):
            try:
                total += sum(c.cpu_times()[:2])
            except psutil.Error:
                pass
        return total
    except Exception:
        return time.process_time()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_transformers(args: argparse.Namespace, mem) -> dict:  # type: ignore[no-untyped-def]
    import torch

    from ragtrail.connectors import transformers as hf_conn

    device = "cuda:0" if torch.cuda.is_available() and not args.tiny else "cpu"
    model, _ = _build_model(args.tiny, device)
    g = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    input_ids = torch.randint(3, vocab, (args.batch, args.prompt_len), generator=g).to(device)
    mask = torch.ones_like(input_ids)
    gen_kwargs = {
        "max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens, "do_sample": False,
        "pad_token_id": model.config.pad_token_id if model.config.pad_token_id is not None else 0,
    }  # fmt: skip

    # A thin timer under the connector (present in both arms): traced outer time - inner time is what the
    # connector's wrapper costs on the caller's thread (span, GPU window, token counting, usage).
    from transformers.generation import utils as gen_utils

    original = gen_utils.GenerationMixin.generate
    inner: list[float] = []

    def timed_generate(self, *a, **k):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return original(self, *a, **k)
        finally:
            _sync(device)
            inner.append(time.perf_counter() - t)

    gen_utils.GenerationMixin.generate = timed_generate
    wrapper_s: list[float] = []
    cpu_plain: list[float] = []
    cpu_traced: list[float] = []

    def one(traced: bool) -> float:
        if traced:
            hf_conn.instrument()
        else:
            hf_conn.uninstrument()
        _sync(device)
        c = _cpu_s()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=mask, **gen_kwargs)
        _sync(device)
        dt = time.perf_counter() - t
        (cpu_traced if traced else cpu_plain).append(_cpu_s() - c)
        if traced:
            wrapper_s.append(dt - inner[-1])
        assert out.shape == (args.batch, args.prompt_len + args.new_tokens), out.shape
        return dt

    one(False)  # warm-up (kernels, allocator)
    one(True)
    mem.clear()
    plain: list[float] = []
    traced: list[float] = []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for tr in order:
            (traced if tr else plain).append(one(tr))
    hf_conn.uninstrument()
    gen_utils.GenerationMixin.generate = original
    ragtrail.flush(10)
    spans = [s for s in mem.get_finished_spans() if s.name == "transformers.generate"]
    res = _summarise("transformers.generate", device, plain, traced, spans, args.batch * args.new_tokens)
    res.update(_cpu_summary(cpu_plain[1:], cpu_traced[1:]))  # [0]: warm-up
    res["accounting"] = _accounting(device, input_ids, wrapper_s, traced, args.new_tokens)
    return res


def _accounting(device: str, input_ids, wrapper_s: list[float], traced: list[float], steps: int) -> dict:  # type: ignore[no-untyped-def]
    """Tracing's cost counted directly (immune to run-to-run noise): wrapper time on the caller's thread,
    the per-step cost of the first-token criterion x steps, and the sampler thread's CPU time."""
    import torch
    from transformers import MaxLengthCriteria, StoppingCriteriaList

    from ragtrail.connectors.transformers import _instrumentor as hf_inst
    from ragtrail.tracing import _gpu

    ids = input_ids
    cuda = torch.cuda if device.startswith("cuda") else None
    base = StoppingCriteriaList([MaxLengthCriteria(max_length=10**6)])
    with_ours = StoppingCriteriaList([MaxLengthCriteria(max_length=10**6), hf_inst._first_token_criterion()(cuda)])
    n = 2000

    def per_call(lst) -> float:  # type: ignore[no-untyped-def]
        for _ in range(50):
            lst(ids, None)
        _sync(device)
        t = time.perf_counter()
        for _ in range(n):
            lst(ids, None)
        _sync(device)
        return (time.perf_counter() - t) / n

    per_step = max(0.0, min(per_call(with_ours) for _ in range(3)) - min(per_call(base) for _ in range(3)))
    sampler_cpu = None
    th = _gpu._sampler.thread
    if th is not None and th.is_alive() and hasattr(time, "pthread_getcpuclockid"):
        try:
            sampler_cpu = time.clock_gettime(time.pthread_getcpuclockid(th.ident))  # type: ignore[arg-type]
        except Exception:
            sampler_cpu = None
    wall = sum(traced)
    wrapper = statistics.median(wrapper_s) if wrapper_s else 0.0
    med = statistics.median(traced)
    est = wrapper + per_step * steps + ((sampler_cpu or 0.0) * med / wall if wall else 0.0)
    return {
        "wrapper_s_per_call_median": wrapper,
        "criterion_s_per_step": per_step,
        "steps_per_call": steps,
        "sampler_thread_cpu_s_total": sampler_cpu,
        "traced_wall_s_total": wall,
        "estimated_overhead_pct": 100 * est / med,
    }


def run_vllm(args: argparse.Namespace, mem) -> dict | None:  # type: ignore[no-untyped-def]
    try:
        import vllm  # noqa: F401
    except ImportError:
        return {"skipped": "vllm is not installed here"}
    from vllm import LLM, SamplingParams

    from ragtrail.connectors import vllm as vllm_conn

    if args.tiny:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from tests._tiny_model import build_tiny_llama

        path = build_tiny_llama(os.environ.get("RAGTRAIL_TINY_LLAMA_DIR") or Path(tempfile.gettempdir()) / "ragtrail_tiny_llama")
        llm = LLM(model=path, dtype="float32", max_model_len=256, enforce_eager=True,
                  gpu_memory_utilization=0.2, disable_log_stats=False)  # fmt: skip
    else:
        return {"skipped": "vLLM benchmark only wired for --tiny here"}
    import random

    rnd = random.Random(1)
    prompts = [{"prompt_token_ids": [rnd.randrange(3, 390) for _ in range(args.prompt_len)]} for _ in range(args.batch)]
    sp = SamplingParams(max_tokens=args.new_tokens, min_tokens=args.new_tokens, temperature=0.0)
    cpu_plain: list[float] = []
    cpu_traced: list[float] = []
    # count the connector's per-batch work directly: the request spans it builds after generate() returns
    from ragtrail.connectors.vllm import _instrumentor as vllm_inst

    original_record = vllm_inst._record_batch
    record_s: list[float] = []

    def timed_record(*a, **k):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return original_record(*a, **k)
        finally:
            record_s.append(time.perf_counter() - t)

    vllm_inst._record_batch = timed_record

    def one(traced: bool) -> float:
        if traced:
            vllm_conn.instrument()
        else:
            vllm_conn.uninstrument()
        c = _cpu_s()
        t = time.perf_counter()
        outs = llm.generate(prompts, sp, use_tqdm=False)
        dt = time.perf_counter() - t
        (cpu_traced if traced else cpu_plain).append(_cpu_s() - c)
        assert sum(len(o.outputs[0].token_ids) for o in outs) == args.batch * args.new_tokens
        return dt

    one(False)
    one(True)
    mem.clear()
    plain: list[float] = []
    traced: list[float] = []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for tr in order:
            (traced if tr else plain).append(one(tr))
    vllm_conn.uninstrument()
    ragtrail.flush(10)
    spans = [s for s in mem.get_finished_spans() if s.name == "vllm.request"]
    vllm_inst._record_batch = original_record
    res = _summarise("vllm LLM.generate", "cpu", plain, traced, spans, args.batch * args.new_tokens)
    res.update(_cpu_summary(cpu_plain[1:], cpu_traced[1:]))
    if record_s:
        res["accounting"] = {
            "record_batch_s_median": statistics.median(record_s),
            "requests_per_batch": args.batch,
            "estimated_overhead_pct": 100 * statistics.median(record_s) / statistics.median(traced),
        }
    return res


def _cpu_summary(plain: list[float], traced: list[float]) -> dict:
    if not plain or not traced:
        return {}
    return {
        "cpu_untraced_s": plain,
        "cpu_traced_s": traced,
        "cpu_overhead_pct_of_medians": 100 * (statistics.median(traced) / statistics.median(plain) - 1),
    }


def _summarise(what: str, device: str, plain: list[float], traced: list[float], spans, tokens_per_run: int) -> dict:  # type: ignore[no-untyped-def]
    ratios = [t / p - 1 for p, t in zip(plain, traced, strict=True)]
    cost = sum(float(s.attributes.get(semconv.COST_USD, 0.0)) for s in spans)
    out_tokens = sum(int(s.attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 0)) for s in spans)
    gpu_s = sum(float(s.attributes.get(semconv.GPU_SECONDS, 0.0)) for s in spans)
    gpu_type = next((s.attributes.get(semconv.GPU_TYPE) for s in spans if s.attributes.get(semconv.GPU_TYPE)), None)
    sample = dict(spans[0].attributes) if spans else {}
    tps = tokens_per_run / statistics.median(plain)
    from ragtrail.tracing._usage import load_prices

    rate = load_prices().gpu_rate(gpu_type) if gpu_type else None
    return {
        "what": what,
        "device": device,
        "gpu_type": gpu_type,
        "untraced_s": plain,
        "traced_s": traced,
        "median_untraced_s": statistics.median(plain),
        "median_traced_s": statistics.median(traced),
        "overhead_pct_median_of_pairs": 100 * statistics.median(ratios),
        "overhead_pct_of_medians": 100 * (statistics.median(traced) / statistics.median(plain) - 1),
        "overhead_pct_of_minimums": 100 * (min(traced) / min(plain) - 1),
        "output_tokens_per_run": tokens_per_run,
        "tokens_per_s_untraced": tps,
        "ragtrail_cost_usd_per_1k_output_tokens": 1000 * cost / out_tokens if out_tokens else None,
        "check_rate_usd_per_gpu_hour": rate,
        "check_cost_per_1k_from_tokens_per_s": (rate / 3600 * 1000 / (tokens_per_run / statistics.median(traced))) if rate else None,
        "gpu_seconds_recorded": gpu_s,
        "traced_spans": len(spans),
        "sample_span_attributes": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sample.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random Llama on the CPU (tests' model)")
    ap.add_argument("--vllm", action="store_true", help="also measure vLLM LLM.generate (CPU build with --tiny)")
    ap.add_argument("--quick", action="store_true", help="fewer rounds and tokens")
    ap.add_argument("--skip-transformers", action="store_true", help="only the vLLM measurement (with --vllm)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--json", type=str, default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    if args.new_tokens is None:
        args.new_tokens = 256 if not args.tiny else 64
        if args.quick:
            args.new_tokens = 32
    if args.rounds is None:
        args.rounds = 3 if args.quick else (6 if not args.tiny else 5)

    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    mem = InMemorySpanExporter()
    store = Path(tempfile.mkdtemp(prefix="ragtrail_bench_")) / "bench.db"
    ragtrail.init(project="bench-gpu-generate", store=str(store), exporters=[mem])
    results: dict = {"date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "args": vars(args)}
    try:
        import torch

        results["torch"] = torch.__version__
        import transformers

        results["transformers"] = transformers.__version__
        if torch.cuda.is_available() and not args.tiny:
            results["gpu"] = torch.cuda.get_device_name(0)
    except Exception as exc:  # pragma: no cover
        results["error"] = repr(exc)
    if not args.skip_transformers:
        results["transformers_generate"] = run_transformers(args, mem)
        results["micro_us"] = _micro_costs(results["transformers_generate"]["device"])
    if args.vllm:
        results["vllm_generate"] = run_vllm(args, mem)
    ragtrail.shutdown()

    print(json.dumps(results, indent=2, default=str))
    print()
    for key in ("transformers_generate", "vllm_generate"):
        r = results.get(key)
        if not r or "skipped" in r:
            if r:
                print(f"{key}: skipped ({r['skipped']})")
            continue
        print(
            f"{results['date_utc']} {r['what']} on {r['gpu_type'] or r['device']}: "
            f"untraced {r['median_untraced_s']:.3f} s, traced {r['median_traced_s']:.3f} s, "
            f"tracing adds {r['overhead_pct_median_of_pairs']:+.2f}% (median of {len(r['untraced_s'])} pairs; "
            f"{r['overhead_pct_of_medians']:+.2f}% between medians, {r['overhead_pct_of_minimums']:+.2f}% between minimums); "
            f"{r['tokens_per_s_untraced']:,.0f} output tokens/s; ragtrail cost "
            f"${r['ragtrail_cost_usd_per_1k_output_tokens'] or float('nan'):.6f} per 1,000 output tokens "
            f"(check: ${r['check_rate_usd_per_gpu_hour']}/GPU-h / tokens/s -> ${r['check_cost_per_1k_from_tokens_per_s'] or float('nan'):.6f})"
        )
        if "cpu_overhead_pct_of_medians" in r:
            print(
                f"  CPU time (process + children): untraced {statistics.median(r['cpu_untraced_s']):.3f} s, traced "
                f"{statistics.median(r['cpu_traced_s']):.3f} s -> {r['cpu_overhead_pct_of_medians']:+.2f}% (medians)"
            )
        acc = r.get("accounting")
        if acc and "record_batch_s_median" in acc:
            print(
                f"  counted directly: request spans built in {acc['record_batch_s_median'] * 1e3:.2f} ms per batch of "
                f"{acc['requests_per_batch']} -> {acc['estimated_overhead_pct']:.3f}% of a call"
            )
        elif acc:
            print(
                f"  counted directly: wrapper {acc['wrapper_s_per_call_median'] * 1e3:.2f} ms/call, first-token criterion "
                f"{acc['criterion_s_per_step'] * 1e6:.1f} us/step x {acc['steps_per_call']}, sampler thread CPU "
                f"{acc['sampler_thread_cpu_s_total'] if acc['sampler_thread_cpu_s_total'] is not None else float('nan'):.4f} s "
                f"over {acc['traced_wall_s_total']:.1f} s traced -> {acc['estimated_overhead_pct']:.3f}% of a call"
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
