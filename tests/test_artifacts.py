"""Artifacts: content-addressed versions (same content → one version, one changed byte → a new one that
`diff` names), blobs stored once, verified downloads with clear errors for corrupted and missing blobs,
aliases with compare-and-swap and history in the shared alias tables, lineage between real eval runs
and artifacts, promotion gated on a run's gates, fsspec blob locations, and 3 processes logging and
moving aliases at once on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ragtrail
from ragtrail import ArtifactError, ConfigError
from ragtrail.artifacts import (
    Artifact,
    alias_history,
    diff,
    get_artifact,
    lineage,
    list_artifacts,
    log_artifact,
    promote,
    set_alias,
    versions,
)
from ragtrail.cli import app as cli_app
from ragtrail.store import open_store


@pytest.fixture
def store(store_path):  # type: ignore[no-untyped-def]
    s = open_store(store_path)
    yield s
    s.close()


def _tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def _blob_files(store_path: str) -> list[Path]:
    return sorted((Path(store_path).parent / "artifacts" / "sha256").rglob("*"))


FILES = {
    "config.yaml": b"chunk_size: 512\n",
    "prompts/qa.txt": b"Answer from the context.\n",
    "data/x.bin": bytes(range(256)) * 40,
}


def test_same_directory_twice_is_one_version_and_blobs_are_shared(store, store_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = _tree(tmp_path / "src", FILES)
    v1 = log_artifact(Artifact("index-config", "config").add_dir(src), store=store)
    again = log_artifact(Artifact("index-config", "config").add_dir(src), store=store)
    assert (v1.ref, v1.created) == ("index-config:v1", True)
    assert (again.ref, again.created, again.digest) == ("index-config:v1", False, v1.digest)
    assert sorted(v1.files) == ["config.yaml", "data/x.bin", "prompts/qa.txt"]
    blobs = [p for p in _blob_files(store_path) if p.is_file()]
    assert len(blobs) == 3
    # a second artifact holding one of the same files stores no new blob for it
    log_artifact(Artifact("other", "config").add_file(src / "config.yaml"), store=store)
    assert len([p for p in _blob_files(store_path) if p.is_file()]) == 3
    assert [v.ref for v in versions("index-config", store=store)] == ["index-config:v1"]


def test_one_changed_byte_makes_a_new_version_that_diff_names(store, store_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = _tree(tmp_path / "src", FILES)
    v1 = log_artifact(Artifact("index-config", "config").add_dir(src), store=store)
    data = bytearray((src / "data/x.bin").read_bytes())
    data[1000] ^= 1
    (src / "data/x.bin").write_bytes(bytes(data))
    v2 = log_artifact(Artifact("index-config", "config").add_dir(src), store=store)
    assert (v2.ref, v2.created) == ("index-config:v2", True) and v2.digest != v1.digest
    d = diff("index-config:v1", "index-config:v2", store=store)
    assert [c["path"] for c in d["changed"]] == ["data/x.bin"]
    assert d["added"] == [] and d["removed"] == [] and d["unchanged"] == 2
    res = CliRunner().invoke(cli_app, ["artifacts", "diff", "index-config:v1", "v2", "--store", store_path])
    assert res.exit_code == 0, res.output
    assert "~ data/x.bin" in res.output and "1 changed, 2 unchanged" in res.output
    assert "config.yaml" not in res.output


def test_objects_round_trip_and_download_restores_bytes(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = _tree(tmp_path / "src", FILES)
    art = Artifact("rag", "config", description="chunking + prompt", metadata={"owner": "search"})
    art.add({"chunk_size": 512, "overlap": 64}, "chunking.json").add({"k": 8, "reranker": None}, "retrieval.yaml")
    art.add_dir(src, prefix="files")
    v = log_artifact(art, store=store, aliases=["staging"])
    got = get_artifact("rag:staging", store=store)
    assert got.ref == v.ref and got.aliases == ["staging"] and got.metadata == {"owner": "search"}
    assert got.load("chunking.json") == {"chunk_size": 512, "overlap": 64}
    assert got.load("retrieval.yaml") == {"k": 8, "reranker": None}
    out = Path(got.download(tmp_path / "out"))
    for rel, data in FILES.items():
        assert (out / "files" / rel).read_bytes() == data
    assert not list(out.rglob("*.tmp"))
    got.verify()


def test_corrupted_and_missing_blobs_give_errors_naming_the_file(store, store_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = _tree(tmp_path / "src", FILES)
    v = log_artifact(Artifact("cfg", "config").add_dir(src), store=store)
    entry = next(e for e in v.manifest if e["path"] == "prompts/qa.txt")
    blob = Path(store_path).parent / "artifacts" / "sha256" / entry["sha256"][:2] / entry["sha256"]
    blob.write_bytes(b"Answer from the context!\n")  # same size, one byte different
    with pytest.raises(ArtifactError, match=r"cfg:v1: the file 'prompts/qa.txt' is corrupted") as err:
        get_artifact("cfg:v1", store=store).download(tmp_path / "out")
    assert str(blob) in str(err.value)
    assert not (tmp_path / "out" / "prompts" / "qa.txt").exists()  # no half-written or wrong file left
    with pytest.raises(ArtifactError, match=r"'prompts/qa.txt' is corrupted"):
        get_artifact("cfg:v1", store=store).verify()
    res = CliRunner().invoke(cli_app, ["artifacts", "show", "cfg:v1", "--verify", "--store", store_path])
    assert res.exit_code != 0 and "prompts/qa.txt" in str(res.exception)
    blob.unlink()
    with pytest.raises(ArtifactError, match=r"the file 'prompts/qa.txt' is missing from the artifact store"):
        get_artifact("cfg:v1", store=store).download(tmp_path / "out2")
    # logging the same content again restores the blob; the version stays v1
    again = log_artifact(Artifact("cfg", "config").add_dir(src), store=store)
    assert again.ref == "cfg:v1" and not again.created
    get_artifact("cfg:v1", store=store).verify()


def test_a_hostile_manifest_path_is_never_written_outside_the_root(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    log_artifact(Artifact("evil", "config").add({"a": 1}, "a.json"), store=store)
    (manifest,) = store.query("SELECT manifest FROM artifact_versions WHERE name = 'evil'")[0]
    store.execute("UPDATE artifact_versions SET manifest = ? WHERE name = 'evil'",
                  (manifest.replace('"a.json"', '"../escaped.json"'),))  # fmt: skip
    with pytest.raises(ConfigError, match=r"not a relative path inside the artifact"):
        get_artifact("evil:v1", store=store).download(tmp_path / "root")
    assert not (tmp_path / "escaped.json").exists()


def test_bad_input_is_refused_with_clear_messages(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=r"artifact name 'a:b' is not allowed"):
        Artifact("a:b", "config")
    with pytest.raises(ConfigError, match=r"already has a file 'x.json'"):
        Artifact("a", "config").add({}, "x.json").add({}, "x.json")
    with pytest.raises(ConfigError, match=r"not a relative path"):
        Artifact("a", "config").add({}, "../x.json")
    with pytest.raises(ConfigError, match=r"has no files"):
        log_artifact(Artifact("a", "config"), store=store)
    log_artifact(Artifact("a", "config").add({}, "x.json"), store=store)
    with pytest.raises(ConfigError, match=r"has type 'config' in the store, not 'index'"):
        log_artifact(Artifact("a", "index").add({}, "x.json"), store=store)
    with pytest.raises(ArtifactError, match=r"a has versions v1 and aliases latest"):
        get_artifact("a:v9", store=store)
    with pytest.raises(ConfigError, match=r"alias 'latest' is not allowed"):
        set_alias("a:v1", "latest", store=store)


def test_aliases_compare_and_swap_with_history_in_the_shared_alias_tables(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        log_artifact(Artifact("idx", "index").add({"i": i}, "cfg.json"), store=store)
    assert set_alias("idx:v1", "production", store=store, by="alice") is None
    assert set_alias("idx:v2", "production", store=store, expected="v1", by="bob") == "idx:v1"
    with pytest.raises(ArtifactError, match=r"idx:production points at idx:v2, not v1 as expected"):
        set_alias("idx:v3", "production", store=store, expected="v1")
    assert get_artifact("idx:production", store=store).ref == "idx:v2"
    hist = alias_history("idx", "production", store=store)
    assert [(h["previous"], h["version"], h["set_by"]) for h in hist] == [(None, "idx:v1", "alice"),
                                                                           ("idx:v1", "idx:v2", "bob")]  # fmt: skip
    # one alias mechanism: the rows are in the same tables as run aliases, namespaced
    rows = store.query("SELECT name, alias FROM aliases")
    assert rows == [("artifact:idx", "production")]
    assert len(store.query("SELECT * FROM alias_history WHERE name = 'artifact:idx'")) == 2
    assert list_artifacts(store=store)[0]["aliases"] == {"production": "v2"}


def _records(n: int = 4) -> list[dict]:  # type: ignore[type-arg]
    return [{"id": f"e{i}", "input": f"question {i}", "reference": f"answer {i}"} for i in range(n)]


def test_run_lineage_dataset_run_artifact_run(traced, store_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ragtrail.evals import Dataset, Evaluation, scorers

    ds = Dataset.from_records(_records(), name="qa-set")
    build = Evaluation("build-index", ds, lambda q: f"answer {q.split()[-1]}", [scorers.exact_match()],
                       progress=False).run()  # fmt: skip
    log_artifact(Artifact("chunking", "config").add({"size": 256}, "chunking.json"), aliases=["production"])
    assert build.use_artifact("chunking:production").ref == "chunking:v1"
    index = build.log_artifact(Artifact("index-config", "index").add({"dim": 384}, "index.json"), aliases=["staging"])
    assert index.run_id == build.run_id
    qa = Evaluation("rag-qa", ds, lambda q: f"answer {q.split()[-1]}", [scorers.exact_match()], progress=False).run()
    qa.use_artifact("index-config:staging")
    # the alias moving on later does not change what the run recorded
    log_artifact(Artifact("index-config", "index").add({"dim": 768}, "index.json"), aliases=["staging"])
    assert qa.artifacts() == {"inputs": ["index-config:v1"], "outputs": []}
    assert build.artifacts() == {"inputs": ["chunking:v1"], "outputs": ["index-config:v1"]}
    g = lineage("index-config:v1")
    ds_ref = f"qa-set:{build.dataset_version}"
    assert g["paths"] == [
        f"dataset {ds_ref} + artifact chunking:v1 → run build-index:v1 → artifact index-config:v1 → run rag-qa:v1"
    ]
    res = CliRunner().invoke(cli_app, ["artifacts", "lineage", "index-config:v1", "--store", store_path])
    assert res.exit_code == 0, res.output
    assert "→ run build-index:v1 → artifact index-config:v1 → run rag-qa:v1" in res.output
    assert f"dataset {ds_ref}" in res.output


def test_promotion_is_gated_on_the_runs_gates(traced, store_path) -> None:  # type: ignore[no-untyped-def]
    from ragtrail.evals import Dataset, Evaluation, scorers
    from ragtrail.evals._gates import check_gates

    ds = Dataset.from_records(_records(), name="qa-set")
    good = Evaluation("rag-qa", ds, lambda q: f"answer {q.split()[-1]}", [scorers.exact_match()], progress=False).run()
    bad = Evaluation("rag-qa", ds, lambda q: "no idea", [scorers.exact_match()], progress=False).run()
    v1 = log_artifact(Artifact("prompt-pack", "config").add({"v": 1}, "p.json"))
    v2 = log_artifact(Artifact("prompt-pack", "config").add({"v": 2}, "p.json"))
    st = open_store(store_path)
    res = promote(v1.ref, "production", report=check_gates(st, good, extra=["exact_match >= 0.9"]))
    assert res.moved and get_artifact("prompt-pack:production").ref == "prompt-pack:v1"
    res = promote(v2.ref, "production", report=check_gates(st, bad, extra=["exact_match >= 0.9"]))
    assert not res.moved and not res.report.passed
    assert get_artifact("prompt-pack:production").ref == "prompt-pack:v1"
    runner = CliRunner()
    out = runner.invoke(cli_app, ["artifacts", "alias", "prompt-pack:v2", "production", "--run", bad.ref,
                                  "--gate", "exact_match >= 0.9", "--store", store_path])  # fmt: skip
    assert out.exit_code == 1 and "not moved" in out.output
    out = runner.invoke(cli_app, ["artifacts", "alias", "prompt-pack:v2", "production", "--run", good.ref,
                                  "--gate", "exact_match >= 0.9", "--store", store_path])  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "prompt-pack:production → prompt-pack:v2 (was prompt-pack:v1)" in out.output
    hist = alias_history("prompt-pack", "production")
    assert hist[-1]["set_by"].endswith(f"(gates passed by {good.ref})")
    assert good.artifacts()["inputs"] == ["prompt-pack:v1", "prompt-pack:v2"]


def test_cli_log_list_show_download(store, store_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = _tree(tmp_path / "src", {"[red]odd[/red].txt": b"markup in a name\n", "b.txt": b"b\n"})
    runner = CliRunner()
    res = runner.invoke(
        cli_app, ["artifacts", "log", "cfg", "config", str(src), "-a", "production", "--store", store_path]
    )
    assert res.exit_code == 0 and "cfg:v1 (new): 2 file(s)" in res.output and "aliases production" in res.output
    res = runner.invoke(cli_app, ["artifacts", "log", "cfg", "config", str(src), "--store", store_path])
    assert res.exit_code == 0 and "cfg:v1 (unchanged)" in res.output
    res = runner.invoke(cli_app, ["artifacts", "list", "--store", store_path])
    assert res.exit_code == 0 and "cfg" in res.output and "production→v1" in res.output
    res = runner.invoke(cli_app, ["artifacts", "show", "cfg:production", "--store", store_path])
    assert res.exit_code == 0 and "[red]odd[/red].txt" in res.output  # shown literally, not as markup
    res = runner.invoke(cli_app, ["artifacts", "show", "cfg", "--json", "--store", store_path])
    assert json.loads(res.output)["ref"] == "cfg:v1"
    res = runner.invoke(
        cli_app, ["artifacts", "download", "cfg:production", "-o", str(tmp_path / "dl"), "--store", store_path]
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "dl" / "b.txt").read_bytes() == b"b\n"


def test_fsspec_blob_location(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("fsspec")
    url = f"memory://ragtrail-test-{os.getpid()}/blobs"
    v = log_artifact(Artifact("cfg", "config").add({"a": 1}, "a.json"), store=store, blobs=url)
    got = get_artifact("cfg:v1", store=store, blobs=url)
    assert got.load("a.json") == {"a": 1}
    import fsspec

    fs = fsspec.filesystem("memory")
    assert fs.exists(
        f"/ragtrail-test-{os.getpid()}/blobs/sha256/{v.manifest[0]['sha256'][:2]}/{v.manifest[0]['sha256']}"
    )


def test_postgres_store_needs_a_blob_location(pg_url, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("RAGTRAIL_ARTIFACTS", raising=False)
    with pytest.raises(ConfigError, match=r"set RAGTRAIL_ARTIFACTS"):
        log_artifact(Artifact("cfg", "config").add({"a": 1}, "a.json"), store=pg_url)
    monkeypatch.setenv("RAGTRAIL_ARTIFACTS", str(tmp_path / "shared"))
    v = log_artifact(Artifact("cfg", "config").add({"a": 1}, "a.json"), store=pg_url, aliases=["production"])
    assert get_artifact("cfg:production", store=pg_url).load("a.json") == {"a": 1} and v.ref == "cfg:v1"


# --------------------------------------------------------------------------------- concurrency
def _worker(store_url: str, blobs: str, worker: int, n: int, q) -> None:  # type: ignore[no-untyped-def]
    os.environ["RAGTRAIL_ARTIFACTS"] = blobs
    moves = []
    try:
        for i in range(n):
            art = Artifact("shared", "config").add({"worker": worker, "i": i}, "cfg.json")
            v = log_artifact(art, store=store_url)
            common = log_artifact(Artifact("shared", "config").add({"common": i}, "cfg.json"), store=store_url)
            set_alias(v.ref, "production", store=store_url, by=f"w{worker}")
            moves.append((v.ref, common.ref))
        q.put((worker, moves, None))
    except Exception as exc:  # pragma: no cover - reported to the test
        q.put((worker, moves, repr(exc)))


def _run_concurrently(store_url: str, blobs: str) -> None:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    n = 8
    procs = [ctx.Process(target=_worker, args=(store_url, blobs, w, n, q)) for w in range(3)]
    for p in procs:
        p.start()
    results = [q.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(err is None for _, _, err in results), results
    st = open_store(store_url)
    vs = versions("shared", store=st)
    # 3 x 8 distinct contents + 8 common contents logged by every worker: one version each, numbered 1..32
    assert [v.version for v in vs] == list(range(1, 33))
    assert len({v.digest for v in vs}) == 32
    commons = {ref for _, moves, _ in results for _, ref in moves}
    assert len(commons) == 8  # the three workers agreed on one version per common content
    hist = alias_history("shared", "production", store=st)
    assert len(hist) == 24
    # a consistent chain: every move names the version the previous move set, none is lost
    assert hist[0]["previous"] is None
    for before, after in zip(hist, hist[1:]):
        assert after["previous"] == before["version"]
    assert get_artifact("shared:production", store=st).ref == hist[-1]["version"]
    per_worker = {w: [ref for ref, _ in moves] for w, moves, _ in results}
    for w, refs in per_worker.items():  # each worker's own moves appear in its order
        assert [h["version"] for h in hist if h["set_by"] == f"w{w}"] == refs


def test_three_processes_log_and_move_aliases_sqlite(store_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    open_store(store_path).close()  # migrate once up front
    _run_concurrently(store_path, str(tmp_path / "blobs"))


def test_three_processes_log_and_move_aliases_postgres(pg_url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    open_store(pg_url).close()
    _run_concurrently(pg_url, str(tmp_path / "blobs"))


def test_import_ragtrail_stays_light() -> None:
    code = (
        "import sys, ragtrail; a = ragtrail.Artifact; import ragtrail.prompts; "
        "bad = [m for m in ('langchain_core', 'llama_index', 'pandas', 'fsspec') if m in sys.modules]; "
        "assert not bad, bad; assert ragtrail.prompts.push and ragtrail.artifacts.log_artifact"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert ragtrail.Artifact is Artifact


def test_public_names_are_honest() -> None:
    import ragtrail.artifacts
    import ragtrail.prompts

    for mod in (ragtrail.artifacts, ragtrail.prompts):
        assert all(hasattr(mod, n) for n in mod.__all__), mod.__name__
    assert {"Artifact", "ArtifactError"} <= set(ragtrail.__all__)
