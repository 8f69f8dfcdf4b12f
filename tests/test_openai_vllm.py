"""End to end: a real vLLM OpenAI-compatible server on CPU + the real ``openai`` client + ``ragtrail serve``.

One vLLM server for the whole module (25–80 s start-up): the tiny random byte-level Llama from
``tests/_tiny_model.py`` (nothing downloaded), started with ``--otlp-traces-endpoint`` pointing at a
ragtrail OTLP receiver, so vLLM's own ``llm_request`` spans land in the same store as the client's spans.
Nothing is faked: the model's answers are nonsense, but tokens, usage and timings are the server's own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

import ragtrail
from ragtrail import semconv
from tests._tiny_model import tiny_llama_dir  # noqa: F401  (fixture)

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

openai = pytest.importorskip("openai")
pytest.importorskip("vllm")


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def store_file(tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    return str(tmp_path_factory.mktemp("openai_vllm") / "ragtrail.db")


@pytest.fixture(scope="module")
def receiver(store_file) -> Iterator[object]:  # type: ignore[no-untyped-def]
    from ragtrail.server import Receiver

    rec = Receiver(store_file, http_port=0, grpc_port=0).start()
    try:
        yield rec
    finally:
        rec.stop()


@pytest.fixture(scope="module")
def vllm_server(tiny_llama_dir, receiver, tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]  # noqa: F811
    """Base URL of a real vLLM OpenAI-compatible server exporting its spans to ``receiver`` over OTLP/gRPC."""
    port = _free_port()
    env = dict(os.environ)
    env.update(
        VLLM_CPU_KVCACHE_SPACE="1",
        HF_HUB_OFFLINE="1",
        # vLLM exports over gRPC by default: exercise the receiver's gRPC transport with it
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc",
        OTEL_BSP_SCHEDULE_DELAY="100",
    )
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", tiny_llama_dir,
        "--served-model-name", "tiny", "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32",
        "--max-model-len", "256", "--enforce-eager", "--gpu-memory-utilization", "0.2",
        "--otlp-traces-endpoint", f"http://127.0.0.1:{receiver.grpc_port}",
    ]  # fmt: skip
    log_path = tmp_path_factory.mktemp("vllm_log") / "server.log"
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                log.flush()
                pytest.fail(f"vLLM server exited with {proc.returncode}:\n{open(log_path).read()[-4000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"vLLM server did not start in 300 s:\n{open(log_path).read()[-4000:]}")
            time.sleep(0.5)
        yield f"{base}/v1"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


@pytest.fixture
def traced_openai(store_file) -> Iterator[None]:  # type: ignore[no-untyped-def]
    from ragtrail.connectors import openai as rt_openai

    ragtrail.init(project="openai-e2e", store=store_file, schedule_delay_ms=50)
    rt_openai.instrument()
    try:
        yield
    finally:
        rt_openai.uninstrument()
        ragtrail.shutdown()


def _client_span(trace_id: str, store_file: str):  # type: ignore[no-untyped-def]
    assert ragtrail.flush(10)
    tr = ragtrail.Client(store_file).trace(trace_id)
    llm = [s for s in tr.spans if s.kind == semconv.LLM]
    assert len(llm) == 1, [s.name for s in tr.spans]
    return tr, llm[0]


def _wait_for_server_span(store_file: str, trace_id: str, timeout_s: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tr = ragtrail.Client(store_file).trace(trace_id)
        server = [s for s in tr.spans if s.name == "llm_request"]
        if server:
            return tr, server[0]
        time.sleep(0.2)
    raise AssertionError(f"vLLM's llm_request span for trace {trace_id} never reached the receiver")


def test_chat_non_streaming_and_streaming_record_the_same_tokens(vllm_server, traced_openai, store_file):
    client = openai.OpenAI(base_url=vllm_server, api_key="none")
    args = {"model": "tiny", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 8,
            "temperature": 0, "seed": 7}  # fmt: skip
    with ragtrail.span("plain", kind="CHAIN") as root_a:
        resp = client.chat.completions.create(**args)
    with ragtrail.span("streamed", kind="CHAIN") as root_b:
        chunks = list(client.chat.completions.create(stream=True, **args))
    # the usage-only chunk the connector asked for is not shown to the caller, who did not ask for it
    assert chunks and all(c.choices for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)

    _, a = _client_span(format(root_a.get_span_context().trace_id, "032x"), store_file)
    _, b = _client_span(format(root_b.get_span_context().trace_id, "032x"), store_file)
    assert a.input_tokens == resp.usage.prompt_tokens and a.output_tokens == resp.usage.completion_tokens
    assert (b.input_tokens, b.output_tokens) == (a.input_tokens, a.output_tokens)
    assert a.attributes[semconv.USAGE_SOURCE] == b.attributes[semconv.USAGE_SOURCE] == "provider"
    assert a.attributes[semconv.GEN_AI_REQUEST_STREAM] is False and b.attributes[semconv.GEN_AI_REQUEST_STREAM] is True
    ttft = b.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert 0 < ttft <= b.duration_ms / 1000
    assert semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK not in a.attributes
    for s in (a, b):
        assert s.attributes[semconv.GEN_AI_REQUEST_MODEL] == "tiny"
        assert s.attributes[semconv.GEN_AI_RESPONSE_MODEL] == "tiny"
        assert s.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == [resp.choices[0].finish_reason]
        assert s.attributes[semconv.SERVER_ADDRESS] == "127.0.0.1"
        assert s.attributes[semconv.SERVER_PORT] == int(vllm_server.rsplit(":", 1)[1].split("/")[0])
        assert s.attributes[semconv.GEN_AI_OPERATION_NAME] == "chat"
        assert s.attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] == 8
    assert a.attributes[semconv.GEN_AI_RESPONSE_ID] == resp.id
    assert b.output == text  # the streamed text, joined


def test_server_spans_join_the_client_trace(vllm_server, traced_openai, store_file, receiver):
    """traceparent goes with the request; vLLM's own span arrives at `ragtrail serve` in the same trace."""
    from typer.testing import CliRunner

    from ragtrail.cli import app

    client = openai.OpenAI(base_url=vllm_server, api_key="none")
    with ragtrail.span("rag-answer", kind="CHAIN") as root:
        resp = client.completions.create(model="tiny", prompt="The capital of France is", max_tokens=6)
    trace_id = format(root.get_span_context().trace_id, "032x")
    _, llm = _client_span(trace_id, store_file)
    tr, server = _wait_for_server_span(store_file, trace_id)
    assert server.parent_span_id == llm.span_id  # the server span hangs under the client span
    assert llm.parent_span_id == tr.root.span_id
    # vLLM's count of the same request matches the client's usage (kept as attributes, not summed twice)
    assert server.attributes[semconv.GEN_AI_USAGE_PROMPT_TOKENS_LEGACY] == resp.usage.prompt_tokens
    assert server.attributes[semconv.GEN_AI_USAGE_COMPLETION_TOKENS_LEGACY] == resp.usage.completion_tokens
    assert server.input_tokens is None
    traces = ragtrail.Client(store_file).traces_df(project=None, limit=50)
    row = traces[traces.trace_id == trace_id].iloc[0]
    assert int(row.input_tokens) == resp.usage.prompt_tokens  # counted once, from the client span

    out = CliRunner().invoke(app, ["traces", "show", trace_id, "--store", store_file])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    at = {name: next(i for i, line in enumerate(lines) if name in line) for name in ("rag-answer", "text_completion tiny", "llm_request")}
    assert at["rag-answer"] < at["text_completion tiny"] < at["llm_request"]
    indent = {k: len(lines[i]) - len(lines[i].lstrip()) for k, i in at.items()}
    assert indent["rag-answer"] < indent["text_completion tiny"] < indent["llm_request"]
    assert receiver.stats()["spans_written"] > 0


def test_async_streaming_completion(vllm_server, traced_openai, store_file):
    async def go() -> tuple[str, list]:
        client = openai.AsyncOpenAI(base_url=vllm_server, api_key="none")
        with ragtrail.span("async-root", kind="CHAIN") as root:
            stream = await client.completions.create(model="tiny", prompt="hello", max_tokens=5, stream=True)
            chunks = [c async for c in stream]
        await client.close()
        return format(root.get_span_context().trace_id, "032x"), chunks

    trace_id, chunks = asyncio.run(go())
    assert all(c.choices for c in chunks)
    _, span = _client_span(trace_id, store_file)
    assert span.attributes[semconv.GEN_AI_OPERATION_NAME] == "text_completion"
    assert span.output_tokens == 5 and span.input_tokens and span.input_tokens > 0
    assert 0 < span.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] <= span.duration_ms / 1000


def test_user_stream_options_are_left_alone(vllm_server, store_file):
    """A caller who passes stream_options gets exactly what they asked for (no usage, no hidden chunk)."""
    from ragtrail.connectors import openai as rt_openai

    ragtrail.init(project="openai-e2e", store=store_file, schedule_delay_ms=50)
    rt_openai.instrument()
    try:
        client = openai.OpenAI(base_url=vllm_server, api_key="none")
        with ragtrail.span("opted-out", kind="CHAIN") as root:
            chunks = list(
                client.chat.completions.create(
                    model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True,
                    stream_options={"include_usage": False},
                )
            )  # fmt: skip
        assert all(c.usage is None for c in chunks)
        _, span = _client_span(format(root.get_span_context().trace_id, "032x"), store_file)
        assert span.input_tokens is None and span.output_tokens is None  # not asked for, not invented
        assert span.attributes[semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] > 0
    finally:
        rt_openai.uninstrument()
        ragtrail.shutdown()


def test_langchain_chat_openai_on_vllm_makes_one_llm_span_and_one_trace(vllm_server, traced_openai, store_file):
    """LangChain's ChatOpenAI → openai client → real vLLM: LangChain's LLM span gets the client's facts,
    no second LLM span, and vLLM's server span hangs under LangChain's span."""
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from ragtrail.connectors.langchain import CallbackHandler

    llm = langchain_openai.ChatOpenAI(model="tiny", base_url=vllm_server, api_key="none", max_tokens=5,
                                      temperature=0)  # fmt: skip
    chain = ChatPromptTemplate.from_messages([("user", "{q}")]) | llm | StrOutputParser()
    with ragtrail.span("lc-root", kind="CHAIN") as root:
        chain.invoke({"q": "hello"}, config={"callbacks": [CallbackHandler()]})
    trace_id = format(root.get_span_context().trace_id, "032x")
    tr, llm_span = _client_span(trace_id, store_file)  # asserts exactly one LLM span
    assert semconv.LANGCHAIN_RUN_ID in llm_span.attributes
    assert llm_span.attributes[semconv.SERVER_ADDRESS] == "127.0.0.1"
    assert llm_span.attributes[semconv.GEN_AI_RESPONSE_ID].startswith("chatcmpl-")
    assert llm_span.output_tokens == 5
    _, server = _wait_for_server_span(store_file, trace_id)
    assert server.parent_span_id == llm_span.span_id
