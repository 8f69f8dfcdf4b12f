"""The Ray backend of the eval harness, on a real local Ray (2 CPUs, one Ray session for the module).

The pipeline is plain Python that records a RETRIEVER span (read back by the retrieval scorers) and
draws its answer from a seeded RNG, so the local and the Ray backend must agree score for score.
Each pipeline call appends a line to a per-example file, so the tests count calls across worker
processes. No LLM is involved.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

import ragtrail  # noqa: E402
from ragtrail import semconv  # noqa: E402
from ragtrail.evals import Dataset, Evaluation, RayBackend, load_run, scorers  # noqa: E402

pytestmark = pytest.mark.slow

N = 12


@pytest.fixture(scope="module", autouse=True)
def ray_session() -> Any:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def pipeline(question: str, config: dict[str, Any]) -> dict[str, Any]:
    """Deterministic for a given seed; counts calls in files; dies or fails on request."""
    calls = Path(config["calls_dir"])
    ex = question.split()[1]
    with open(calls / f"q{ex}", "a") as f:
        f.write(f"{os.getpid()}\n")
    if config.get("die_on") == f"q{ex}" and not (calls / "died").exists():
        (calls / "died").write_text("1")
        os._exit(1)  # the Ray worker process dies mid-task, like an OOM kill
    if (calls / "broken").exists() and f"q{ex}" in config.get("fail_on", ()):
        raise RuntimeError(f"backend unavailable for q{ex}")
    rng = random.Random(f"{config['seed']}:{ex}")
    docs = [f"d{rng.randrange(20)}" for _ in range(4)]
    with ragtrail.span("retrieve", kind=semconv.RETRIEVER) as s:
        ragtrail.record_documents(s, [{"id": d, "score": 1.0 / (i + 1)} for i, d in enumerate(docs)])
    words = ["alpha", "beta", "gamma", "delta", "answer", ex]
    return {"answer": " ".join(rng.choice(words) for _ in range(4)), "contexts": docs}


def dataset() -> Dataset:
    rng = random.Random(3)
    rel = [dict.fromkeys((f"d{rng.randrange(20)}", f"d{rng.randrange(20)}"), 1) for _ in range(N)]
    return Dataset.from_records(
        [{"id": f"q{i}", "input": f"question {i}", "reference": f"answer {i}", "relevant": rel[i]} for i in range(N)],
        name="ray-qa",
    )


def n_chars(example: Any, output: Any, trace: Any) -> float:
    return float(len(output["answer"]))


def evaluation(store: str, name: str, **kw: Any) -> Evaluation:
    return Evaluation(name, dataset(), pipeline,
                      [scorers.recall_at_k(3), scorers.ndcg_at_k(4), scorers.token_f1(), n_chars],
                      store=store, progress=False, **kw)  # fmt: skip


def results(run: Any) -> dict[tuple[str, str], tuple[Any, str, Any]]:
    return {(r["example_id"], r["scorer"]): (r["score"], r["status"], r["reason"]) for r in run.results()}


def calls(d: Path) -> dict[str, int]:
    return {p.name: len(p.read_text().split()) for p in d.iterdir() if p.name.startswith("q")}


def worker_pids(d: Path) -> set[int]:
    return {int(x) for p in d.iterdir() if p.name.startswith("q") for x in p.read_text().split()}


@pytest.fixture
def baseline(tmp_path: Path, traced: Any) -> dict[tuple[str, str], tuple[Any, str, Any]]:
    d = tmp_path / "local_calls"
    d.mkdir()
    run = evaluation(traced.store_path, "local").run({"seed": 7, "calls_dir": str(d)})
    assert run.status == "finished" and run.summary["n_examples"] == N
    res = results(run)
    assert len(res) == N * 4 and all(st == "ok" for _v, st, _r in res.values())
    return res


def test_ray_backend_equals_local_backend(tmp_path: Path, traced: Any, baseline: Any) -> None:
    d = tmp_path / "ray_calls"
    d.mkdir()
    run = evaluation(traced.store_path, "remote").run(
        {"seed": 7, "calls_dir": str(d)}, backend=RayBackend(chunk_size=2)
    )
    assert run.status == "finished"
    assert run.summary["pipeline_calls"] == N and run.summary["ray_tasks"] == N // 2
    assert run.lineage["backend"] == "ray"
    assert results(run) == baseline
    assert calls(d) == {f"q{i}": 1 for i in range(N)}
    assert os.getpid() not in worker_pids(d)  # the pipeline ran in Ray worker processes
    # the workers traced into the same store: every result's trace is there, with its retriever span
    client = traced.client()
    tids = {r["trace_id"] for r in run.results()}
    assert len(tids) == N
    spans = client.spans_df()
    mine = spans[spans.trace_id.isin(tids)]
    assert set(mine[mine.kind == semconv.RETRIEVER].trace_id) == tids
    assert (mine[mine.parent_span_id.isna()].attributes.map(lambda a: a[semconv.EVAL_RUN_ID]) == run.run_id).all()


def test_worker_killed_mid_task_reruns_only_its_unfinished_examples(tmp_path: Path, traced: Any, baseline: Any) -> None:
    d = tmp_path / "kill_calls"
    d.mkdir()
    ev = evaluation(traced.store_path, "killed", max_concurrency=1)
    run = ev.run({"seed": 7, "calls_dir": str(d), "die_on": "q4"}, backend=RayBackend(chunk_size=3))
    assert (d / "died").exists()
    assert run.status == "finished"
    assert results(run) == baseline
    # q4 died mid-task: its task [q3, q4, q5] was retried; q3 was committed before, so only q4 ran twice
    assert calls(d) == {f"q{i}": 2 if i == 4 else 1 for i in range(N)}


def test_resume_with_ray_reruns_only_missing_and_errored_examples(tmp_path: Path, traced: Any, baseline: Any) -> None:
    from ragtrail.store import open_store

    d = tmp_path / "resume_calls"
    d.mkdir()
    (d / "broken").write_text("1")
    cfg = {"seed": 7, "calls_dir": str(d), "fail_on": ["q1", "q2"]}
    first = evaluation(traced.store_path, "resumed").run(cfg, backend="ray")
    assert first.summary["n_error"] == 2
    # simulate an interrupted run: q7 never committed, q8 lost one score (its worker died before scoring)
    st = open_store(traced.store_path)
    with st.transaction() as cur:
        cur.execute("DELETE FROM run_examples WHERE run_id = ? AND example_id = 'q7'", (first.run_id,))
        cur.execute("DELETE FROM run_results WHERE run_id = ? AND example_id = 'q7'", (first.run_id,))
        cur.execute("DELETE FROM run_results WHERE run_id = ? AND example_id = 'q8' AND scorer = 'token_f1'",
                    (first.run_id,))  # fmt: skip
    (d / "broken").unlink()
    run = evaluation(traced.store_path, "resumed").run(cfg, resume=first.ref, backend="ray")
    assert run.ref == first.ref and run.status == "finished"
    assert results(run) == baseline
    assert calls(d) == {f"q{i}": 2 if i in (1, 2, 7) else 1 for i in range(N)}
    assert run.summary["pipeline_calls"] == 3
    assert load_run(traced.store_path, first.ref).lineage["resumes"][-1]["backend"] == "ray"


def test_unpicklable_pipeline_is_a_clear_error(traced: Any) -> None:
    import threading

    from ragtrail._exceptions import ConfigError

    lock = threading.Lock()

    def pipe(q: str) -> str:
        with lock:
            return q

    ev = Evaluation("unpicklable", dataset(), pipe, [scorers.token_f1()], store=traced.store_path, progress=False)
    with pytest.raises(ConfigError, match="cannot be pickled"):
        ev.run(backend="ray")


APP = """
import os
import ragtrail
from ragtrail import semconv

def answer(question, config):
    with ragtrail.span("search", kind=semconv.RETRIEVER) as s:
        ragtrail.record_documents(s, [{"id": "d1"}, {"id": "d9"}][: config["top_k"]])
    with open(config["pids"], "a") as f:
        f.write(f"{os.getpid()}\\n")
    return "Paris"
"""


def test_cli_eval_run_backend_ray(tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from ragtrail.cli import app
    from ragtrail.tracing import get_config

    (tmp_path / "my_ray_app.py").write_text(APP)
    rows = [("a", "capital of France?", "Paris", "d1"), ("b", "capital of Peru?", "Lima", "d7")]
    (tmp_path / "qa.jsonl").write_text(
        "".join(json.dumps({"id": i, "question": q, "answer": a, "relevant": {d: 1}}) + "\n" for i, q, a, d in rows)
    )
    pids = tmp_path / "pids.txt"
    (tmp_path / "eval.yaml").write_text(
        "name: capitals\n"
        "dataset: {path: qa.jsonl, fields: {input: question, reference: answer}}\n"
        "pipeline: my_ray_app:answer\n"
        "scorers: [{recall_at_k: {k: 1}}, exact_match]\n"
        f"config: {{top_k: 2, pids: {json.dumps(str(pids))}}}\n"
    )
    store = str(tmp_path / "cli.db")
    try:
        r = CliRunner().invoke(
            app, ["eval", "run", str(tmp_path / "eval.yaml"), "-s", store, "--backend", "ray", "--no-progress"]
        )
    finally:
        if get_config() is not None:
            ragtrail.shutdown()
    assert r.exit_code == 0, r.output
    run = load_run(store, "capitals:v1")
    assert run.lineage["backend"] == "ray" and run.summary["pipeline_calls"] == 2
    assert run.metrics == {"recall@1": 0.5, "exact_match": 0.5}
    assert os.getpid() not in {int(x) for x in pids.read_text().split()}


def test_ray_backend_on_postgres_equals_local(tmp_path: Path, traced: Any, baseline: Any, pg_url: str) -> None:
    """The workers write results and spans into a shared PostgreSQL store."""
    d = tmp_path / "pg_calls"
    d.mkdir()
    run = evaluation(pg_url, "on-pg").run({"seed": 7, "calls_dir": str(d)}, backend="ray")
    assert run.status == "finished" and results(run) == baseline
    tids = {r["trace_id"] for r in run.results()}
    spans = ragtrail.Client(pg_url).spans_df()
    assert set(spans[spans.kind == semconv.RETRIEVER].trace_id) == tids


def test_ray_workers_trace_to_an_otlp_receiver(tmp_path: Path, traced: Any, baseline: Any) -> None:
    """Spans go over OTLP/HTTP to a `ragtrail serve` receiver (its own store); results to the store."""
    from ragtrail.server import Receiver

    d = tmp_path / "otlp_calls"
    d.mkdir()
    rec = Receiver(str(tmp_path / "received.db"), http_port=0, grpc_port=0, project="recv").start()
    try:
        backend = RayBackend(otlp_endpoint=f"http://127.0.0.1:{rec.http_port}", trace_to_store=False)
        run = evaluation(traced.store_path, "via-otlp").run({"seed": 7, "calls_dir": str(d)}, backend=backend)
        assert rec.queue.drain(30)
        got = {
            r[0] for r in rec.store.query("SELECT DISTINCT trace_id FROM spans WHERE kind = ?", (semconv.RETRIEVER,))
        }
    finally:
        rec.stop()
    assert run.status == "finished" and results(run) == baseline
    tids = {r["trace_id"] for r in run.results()}
    assert got == tids
    local = traced.client().spans_df()
    assert not set(local.trace_id) & tids  # not written into the results store


def judged(example: Any, output: Any, trace: Any) -> Any:
    """A scorer that costs $0.01 per example (like an LLM judge), so that max_cost has something to count."""
    from ragtrail.evals import Score

    return Score.ok(float(len(output["contexts"])), cost_usd=0.01)


def test_max_cost_stops_cleanly_on_ray_and_resume_finishes(tmp_path: Path, traced: Any) -> None:
    d = tmp_path / "cost_calls"
    d.mkdir()
    cfg = {"seed": 7, "calls_dir": str(d)}

    def ev() -> Evaluation:
        return Evaluation("costly", dataset(), pipeline, [scorers.token_f1(), judged], store=traced.store_path,
                          progress=False, max_concurrency=1)  # fmt: skip

    backend = RayBackend(chunk_size=2, max_in_flight=1)
    first = ev().run(cfg, backend=backend, max_cost=0.03)
    assert first.status == "stopped" and "max_cost" in first.summary["stopped_reason"]
    # task 1 spent $0.02; task 2 got the $0.01 left and stopped after one example; nothing more was sent
    assert sum(calls(d).values()) == 3
    run = ev().run(cfg, resume=first.ref, backend=backend)
    assert run.status == "finished" and run.ref == first.ref
    assert calls(d) == {f"q{i}": 1 for i in range(N)}
    assert all(st == "ok" for _v, st, _r in results(run).values()) and len(results(run)) == 2 * N


@pytest.mark.parametrize("kw", [{"chunk_size": 0}, {"max_in_flight": -1}, {"max_retries": -2}, {"num_cpus": -1}])
def test_bad_ray_backend_options_are_config_errors(kw: dict[str, Any]) -> None:
    from ragtrail._exceptions import ConfigError

    with pytest.raises(ConfigError, match="RayBackend"):
        RayBackend(**kw)


# ------------------------------------------------------------------------------------- LangChain
_CHAIN: list[Any] = []


def lc_chain() -> Any:
    """A real LCEL chain: a BaseRetriever, a prompt, a chat model and a parser. Only the chat
    model's answer is scripted (it repeats the question's number)."""
    if _CHAIN:
        return _CHAIN[0]
    from langchain_core.documents import Document
    from langchain_core.language_models.chat_models import SimpleChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import RunnablePassthrough

    class Keyword(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            i = int(query.split()[1])
            return [
                Document(page_content=f"text {j}", metadata={"doc_id": f"d{j}"}) for j in (i * 7 % 20, i * 3 % 20, i)
            ]

    class Echo(SimpleChatModel):
        def _call(self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any) -> str:
            return "answer " + str(messages[-1].content).split()[-1]

        @property
        def _llm_type(self) -> str:
            return "echo"

    prompt = ChatPromptTemplate.from_template("{context}\nquestion {question}")
    fmt = Keyword() | (lambda docs: " ".join(d.page_content for d in docs))
    chain = {"context": fmt, "question": RunnablePassthrough()} | prompt | Echo() | StrOutputParser()
    _CHAIN.append(chain)
    return chain


def lc_pipeline(question: str) -> str:
    return str(lc_chain().invoke(question))


def test_langchain_pipeline_instrumented_in_the_driver_is_traced_on_the_workers(tmp_path: Path, traced: Any) -> None:
    """The retrieval scorers read the RETRIEVER spans of the LangChain connector: on Ray they exist
    only if the workers instrument LangChain like the driver did."""
    from ragtrail.connectors import langchain as lc

    sc = [scorers.recall_at_k(3), scorers.ndcg_at_k(3), scorers.token_f1()]
    lc.instrument()
    try:
        local = Evaluation("lc-local", dataset(), lc_pipeline, sc, store=traced.store_path, progress=False).run()
        remote = Evaluation("lc-ray", dataset(), lc_pipeline, sc, store=traced.store_path, progress=False).run(
            backend=RayBackend(chunk_size=4)
        )
    finally:
        lc.uninstrument()
    assert results(remote) == results(local)
    assert {st for _v, st, _r in results(remote).values()} <= {"ok"}
    assert any(v for (_e, s), (v, _st, _r) in results(remote).items() if s.startswith("recall"))


# ------------------------------------------------------------------------------------- PostgreSQL: credentials, connections
def probe_pipeline(question: str, config: dict[str, Any]) -> dict[str, Any]:
    """``pipeline``, and a note per worker process of whether its store got the password (by any route)."""
    import hashlib
    from urllib.parse import urlparse

    from ragtrail.evals import _ray_worker as worker_side

    pws = [urlparse(str(getattr(st, "_dsn", ""))).password for st in worker_side._stores.values()]
    pws.append(os.environ.get("PGPASSWORD"))
    got = config["secret_sha"] in {hashlib.sha256(p.encode()).hexdigest() for p in pws if p}
    (Path(config["calls_dir"]) / f"secret-{os.getpid()}").write_text(str(got))
    return pipeline(question, config)


def test_store_password_never_travels_in_task_arguments(
    tmp_path: Path, traced: Any, baseline: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every argument and option the driver gives Ray for the tasks is serialised and searched for the
    password; the workers still get it (here through Ray's object store: the test initialised Ray)."""
    import hashlib
    import uuid

    from ray import cloudpickle

    from ragtrail.evals import _ray as ray_backend

    secret = "s3cret-" + uuid.uuid4().hex[:8]  # the test server trusts 127.0.0.1: any password logs in
    url = pg_url.replace("postgres@", f"postgres:{secret}@", 1)
    assert secret in url
    sha = hashlib.sha256(secret.encode()).hexdigest()  # the probe pipeline's config must not hold the password
    sent: list[bytes] = []
    real_remote = ray.remote

    class Spy:
        def __init__(self, rf: Any) -> None:
            self.rf = rf

        def options(self, **kw: Any) -> Spy:
            sent.append(cloudpickle.dumps(kw))
            return Spy(self.rf.options(**kw))

        def remote(self, *args: Any, **kw: Any) -> Any:
            sent.append(cloudpickle.dumps((args, kw)))
            return self.rf.remote(*args, **kw)

    def spy_remote(*args: Any, **kw: Any) -> Any:
        rf = real_remote(*args, **kw)
        return Spy(rf) if args and args[0] is ray_backend._run_chunk else rf

    monkeypatch.setattr(ray, "remote", spy_remote)
    d = tmp_path / "secret_calls"
    d.mkdir()
    run = Evaluation("secret", dataset(), probe_pipeline,
                     [scorers.recall_at_k(3), scorers.ndcg_at_k(4), scorers.token_f1(), n_chars],
                     store=url, progress=False).run({"seed": 7, "calls_dir": str(d), "secret_sha": sha},
                                                     backend=RayBackend(chunk_size=3))  # fmt: skip
    assert run.status == "finished" and results(run) == baseline
    assert len(sent) >= 1 + N // 3  # the options once, then every task's arguments
    assert not [b for b in sent if secret.encode() in b]
    assert any(b"postgres@127.0.0.1" in b for b in sent)  # the URL went, without its password
    notes = [p.read_text() for p in d.iterdir() if p.name.startswith("secret-")]
    assert notes and set(notes) == {"True"}


def dataset_of(n: int) -> Dataset:
    return Dataset.from_records([{"id": f"q{i}", "input": f"question {i}", "reference": f"answer {i}"} for i in range(n)],
                                name=f"ray-qa-{n}")  # fmt: skip


def test_store_connections_per_worker_are_bounded_reused_and_closed_after_the_run(
    tmp_path: Path, traced: Any, pg_url: str
) -> None:
    """40 tasks of one example each at max_concurrency=8: connections are reused across tasks, so the
    server never sees more than (max_concurrency + 3) per worker process plus the driver's, in total
    over the whole run, and the workers close theirs once the run is over. (Before, every task left
    its thread pool's connections open: 40 tasks left >= 40.)"""
    import threading
    import time
    import uuid

    import psycopg

    app = "rt-ray-" + uuid.uuid4().hex[:8]  # counts only this test's connections on the shared server
    url = f"{pg_url}&application_name={app}"
    seen: set[int] = set()
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            while not stop.is_set():
                pids = [r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                                                   (app,)).fetchall()]  # fmt: skip
                seen.update(pids)
                peak[0] = max(peak[0], len(pids))
                time.sleep(0.02)

    d = tmp_path / "bounded_calls"
    d.mkdir()
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        run = Evaluation("bounded", dataset_of(40), pipeline, [n_chars], store=url, progress=False,
                         max_concurrency=8).run({"seed": 7, "calls_dir": str(d)},
                                                backend=RayBackend(chunk_size=1, idle_close_s=0.5))  # fmt: skip
        assert run.status == "finished" and run.summary["ray_tasks"] == 40 and run.summary["pipeline_calls"] == 40
        deadline = time.monotonic() + 20
        with psycopg.connect(pg_url, autocommit=True) as conn:
            q = "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            while (left := conn.execute(q, (app,)).fetchone()[0]) > 1 and time.monotonic() < deadline:  # type: ignore[index]
                time.sleep(0.2)
    finally:
        stop.set()
        t.join(10)
    workers = worker_pids(d)
    bound = len(workers) * (8 + 3) + 1
    print(f"connections: peak {peak[0]}, distinct {len(seen)}, {len(workers)} worker processes, bound {bound}")
    assert 0 < peak[0] <= bound
    assert len(seen) <= bound  # reused across the 40 tasks, not opened anew per task
    assert left <= 1  # only the driver's own connection stays open


def env_pipeline(question: str, config: dict[str, Any]) -> dict[str, Any]:
    (Path(config["calls_dir"]) / f"env-{os.getpid()}").write_text(os.environ.get("RAGTRAIL_TEST_PROBE", "unset"))
    return pipeline(question, config)


def test_runtime_env_applies_to_the_tasks_when_ray_was_initialised_before(tmp_path: Path, traced: Any) -> None:
    """This module called ray.init() itself: RayBackend(runtime_env=...) then goes on every task."""
    d = tmp_path / "env_calls"
    d.mkdir()
    run = Evaluation("with-env", dataset(), env_pipeline, [n_chars], store=traced.store_path, progress=False).run(
        {"seed": 7, "calls_dir": str(d)},
        backend=RayBackend(chunk_size=4, runtime_env={"env_vars": {"RAGTRAIL_TEST_PROBE": "from-runtime-env"}}),
    )
    assert run.status == "finished"
    seen = {p.read_text() for p in d.iterdir() if p.name.startswith("env-")}
    assert seen == {"from-runtime-env"}
