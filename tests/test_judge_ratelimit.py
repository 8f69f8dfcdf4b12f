"""Judge calls under a rate limit: a local OpenAI-compatible HTTP server enforces a token bucket and
answers 429 with ``Retry-After`` / ``retry-after-ms`` beyond it.

The server's verdicts are scripted (the only fake: the LLM's answers); the client is the real
``langchain_openai.ChatOpenAI`` (with its own retries off, so ragtrail's limiter does the work).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ragtrail.evals import Example, Judge, scorers


class RateLimitedServer:
    """OpenAI-compatible /v1/chat/completions with a token bucket of ``burst`` requests refilled at ``rate``/s."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.last = time.monotonic()
        self.lock = threading.Lock()
        self.accepted = 0
        self.rejected = 0
        self.first_ok: float | None = None
        self.last_ok: float | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                json.loads(body)
                with outer.lock:
                    now = time.monotonic()
                    outer.tokens = min(outer.burst, outer.tokens + (now - outer.last) * outer.rate)
                    outer.last = now
                    ok = outer.tokens >= 1.0
                    if ok:
                        outer.tokens -= 1.0
                        outer.accepted += 1
                        outer.first_ok = outer.first_ok or now
                        outer.last_ok = now
                    else:
                        outer.rejected += 1
                        wait = (1.0 - outer.tokens) / outer.rate
                if ok:
                    payload = {
                        "id": "x", "object": "chat.completion", "created": 0, "model": "limited",
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": '{"verdict":"relevant"}'}}],
                        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
                    }  # fmt: skip
                    data, code, extra = json.dumps(payload).encode(), 200, {}
                else:
                    data = json.dumps({"error": {"message": "rate limited", "type": "rate_limit_error"}}).encode()
                    code = 429
                    extra = {"Retry-After": str(max(1, math.ceil(wait))), "retry-after-ms": str(int(wait * 1000) + 1)}
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default backlog of 5 drops connections under 16 concurrent clients

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> RateLimitedServer:
        self.thread.start()
        return self

    def __exit__(self, *a: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.slow
def test_no_example_fails_and_throughput_matches_the_allowed_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    from langchain_openai import ChatOpenAI

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    rate, burst, n = 10.0, 5, 100
    with RateLimitedServer(rate, burst) as srv:
        model = ChatOpenAI(model="limited", base_url=f"http://127.0.0.1:{srv.port}/v1", api_key="x", max_retries=0)
        judge = Judge(model, cache=False, max_concurrency=16)
        sc = scorers.answer_relevance(judge=judge, explain=False)
        exs = [Example(id=str(i), input=f"question {i}?") for i in range(n)]

        async def run_all() -> list[Any]:
            return await asyncio.gather(*(sc.ascore(e, "an answer", None) for e in exs))  # type: ignore[arg-type]

        t0 = time.monotonic()
        results = asyncio.run(run_all())
        elapsed = time.monotonic() - t0
    assert [r.status for r in results] == ["ok"] * n, [r.reason for r in results if r.status != "ok"][:3]
    assert srv.accepted == n and srv.rejected > 0  # the limit was really hit, and every call got through
    allowed = (burst + rate * elapsed) / elapsed  # the most the bucket lets through in this time
    achieved = n / elapsed
    assert achieved >= 0.9 * allowed, (achieved, allowed, judge.stats())
    assert judge.limiter.n_backoffs > 0
