"""LangChain's ChatOpenAI with both the LangChain handler and the OpenAI client connector on: exactly one
LLM span per model call.

Real ``langchain_openai.ChatOpenAI`` and the real ``openai`` client talk HTTP to a local stub server;
only the model's *answer* is fake (a canned chat completion).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytest.importorskip("langchain_openai")
pytest.importorskip("openai")

from ragtrail import semconv  # noqa: E402
from ragtrail.connectors import langchain as lc_connector  # noqa: E402

_ANSWER = {
    "id": "chatcmpl-stub-1",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


class _Stub(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server API
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        body = json.dumps(_ANSWER).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_one_llm_span_per_call_with_both_connectors(traced, stub_url):  # type: ignore[no-untyped-def]
    from langchain_openai import ChatOpenAI

    from ragtrail.connectors import openai as oa_connector

    oa_connector.instrument()
    lc_connector.instrument()
    try:
        model = ChatOpenAI(
            model="gpt-4o-mini", base_url=stub_url, api_key="sk-test-not-a-real-key-000000", max_retries=0
        )
        assert model.invoke("hi").content == "hello there"
        spans = traced.spans()
        llm = [s for s in spans if s.attributes.get(semconv.SPAN_KIND) == semconv.LLM]
        assert len(llm) == 1, [s.name for s in spans]
        (s,) = llm
        assert s.name == "chat gpt-4o-mini"
        assert s.attributes[semconv.LANGCHAIN_RUN_TYPE] == "chat_model"
        assert s.attributes[semconv.GEN_AI_PROVIDER_NAME] == "openai"
        assert s.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 12
        assert s.attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 3
        assert s.attributes[semconv.GEN_AI_RESPONSE_MODEL] == "gpt-4o-mini-2024-07-18"
        assert s.attributes[semconv.COST_USD] > 0

        # the OpenAI connector alone still records its own LLM span
        lc_connector.uninstrument()
        traced.memory.clear()
        model.invoke("hi")
        llm = [s for s in traced.spans() if s.attributes.get(semconv.SPAN_KIND) == semconv.LLM]
        assert len(llm) == 1 and semconv.LANGCHAIN_RUN_ID not in llm[0].attributes
    finally:
        lc_connector.uninstrument()
        oa_connector.uninstrument()
