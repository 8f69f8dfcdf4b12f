"""LLM judges against a real vLLM OpenAI-compatible server on CPU (recipes/vllm-on-cpu.md).

The judge model is the tiny, randomly initialised byte-level Llama of ``tests/_tiny_model.py``: its
weights are random, so without guided decoding it writes garbage, and with the JSON schema in the
request (vLLM's guided decoding, xgrammar, no free whitespace) every bare verdict parses. One server
per module; it is stopped with SIGTERM to its process group at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks._judge_server import VLLMServer
from ragtrail.evals import Example, Judge, scorers
from tests._tiny_model import tiny_llama_dir  # noqa: F401 - the session fixture

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]

EXAMPLES = [
    Example(id=f"q{i}", input=q, reference=r)
    for i, (q, r) in enumerate([
        ("Where is the Eiffel Tower?", "In Paris."),
        ("What colour is a ripe banana?", "Yellow."),
        ("How many legs does a spider have?", "Eight."),
        ("What does a thermometer measure?", "Temperature."),
    ])
]  # fmt: skip
OUTPUTS = [
    {"answer": "It is in Paris.", "contexts": ["The Eiffel Tower stands in Paris.", "Paris is in France."]},
    {"answer": "Yellow.", "contexts": ["Ripe bananas are yellow."]},
    {"answer": "Six.", "contexts": ["Spiders have eight legs.", "Insects have six legs.", "Legs are limbs."]},
    {"answer": "Time.", "contexts": ["A thermometer measures temperature."]},
]


@pytest.fixture(scope="module")
def vllm_server(tiny_llama_dir: str) -> Iterator[VLLMServer]:  # noqa: F811 - the imported fixture
    server = VLLMServer(tiny_llama_dir, served_name="tiny")
    server.start(timeout_s=600)
    try:
        yield server
    finally:
        server.stop()


def chat(server: VLLMServer) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="tiny", base_url=server.base_url, api_key="none", max_retries=0)


def all_scorers(judge: Judge, explain: bool) -> list[Any]:
    return [
        scorers.answer_relevance(judge=judge, explain=explain),
        scorers.correctness(judge=judge, explain=explain),
        scorers.context_relevance(judge=judge, explain=explain),
        scorers.rubric("The answer is concise and correct.", judge=judge, explain=explain),
        scorers.faithfulness(judge=judge, explain=explain, max_claims=4, claim_chars=60),
    ]


def test_guided_decoding_bare_verdicts_all_parse(vllm_server: VLLMServer, store_path: str) -> None:
    judge = Judge(chat(vllm_server), cache=store_path, max_tokens=512)
    assert judge.method == "json_schema"  # the schema travels in the request
    for sc in all_scorers(judge, explain=False):
        for ex, out in zip(EXAMPLES, OUTPUTS):
            s = sc.score(ex, out, None)
            assert s.status in ("ok", "undefined"), (sc.name, s.reason, s.details)
            if sc.name == "faithfulness" and s.status == "undefined":
                assert s.details["claims"] == []  # the only way it can be undefined here
                continue
            assert s.status == "ok" and 0.0 <= s.value <= 1.0  # type: ignore[operator]
            raw = s.details["judge"]["raw"]
            assert len(raw) == 1 and json.loads(raw[0]) == s.details["judge"]["verdict"]
            assert s.details["judge"]["usage"]["input_tokens"] > 0  # usage from the server


def test_guided_via_extra_body_parses(vllm_server: VLLMServer) -> None:
    judge = Judge(chat(vllm_server), cache=False, method="guided", max_tokens=64)
    s = scorers.correctness(judge=judge, explain=False).score(EXAMPLES[0], OUTPUTS[0], None)
    assert s.status == "ok" and s.details["verdict"] in ("correct", "partially_correct", "incorrect")
    assert s.details["judge"]["method"] == "guided"


def test_without_guided_decoding_garbage_is_error_scores_and_the_run_completes(vllm_server: VLLMServer) -> None:
    judge = Judge(chat(vllm_server), cache=False, method="prompt", max_tokens=48, max_repairs=1)
    results = [sc.score(ex, out, None) for sc in all_scorers(judge, explain=True) for ex, out in zip(EXAMPLES, OUTPUTS)]
    assert len(results) == 5 * len(EXAMPLES)
    errors = [s for s in results if s.status == "error"]
    assert len(errors) >= 0.9 * len(results)  # random weights: (almost) nothing parses
    for s in results:
        assert s.status in ("error", "ok", "undefined")
        if s.status != "ok":
            assert s.value is None
    for s in errors:
        raw = s.details["judge"]["raw"]
        assert raw and all(isinstance(r, str) for r in raw) and len(raw) == 2  # both attempts kept
        assert s.reason and ("not JSON" in s.reason or "schema" in s.reason)


_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[3])
from langchain_openai import ChatOpenAI
from ragtrail.evals import Judge, scorers
from tests.test_judge_vllm import EXAMPLES, OUTPUTS
model = ChatOpenAI(model="tiny", base_url=sys.argv[1], api_key="none", max_retries=0)
judge = Judge(model, cache=sys.argv[2], max_tokens=512)
vals = []
for sc in [scorers.answer_relevance(judge=judge, explain=False), scorers.context_relevance(judge=judge, explain=False)]:
    vals += [[s.status, s.value, s.details["judge"]["cached"]] for s in (sc.score(e, o, None) for e, o in zip(EXAMPLES, OUTPUTS))]
print(json.dumps({"values": vals, "calls": judge.calls, "hits": judge.cache_hits}))
"""


def test_rerun_in_a_new_process_with_a_new_model_makes_no_requests(vllm_server: VLLMServer, tmp_path: Any) -> None:
    cache = str(tmp_path / "judge-cache.db")

    def child() -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-c", _CHILD, vllm_server.base_url, cache, str(ROOT)],
                             capture_output=True, text=True, timeout=300, cwd=str(ROOT))  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    before = vllm_server.chat_requests()
    first = child()
    middle = vllm_server.chat_requests()
    second = child()
    after = vllm_server.chat_requests()
    n = 2 * len(EXAMPLES)
    assert first["calls"] == n and middle - before == n
    assert second["calls"] == 0 and second["hits"] == n
    assert after == middle  # the server saw no request at all
    assert [v[:2] for v in second["values"]] == [v[:2] for v in first["values"]]
    assert all(v[2] for v in second["values"])
