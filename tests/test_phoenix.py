"""Interop with a real Arize Phoenix: ragtrail exports over OTLP with ``openinference=True`` and
Phoenix's own client reads the spans back (kinds, parents, token counts, retrieved documents).

Phoenix's dependencies clash with the project's, so it lives in its own virtualenv, ``.venv-phoenix``
(``make phoenix-venv`` or ``bash benchmarks/make_phoenix_venv.sh``). Without it the test is skipped with
that instruction. Phoenix runs on loopback with a temporary working directory and telemetry off.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ragtrail
from ragtrail import semconv
from ragtrail.tracing import record_documents, record_usage, set_content

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PHOENIX_PY = Path(os.environ.get("RAGTRAIL_PHOENIX_PYTHON", ROOT / ".venv-phoenix" / "bin" / "python"))

if not PHOENIX_PY.exists():
    pytest.skip(
        f"no Phoenix environment at {PHOENIX_PY}: create it with `make phoenix-venv` "
        "(bash benchmarks/make_phoenix_venv.sh)",
        allow_module_level=True,
    )

# runs inside .venv-phoenix: Phoenix's own client, printing the spans of one trace as JSON
_READER = """
import json, sys
from phoenix.client import Client
spans = []
try:  # the project named by openinference.project.name on the exported resource
    spans = Client(base_url=sys.argv[1]).spans.get_spans(project_identifier=sys.argv[3], limit=1000)
except Exception as exc:  # a project appears with its first span: poll again
    print(f"not yet: {exc}", file=sys.stderr)
print(json.dumps([s for s in spans if s["context"]["trace_id"] == sys.argv[2]], default=str))
"""


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory) -> Iterator[str]:  # type: ignore[no-untyped-def]
    import httpx

    work = tmp_path_factory.mktemp("phoenix")
    port = _free_port()
    env = dict(os.environ, PHOENIX_WORKING_DIR=str(work), PHOENIX_PORT=str(port), PHOENIX_GRPC_PORT=str(_free_port()),
               PHOENIX_HOST="127.0.0.1", PHOENIX_TELEMETRY_ENABLED="false")  # fmt: skip
    log = open(work / "server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen([str(PHOENIX_PY), "-m", "phoenix.server.main", "serve"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Phoenix exited with {proc.returncode}:\n{(work / 'server.log').read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "Phoenix did not start in 240 s"
            time.sleep(0.5)
        yield base
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _read_back(base: str, trace_id: str, n: int, project: str = "phoenix-interop") -> list[dict]:
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run([str(PHOENIX_PY), "-c", _READER, base, trace_id, project], capture_output=True, text=True,
                             timeout=120, check=True)  # fmt: skip
        spans = json.loads(out.stdout)
        if len(spans) >= n or time.monotonic() > deadline:
            return spans
        time.sleep(1)


def test_phoenix_renders_ragtrail_spans_natively(phoenix, tmp_path):
    # as in an app (or a test suite) where a TracerProvider already exists with another service.name:
    # the spans must still land in the Phoenix project named after this init's project
    ragtrail.init(project="an-earlier-project", store=str(tmp_path / "earlier.db"))
    ragtrail.shutdown()
    ragtrail.init(project="phoenix-interop", store=str(tmp_path / "l.db"), otlp_endpoint=phoenix,
                  openinference=True, schedule_delay_ms=50)  # fmt: skip
    try:
        with ragtrail.span("rag-answer", kind="CHAIN", input={"question": "what is OTLP?"}) as root:
            with ragtrail.span(
                "embed-query", kind="EMBEDDING", attributes={semconv.EMBEDDING_MODEL: "all-MiniLM-L6-v2"}
            ):
                pass
            with ragtrail.span("search", kind="RETRIEVER", attributes={semconv.GEN_AI_RETRIEVAL_QUERY_TEXT: "what is OTLP?"}) as r:
                record_documents(r, [{"id": "doc-1", "score": 0.91, "content": "OTLP is the OpenTelemetry protocol."},
                                     {"id": "doc-2", "score": 0.42, "content": "Unrelated."}])  # fmt: skip
            with ragtrail.span("chat gpt-4o-mini", kind="LLM") as llm:
                set_content(llm, semconv.GEN_AI_INPUT_MESSAGES, [{"role": "user", "content": "what is OTLP?"}])
                set_content(llm, semconv.GEN_AI_OUTPUT_MESSAGES, [{"role": "assistant", "content": "A protocol."}])
                record_usage(llm, provider="openai", model="gpt-4o-mini", input_tokens=120, output_tokens=9)
            set_content(root, semconv.OUTPUT_VALUE, "A protocol.")
        assert ragtrail.flush(15)
    finally:
        ragtrail.shutdown()
    trace_id = format(root.get_span_context().trace_id, "032x")
    # in the Phoenix project named after the ragtrail project (openinference.project.name on the resource)
    spans = _read_back(phoenix, trace_id, 4)
    by = {s["name"]: s for s in spans}
    assert set(by) == {"rag-answer", "embed-query", "search", "chat gpt-4o-mini"}
    assert {n: s["span_kind"] for n, s in by.items()} == {
        "rag-answer": "CHAIN", "embed-query": "EMBEDDING", "search": "RETRIEVER", "chat gpt-4o-mini": "LLM",
    }  # fmt: skip
    root_id = by["rag-answer"]["context"]["span_id"]
    assert by["rag-answer"]["parent_id"] is None
    assert all(by[n]["parent_id"] == root_id for n in ("embed-query", "search", "chat gpt-4o-mini"))
    llm = by["chat gpt-4o-mini"]["attributes"]
    assert llm["llm.token_count.prompt"] == 120
    assert llm["llm.token_count.completion"] == 9
    assert llm["llm.token_count.total"] == 129
    assert llm["llm.model_name"] == "gpt-4o-mini"
    ret = by["search"]["attributes"]
    docs = ret.get("retrieval.documents")
    if docs is None:  # flattened form
        docs = [{"document.id": ret[f"retrieval.documents.{i}.document.id"],
                 "document.score": ret[f"retrieval.documents.{i}.document.score"]} for i in range(2)]  # fmt: skip
    assert [d["document.id"] for d in docs] == ["doc-1", "doc-2"]
    assert [round(d["document.score"], 2) for d in docs] == [0.91, 0.42]
    assert by["embed-query"]["attributes"]["embedding.model_name"] == "all-MiniLM-L6-v2"
