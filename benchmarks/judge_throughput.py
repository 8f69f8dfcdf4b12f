"""Judge throughput against a local vLLM OpenAI-compatible server, next to the server's own throughput
for the same requests sent directly (the OpenAI client, same payloads, same concurrency).

    .venv/bin/python -m benchmarks.judge_throughput            # starts a CPU vLLM server with a tiny model
    .venv/bin/python -m benchmarks.judge_throughput --quick
    .venv/bin/python -m benchmarks.judge_throughput --base-url http://127.0.0.1:8000/v1 --model tiny

Each level sends N judge requests per round (answer_relevance, explain=False, guided JSON decoding, cache off)
through ``Judge`` with ``max_concurrency=c`` and, in the same run, the identical chat-completion
payloads through ``openai.AsyncOpenAI`` with an ``asyncio.Semaphore(c)``. It prints requests/s of both
and the median over rounds of the ratio judge / direct of adjacent runs (goal: >= 0.90), with the
client CPU time per request of each path.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ragtrail.evals import Example, Judge, scorers  # noqa: E402
from ragtrail.evals._judge import json_schema_of  # noqa: E402


def _examples(n: int, offset: int) -> list[Example]:
    return [Example(id=str(i), input=f"Question {offset + i}: where is item {offset + i} stored?") for i in range(n)]


OUTPUT = {"answer": "It is stored in the north warehouse, shelf 4.", "contexts": ["Items are stored in warehouses."]}


async def judge_run(model: Any, n: int, c: int, offset: int) -> tuple[float, int, float]:
    judge = Judge(model, cache=False, max_concurrency=c, max_tokens=32)
    sc = scorers.answer_relevance(judge=judge, explain=False)
    exs = _examples(n, offset)
    t0, c0 = time.perf_counter(), time.process_time()
    res = await asyncio.gather(*(sc.ascore(e, OUTPUT, None) for e in exs))  # type: ignore[arg-type]
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return n / dt, sum(1 for r in res if r.status == "ok"), cpu / n


async def direct_run(base_url: str, model_name: str, n: int, c: int, offset: int) -> tuple[float, int, float]:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0)
    judge = Judge(_chat(base_url, model_name), cache=False, max_tokens=32)  # only to render identical payloads
    sc = scorers.answer_relevance(judge=judge, explain=False)
    payloads = []
    for e in _examples(n, offset):
        prepared = sc.inputs(e, OUTPUT, None)
        assert isinstance(prepared, dict)
        schema = json_schema_of(sc.schema(prepared))
        msgs = judge._with_instructions(sc.messages(prepared), schema)
        payloads.append({
            "model": model_name, "messages": msgs, "temperature": 0.0, "seed": 0, "max_tokens": 32,
            "response_format": {"type": "json_schema", "json_schema": {"name": "AnswerRelevanceVerdict", "schema": schema}},
        })  # fmt: skip
    sem = asyncio.Semaphore(c)

    async def one(p: dict[str, Any]) -> bool:
        async with sem:
            r = await client.chat.completions.create(**p)
            return bool(r.choices[0].message.content)

    t0, c0 = time.perf_counter(), time.process_time()
    ok = await asyncio.gather(*(one(p) for p in payloads))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    await client.close()
    return n / dt, sum(ok), cpu / n


def _chat(base_url: str, model_name: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=model_name, base_url=base_url, api_key="none", max_retries=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests per level")
    ap.add_argument("--base-url", help="use this running OpenAI-compatible server instead of starting one")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("-n", type=int, default=None, help="requests per round (default 48, --quick 16)")
    ap.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds per level (median; default 5, --quick 3)"
    )
    args = ap.parse_args()
    n = args.n or (16 if args.quick else 48)
    args.rounds = args.rounds or (3 if args.quick else 5)
    os.environ.setdefault("NO_PROXY", "127.0.0.1")
    server = None
    base_url = args.base_url
    if base_url is None:
        from benchmarks._judge_server import VLLMServer, build_tiny_model

        model_dir = build_tiny_model(os.path.join(tempfile.gettempdir(), "ragtrail-judge-tiny"))
        print(f"starting vLLM (CPU) with the tiny model in {model_dir} …", flush=True)
        server = VLLMServer(model_dir, served_name=args.model).start()
        base_url = server.base_url
    try:
        model = _chat(base_url, args.model)
        asyncio.run(judge_run(model, 8, 4, 10_000))  # warm-up (grammar compile, connections)
        asyncio.run(direct_run(base_url, args.model, 8, 4, 10_000))
        print(
            f"\njudge throughput vs direct requests to the same vLLM server "
            f"({n} requests per round, median of {args.rounds} interleaved rounds)"
        )
        print(
            f"{'concurrency':>11} {'direct req/s':>13} {'judge req/s':>12} {'ratio':>7} {'ok':>7} "
            f"{'direct CPU ms/req':>9} {'judge CPU ms/req':>9}"
        )
        offset = 0
        for c in (1, 4, 16):
            directs, judges, oks, dcpu, jcpu = [], [], [], [], []
            for _ in range(args.rounds):  # interleaved rounds: the machine's load drifts
                d, _ok, dc = asyncio.run(direct_run(base_url, args.model, n, c, offset))
                j, jok, jc = asyncio.run(judge_run(model, n, c, offset + n))
                offset += 2 * n
                directs.append(d)
                judges.append(j)
                oks.append(jok)
                dcpu.append(dc)
                jcpu.append(jc)
            direct, jr = statistics.median(directs), statistics.median(judges)
            ratio = statistics.median(j / d for j, d in zip(judges, directs))  # per adjacent pair
            print(
                f"{c:>11} {direct:>13.1f} {jr:>12.1f} {ratio:>7.2f} {min(oks):>3}/{n:<3} "
                f"{statistics.median(dcpu) * 1000:>9.1f} {statistics.median(jcpu) * 1000:>9.1f}",
                flush=True,
            )
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
