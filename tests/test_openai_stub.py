"""Fast OpenAI-connector tests against a small local OpenAI-compatible HTTP stub.

The real ``openai`` client (and, for the dedupe test, LangChain's real ``ChatOpenAI``) talks HTTP to a
stub server on loopback. The stub fakes only the model's answers, and serves what the vLLM end-to-end
test (tests/test_openai_vllm.py) cannot: embeddings from a generation model, HTTP errors, and a record
of every request's headers and body (to check ``traceparent`` and ``stream_options``).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from ragtrail import semconv
from ragtrail.connectors import openai as rt_openai

openai = pytest.importorskip("openai")


class _Stub(BaseHTTPRequestHandler):
    requests: list[dict[str, Any]] = []

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Stub.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
        model = body.get("model", "")
        if model == "err-400":
            return self._json(400, {"error": {"message": "bad request from stub", "type": "invalid_request_error"}})
        if self.path.endswith("/embeddings"):
            inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
            data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]} for i in range(len(inputs))]
            return self._json(200, {"object": "list", "data": data, "model": model,
                                    "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)}})  # fmt: skip
        usage = {"prompt_tokens": 11, "completion_tokens": 3, "total_tokens": 14,
                 "prompt_tokens_details": {"cached_tokens": 4},
                 "completion_tokens_details": {"reasoning_tokens": 2}}  # fmt: skip
        if not body.get("stream"):
            return self._json(200, {
                "id": "chatcmpl-stub", "object": "chat.completion", "created": 1, "model": model + "-0001",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "a b c"}, "finish_reason": "stop"}],
                "usage": usage,
            })  # fmt: skip
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base = {"id": "chatcmpl-stream", "object": "chat.completion.chunk", "created": 1, "model": model}
        chunks = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {"content": "a "}, "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {"content": "b c"}, "finish_reason": None}]},
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": usage})
        for c in chunks:
            self.wfile.write(f"data: {json.dumps(c)}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def oai(traced, stub_url) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    _Stub.requests.clear()
    rt_openai.instrument()
    try:
        yield openai.OpenAI(base_url=stub_url, api_key="sk-test", max_retries=0)
    finally:
        rt_openai.uninstrument()


def _traceparent(span) -> str:  # type: ignore[no-untyped-def]
    return f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{int(span.context.trace_flags):02x}"


def test_chat_span_with_usage_cost_and_traceparent(traced, oai):
    resp = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], top_p=0.5)
    (span,) = traced.by_name("chat gpt-4o-mini")
    a = span.attributes
    assert a[semconv.SPAN_KIND] == semconv.LLM and span.kind.name == "CLIENT"
    assert (a[semconv.GEN_AI_USAGE_INPUT_TOKENS], a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS]) == (11, 3)
    assert a[semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS] == 4
    assert a[semconv.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] == 2  # part of the 3 output tokens
    assert a[semconv.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-0001" and a[semconv.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    assert a[semconv.COST_USD] > 0  # a known model: priced from the table
    assert a[semconv.GEN_AI_REQUEST_TOP_P] == 0.5
    assert a[semconv.GEN_AI_PROVIDER_NAME] == "openai_compatible"  # not api.openai.com
    (out,) = json.loads(a[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert out == {"role": "assistant", "finish_reason": "stop",
                   "parts": [{"type": "text", "content": resp.choices[0].message.content}]}  # fmt: skip
    assert json.loads(a[semconv.GEN_AI_INPUT_MESSAGES]) == [{"role": "user", "parts": [{"type": "text", "content": "hi"}]}]
    assert _Stub.requests[-1]["headers"]["traceparent"] == _traceparent(span)


def test_stream_usage_is_requested_and_its_chunk_hidden(traced, oai):
    chunks = list(oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True))
    assert _Stub.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    assert len(chunks) == 4 and all(c.choices for c in chunks)
    (span,) = traced.by_name("chat m")
    assert span.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
    assert span.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert span.attributes[semconv.OUTPUT_VALUE] == "a b c"
    assert 0 <= span.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] <= (span.end_time - span.start_time) / 1e9


def test_include_usage_false_leaves_the_request_untouched(traced, stub_url):
    _Stub.requests.clear()
    rt_openai.instrument(include_usage=False)
    try:
        client = openai.OpenAI(base_url=stub_url, api_key="k", max_retries=0)
        with client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True) as s:
            for _ in s:
                pass
    finally:
        rt_openai.uninstrument()
    assert "stream_options" not in _Stub.requests[-1]["body"]
    (span,) = traced.by_name("chat m")
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS not in span.attributes
    assert span.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)


def test_a_stream_closed_early_still_ends_its_span(traced, oai):
    stream = oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    first = next(iter(stream))
    assert first.choices
    stream.close()
    (span,) = traced.by_name("chat m")
    assert span.end_time is not None and span.attributes[semconv.GEN_AI_RESPONSE_ID] == "chatcmpl-stream"


def test_embeddings_sync_and_async(traced, oai, stub_url):
    oai.embeddings.create(model="text-embedding-3-small", input=["a", "b"])

    async def go() -> None:
        client = openai.AsyncOpenAI(base_url=stub_url, api_key="k", max_retries=0)
        await client.embeddings.create(model="text-embedding-3-small", input="c")
        await client.close()

    asyncio.run(go())
    spans = traced.by_name("embeddings text-embedding-3-small")
    assert len(spans) == 2
    sync, asyn = spans
    for s, n in ((sync, 2), (asyn, 1)):
        a = s.attributes
        assert a[semconv.SPAN_KIND] == semconv.EMBEDDING
        assert a[semconv.EMBEDDING_COUNT] == n and a[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 4
        assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 3 * n
        assert a[semconv.EMBEDDING_MODEL] == "text-embedding-3-small"
    assert _Stub.requests[-1]["headers"]["traceparent"] == _traceparent(asyn)


def test_http_errors_propagate_unchanged_and_mark_the_span(traced, oai):
    with pytest.raises(openai.BadRequestError, match="bad request from stub"):
        oai.chat.completions.create(model="err-400", messages=[{"role": "user", "content": "x"}])
    (span,) = traced.by_name("chat err-400")
    assert span.status.status_code.name == "ERROR"
    assert span.attributes[semconv.ERROR_TYPE] == "BadRequestError"


def test_raw_response_calls_are_traced(traced, oai):
    raw = oai.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert raw.parse().choices[0].message.content == "a b c"
    (span,) = traced.by_name("chat m")
    assert span.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 11


def test_parse_and_the_stream_helper_are_traced(traced, oai):
    # openai < 1.9x has these helpers under client.beta (implemented with create())
    helpers = oai.chat.completions if hasattr(oai.chat.completions, "parse") else oai.beta.chat.completions
    parsed = helpers.parse(model="m", messages=[{"role": "user", "content": "x"}])
    assert parsed.choices[0].message.content == "a b c"
    with helpers.stream(model="m", messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "a b c"
    spans = traced.by_name("chat m")
    assert len(spans) == 2
    assert [s.attributes[semconv.GEN_AI_REQUEST_STREAM] for s in spans] == [False, True]
    assert all(s.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3 for s in spans)


def test_uninstrument_and_suppression_stop_tracing(traced, oai, stub_url):
    from ragtrail.tracing import suppress_instrumentation

    with suppress_instrumentation():
        oai.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    rt_openai.uninstrument()
    openai.OpenAI(base_url=stub_url, api_key="k").chat.completions.create(model="m", messages=[])
    assert traced.by_name("chat m") == []
    assert all("traceparent" not in r["headers"] for r in _Stub.requests)


def test_langchain_chat_openai_gives_one_llm_span(traced, oai, stub_url):
    """LangChain's handler records the model call; the OpenAI connector adds to its span, never a second one."""
    langchain_openai = pytest.importorskip("langchain_openai")
    from ragtrail.connectors.langchain import CallbackHandler

    llm = langchain_openai.ChatOpenAI(model="gpt-4o-mini", base_url=stub_url, api_key="k", max_retries=0)
    out = llm.invoke("hello", config={"callbacks": [CallbackHandler()]})
    assert out.content == "a b c"
    llm_spans = [s for s in traced.spans() if s.attributes.get(semconv.SPAN_KIND) == semconv.LLM]
    assert len(llm_spans) == 1
    (span,) = llm_spans
    assert semconv.LANGCHAIN_RUN_ID in span.attributes  # LangChain's span …
    assert span.attributes[semconv.SERVER_ADDRESS] == "127.0.0.1"  # … with what only the client knows
    assert span.attributes[semconv.GEN_AI_RESPONSE_ID] == "chatcmpl-stub"
    assert _Stub.requests[-1]["headers"]["traceparent"] == _traceparent(span)


def test_declared_version_range():
    from ragtrail import MissingDependencyError, RagtrailWarning
    from ragtrail.connectors import _common
    from ragtrail.connectors.openai import OpenAIInstrumentor

    assert _common.version_in_range(openai.__version__, OpenAIInstrumentor.supported)
    assert not _common.version_in_range("1.39.0", OpenAIInstrumentor.supported)
    assert not _common.version_in_range("4.0.0", OpenAIInstrumentor.supported)
    assert OpenAIInstrumentor().instrumentation_dependencies() == ["openai >=1.40,<4"]
    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(_common, "installed_version", lambda dist: "1.2.0")
        with pytest.warns(RagtrailWarning, match="tested with openai >=1.40,<4; found 1.2.0"):
            rt_openai.instrument()
        rt_openai.uninstrument()
        mp.setattr(_common.importlib.util, "find_spec", lambda name: None)
        with pytest.raises(MissingDependencyError, match=r"pip install 'ragtrail\[openai\]'"):
            rt_openai.instrument()
    finally:
        mp.undo()


OLDEST = ("openai==1.40.0", "httpx==0.27.2")  # the oldest openai claimed, with an httpx it supports


@pytest.mark.slow
def test_this_module_passes_with_the_oldest_supported_openai(tmp_path):
    """Installs openai 1.40.0 into a temporary folder (pip, from the package index) and runs this test
    module against it in a subprocess. Skipped when the index cannot be reached."""
    import os
    import subprocess
    import sys

    target = tmp_path / "oldest"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), *OLDEST],
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    if pip.returncode != 0:
        pytest.skip(f"cannot install {OLDEST}: {pip.stderr.strip()[-300:]}")
    env = dict(os.environ, PYTHONPATH=str(target) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    version = subprocess.run([sys.executable, "-c", "import openai; print(openai.__version__)"], env=env,
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    assert version == OLDEST[0].split("==")[1]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", "not oldest"],
        capture_output=True, text=True, env=env, timeout=600, cwd=os.path.dirname(os.path.dirname(__file__)),
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "passed" in run.stdout and "failed" not in run.stdout
