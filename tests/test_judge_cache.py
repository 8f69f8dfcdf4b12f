"""The judge cache: content-addressed keys, persistence across processes, concurrent writers.

The judge's answers are the only fake (``ScriptedJudge`` from test_judge, a LangChain chat model
whose replies come from a script); the cache lives in real SQLite files and on the real PostgreSQL
server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from ragtrail.evals import Example, Judge, JudgeCache, scorers
from ragtrail.evals._judge_cache import cache_key
from ragtrail.store import open_store
from tests.test_judge import EX, OUT, scripted

ROOT = Path(__file__).resolve().parents[1]
REPLY = '{"verdict":"relevant"}'


def run_scorer(cache: Any, *, temperature: float = 0.0, template: str | None = None, version: str | None = None,
               examples: list[Example] | None = None) -> tuple[Any, list[Any]]:  # fmt: skip
    model = scripted(REPLY)
    sc = scorers.answer_relevance(judge=Judge(model, cache=cache, temperature=temperature), explain=False,
                                  **({"user_template": template} if template else {}))  # fmt: skip
    if version:
        sc.version = version
    out = [sc.score(e, OUT, None) for e in (examples or [EX])]
    return model, out


def test_identical_rerun_makes_no_calls_and_reports_hits(store_path: str) -> None:
    exs = [Example(id=str(i), input=f"q{i}") for i in range(4)]
    m1, first = run_scorer(store_path, examples=exs)
    assert len(m1.calls) == 4 and not any(s.details["judge"]["cached"] for s in first)
    m2, second = run_scorer(store_path, examples=exs)  # a new chat model object and a new Judge
    assert m2.calls == []
    assert all(s.details["judge"]["cached"] for s in second)
    assert [s.value for s in second] == [s.value for s in first]
    assert [s.details["judge"]["raw"] for s in second] == [s.details["judge"]["raw"] for s in first]


@pytest.mark.parametrize(
    "change",
    [
        {"template": "QUESTION:\n{question}\n\nANSWER:\n{answer}."},  # one character more
        {"version": "2"},
        {"temperature": 0.1},
    ],
)
def test_template_version_or_temperature_change_misses(store_path: str, change: dict[str, Any]) -> None:
    run_scorer(store_path)
    m, out = run_scorer(store_path, **change)
    assert len(m.calls) == 1 and out[0].details["judge"]["cached"] is False
    m_again, _ = run_scorer(store_path, **change)
    assert m_again.calls == []  # and the changed variant is now cached too


def test_cache_key_covers_every_input() -> None:
    base: dict[str, Any] = dict(model_id="p/m", messages=[{"role": "user", "content": "hi"}],  # noqa: C408
                                params={"temperature": 0.0, "seed": 0, "max_tokens": 10}, schema={"type": "object"},
                                method="json_schema", scorer="s", scorer_version="1", trial=0)  # fmt: skip
    k = cache_key(**base)
    assert k == cache_key(**json.loads(json.dumps(base)))  # stable, canonical
    variants = [
        {"model_id": "p/m2"}, {"messages": [{"role": "user", "content": "hi!"}]},
        {"params": {"temperature": 0.0, "seed": 1, "max_tokens": 10}}, {"schema": {"type": "object", "x": 1}},
        {"method": "prompt"}, {"scorer": "t"}, {"scorer_version": "2"}, {"trial": 1},
    ]  # fmt: skip
    keys = {cache_key(**{**base, **v}) for v in variants}
    assert k not in keys and len(keys) == len(variants)


_CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from tests.test_judge import EX, OUT, scripted
from ragtrail.evals import Judge, scorers
model = scripted('{"verdict":"relevant"}')
s = scorers.answer_relevance(judge=Judge(model, cache=sys.argv[1]), explain=False).score(EX, OUT, None)
print(json.dumps({"calls": len(model.calls), "value": s.value, "cached": s.details["judge"]["cached"]}))
"""


def test_rerun_in_a_new_process_makes_no_calls(store_path: str) -> None:
    def child() -> dict[str, Any]:
        out = subprocess.run([sys.executable, "-c", _CHILD, store_path, str(ROOT)], capture_output=True, text=True,
                             timeout=120, cwd=str(ROOT))  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    assert child() == {"calls": 1, "value": 1.0, "cached": False}
    assert child() == {"calls": 0, "value": 1.0, "cached": True}


def _hammer(cache: JudgeCache, key: str, n: int, errors: list[BaseException]) -> None:
    try:
        for i in range(n):
            cache.put(key, {"raw": [f"writer value {i}"]})
            cache.put(f"{key}-{threading.get_ident()}-{i}", {"raw": ["x"]})
            assert cache.get(key) is not None
    except BaseException as exc:  # noqa: BLE001 - reported by the test
        errors.append(exc)


def _concurrent_writers(url: str) -> None:
    cache = JudgeCache(url)
    errors: list[BaseException] = []
    threads = [threading.Thread(target=_hammer, args=(cache, "same-key", 20, errors)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and cache.stats.errors == 0
    rows = open_store(url).query("SELECT COUNT(*) FROM judge_cache WHERE key = ?", ("same-key",))
    assert rows[0][0] == 1
    assert len(cache) == 1 + 6 * 20
    first = cache.get("same-key")
    assert first is not None and first["raw"][0].startswith("writer value")


def test_concurrent_writers_sqlite(store_path: str) -> None:
    _concurrent_writers(store_path)


@pytest.mark.postgres
def test_concurrent_writers_and_rerun_postgres(pg_url: str) -> None:
    _concurrent_writers(pg_url)
    m1, _ = run_scorer(pg_url)
    m2, out = run_scorer(pg_url)
    assert len(m1.calls) == 1 and m2.calls == [] and out[0].details["judge"]["cached"] is True


_PROC = r"""
import sys
sys.path.insert(0, sys.argv[2])
from ragtrail.evals import JudgeCache
c = JudgeCache(sys.argv[1])
for i in range(30):
    c.put("shared", {"raw": ["p" + sys.argv[3]]})
    c.put("k-" + sys.argv[3] + "-" + str(i), {"raw": ["x"]})
assert c.stats.errors == 0, c.stats
"""


def test_concurrent_processes_share_one_sqlite_cache(store_path: str) -> None:
    open_store(store_path)  # migrate once up front
    procs = [subprocess.Popen([sys.executable, "-c", _PROC, store_path, str(ROOT), str(i)], cwd=str(ROOT),
                              env=dict(os.environ)) for i in range(3)]  # fmt: skip
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert len(JudgeCache(store_path)) == 1 + 3 * 30


def test_default_cache_is_the_store_of_ragtrail_init(traced: Any) -> None:
    model = scripted(REPLY)
    sc = scorers.answer_relevance(judge=Judge(model), explain=False)  # cache=True: the default
    sc.score(EX, OUT, None)
    assert open_store(traced.store_path).query("SELECT COUNT(*) FROM judge_cache")[0][0] == 1


def test_judges_and_scorers_pickle_for_worker_processes(store_path: str) -> None:
    """Ray workers and process pools receive scorers pickled: the judge's limiter, locks and store
    connections are rebuilt on the other side, and the cache still hits there."""
    import pickle

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    judge = Judge(FakeListChatModel(responses=[REPLY]), cache=store_path, max_concurrency=3)
    sc = scorers.answer_relevance(judge=judge, explain=False)
    first = sc.score(EX, OUT, None)
    clone = pickle.loads(pickle.dumps(sc))
    again = clone.score(EX, OUT, None)
    assert again.value == first.value and again.details["judge"]["cached"] is True
    assert clone.judge.limiter.max_concurrency == 3 and clone.judge is not judge
    spec = scorers.faithfulness(judge={"model": "openai:tiny", "base_url": "http://127.0.0.1:9/v1", "api_key": "x"})
    assert spec.params["judge"]["model"] == "openai/tiny"  # builds the judge (and its unpicklable client)
    assert pickle.loads(pickle.dumps(spec)).judge.model_id == "openai/tiny"  # rebuilt from the spec
