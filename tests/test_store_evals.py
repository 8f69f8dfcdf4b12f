"""The eval repository (ragtrail.store._evals / _aliases): the one place with SQL on the eval tables."""

from __future__ import annotations

import threading

import pytest

from ragtrail._exceptions import AliasConflictError, ConfigError, EvalError
from ragtrail.store import _aliases, open_store
from ragtrail.store import _evals as repo


def _run(st, name: str = "qa") -> str:  # type: ignore[no-untyped-def]
    return repo.insert_run(st, name, dataset_name="ds", dataset_version="abc", config={"k": 1}, config_hash="h",
                           lineage={"scorers": []})  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def st(request, store_path):  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return open_store(store_path)
    return open_store(request.getfixturevalue("pg_url"))


def test_runs_version_up_and_resolve_every_way(st) -> None:  # type: ignore[no-untyped-def]
    a, b = _run(st), _run(st)
    assert [r["version"] for r in repo.list_runs(st, "qa")] == [2, 1]
    assert repo.resolve_run_id(st, "qa:v1") == a
    assert repo.resolve_run_id(st, "qa:latest") == b == repo.resolve_run_id(st, "qa")
    assert repo.resolve_run_id(st, a) == a
    _aliases.move_alias(st, "qa", "production", a)
    assert repo.resolve_run_id(st, "qa:production") == a
    with pytest.raises(EvalError, match=r"versions v1, v2 and aliases latest, production"):
        repo.resolve_run_id(st, "qa:v9")
    with pytest.raises(ConfigError):
        repo.resolve_run_id(st, "  ")


def test_results_replace_per_scorer_and_summary(st) -> None:  # type: ignore[no-untyped-def]
    rid = _run(st)
    repo.commit_example(st, rid, "e1", ("ok", '"x"', None, "t1", 10.0, 3, 4, 0.5),
                        [("e1", "f1", 0.25, "ok", None, None, "t1")])  # fmt: skip
    repo.commit_results(st, rid, [("e1", "f1", 0.75, "ok", None, {"cost_usd": 0.1}, "t1")])
    rows = repo.result_rows(st, rid)
    assert [(r["scorer"], r["score"], r["details"]) for r in rows] == [("f1", 0.75, {"cost_usd": 0.1})]
    s = repo.run_summary(st, rid)
    assert s["metrics"]["f1"]["mean"] == 0.75 and s["cost_usd"] == 0.5 and s["judge_cost_usd"] == pytest.approx(0.1)
    repo.reopen_run(st, rid, {"resumed": True}, clear_examples=["e1"])
    assert repo.example_statuses(st, rid) == {} and repo.result_rows(st, rid) == []
    assert repo.get_run(st, rid)["lineage"] == {"resumed": True}


def test_move_alias_compare_and_swap_history_and_kinds(st) -> None:  # type: ignore[no-untyped-def]
    a, b = _run(st), _run(st)
    assert _aliases.move_alias(st, "qa", "prod", a, by="ann") is None
    with pytest.raises(AliasConflictError):
        _aliases.move_alias(st, "qa", "prod", b, expected=None)
    assert _aliases.move_alias(st, "qa", "prod", b, expected=a) == a
    hist = _aliases.alias_history(st, "qa", "prod")
    assert [(h["run_id"], h["previous_run_id"]) for h in hist] == [(a, None), (b, a)] and hist[0]["set_by"] == "ann"
    # another kind shares the tables without touching the run's aliases
    _aliases.move_alias(st, "qa", "prod", "art_1", kind="artifact")
    assert _aliases.alias_target(st, "qa", "prod", kind="artifact") == "art_1"
    assert _aliases.alias_target(st, "qa", "prod") == b
    assert _aliases.alias_map(st) == {b: ["prod"]}
    assert _aliases.alias_map(st, kind="artifact") == {"art_1": ["prod"]}
    for bad in ("", "latest", "v3", "a:b"):
        with pytest.raises(ConfigError, match="not allowed"):
            _aliases.move_alias(st, "qa", bad, a)


def test_concurrent_compare_and_swap_has_one_winner(st) -> None:  # type: ignore[no-untyped-def]
    ids = [_run(st) for _ in range(6)]
    wins, losses = [], []

    def go(rid: str) -> None:
        try:
            _aliases.move_alias(st, "qa", "production", rid, expected=None)
            wins.append(rid)
        except AliasConflictError:
            losses.append(rid)

    threads = [threading.Thread(target=go, args=(r,)) for r in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 5
    assert _aliases.alias_target(st, "qa", "production") == wins[0]
    assert len(_aliases.alias_history(st, "qa")) == 1


def test_datasets_and_judge_cache(st) -> None:  # type: ignore[no-untyped-def]
    assert repo.insert_dataset(st, "ds", "v1", description=None, meta=None, examples=[("b", "{}"), ("a", "{}")])
    assert not repo.insert_dataset(st, "ds", "v1", description=None, meta=None, examples=[])
    assert repo.dataset_example_data(st, "ds", "v1") == [("b", "{}"), ("a", "{}")]
    assert repo.dataset_example_data(st, "ds", "v1", ["a"]) == [("a", "{}")]
    assert repo.latest_dataset_version(st, "ds") == "v1" and repo.dataset_names(st) == ["ds"]
    repo.judge_cache_put(st, "k", '{"v": 1}')
    repo.judge_cache_put(st, "k", '{"v": 2}')  # first writer wins
    assert repo.judge_cache_get(st, "k") == '{"v": 1}' and repo.judge_cache_count(st) == 1
    assert repo.judge_cache_clear(st) == 1 and repo.judge_cache_get(st, "k") is None
