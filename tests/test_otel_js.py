"""Cross-language check: the official OpenTelemetry JS SDK sends one trace through its OTLP/HTTP protobuf,
OTLP/HTTP JSON and OTLP/gRPC exporters into a real receiver (issue 21).

Needs Node.js and the packages of ``tests/otel_js/package.json``: ``cd tests/otel_js && npm install``
(about a minute), or set ``RAGTRAIL_OTEL_JS_DIR`` to a directory holding those ``node_modules``. With
``RAGTRAIL_OTEL_JS_INSTALL=1`` the test runs ``npm install`` itself. Otherwise it is skipped with that
instruction (see docs/fidelity.md for the manual check).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import ragtrail
from ragtrail.server import Receiver

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent / "otel_js"
JS_KINDS = ["INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"]  # the JS SDK's SpanKind enum order


def _js_dir() -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (needed for the OpenTelemetry JS SDK check)")
    d = Path(os.environ.get("RAGTRAIL_OTEL_JS_DIR", HERE))
    if not (d / "node_modules" / "@opentelemetry" / "sdk-trace-base").is_dir():
        if os.environ.get("RAGTRAIL_OTEL_JS_INSTALL") == "1" and shutil.which("npm"):
            subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=HERE, check=True, timeout=300)
            d = HERE
        else:
            pytest.skip(f"no OpenTelemetry JS SDK in {d}/node_modules: run `cd {HERE} && npm install`")
    if d != HERE:
        shutil.copy(HERE / "send.mjs", d / "send.mjs")
        shutil.copy(HERE / "package.json", d / "package.json")
    return d


@pytest.mark.parametrize("transport", ["proto", "json", "grpc"])
def test_the_otel_js_sdk_arrives_exactly(tmp_path, transport):
    d = _js_dir()
    rec = Receiver(str(tmp_path / "js.db"), http_port=0, grpc_port=0, project="js").start()
    try:
        ep = (f"http://127.0.0.1:{rec.grpc_port}" if transport == "grpc"
              else f"http://127.0.0.1:{rec.http_port}/v1/traces")  # fmt: skip
        out = subprocess.run(["node", "send.mjs", transport, ep], cwd=d, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        sent = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        assert len(sent) == 3
        assert rec.queue.drain(10)
        df = ragtrail.Client(store=rec.store).spans_df()
        got = {r["span_id"]: r for _, r in df.iterrows()}
        for s in sent:
            row = got[s["span_id"]]
            assert row["trace_id"] == s["trace_id"] and row["name"] == s["name"]
            start = s["start"][0] * 10**9 + s["start"][1]
            end = s["end"][0] * 10**9 + s["end"][1]
            assert (row["start_time"].value, row["end_time"].value) == (start, end)  # to the nanosecond
            assert row["span_kind"] == JS_KINDS[s["kind"]]
            assert (row["scope_name"], row["scope_version"]) == ("js.app", "9.8.7")
            assert row["resource"]["service.name"] == f"js-{transport}"
            assert row["resource"]["service.version"] == "3.1.4" and row["resource"]["app.ports"] == [80, 443]
        by_name = {r["name"]: r for r in got.values()}
        llm = by_name["chat gpt-4o-mini"]
        assert llm["kind"] == "LLM" and llm["cost_usd"] == pytest.approx(0.0001602)  # classified, priced
        assert llm["attributes"]["floats"] == [0.5, 1.5] and llm["attributes"]["bools"] == [True, False]
        consume = by_name["consume"]
        assert consume["status"] == "ERROR"
        assert consume["links"] == [
            {"trace_id": llm["trace_id"], "span_id": llm["span_id"], "attributes": {"batch.index": 2}}
        ]
    finally:
        rec.stop()
