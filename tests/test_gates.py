"""Gates: parsing (with errors naming the field), evaluation on runs in a real SQLite store, the
`ragtrail gate` exit codes (0 pass / 1 fail / 2 error) with JUnit XML and Markdown outputs,
promotion that moves an alias only when the gates pass, and atomic alias moves under concurrent
promotions from several processes (SQLite and the real PostgreSQL server)."""

from __future__ import annotations

import multiprocessing as mp
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import typer
from test_compare_support import make_run
from typer.testing import CliRunner

from ragtrail._exceptions import ConfigError, EvalError
from ragtrail.cli import app as cli_app
from ragtrail.evals._gates import check_gates, current_alias, load_gates, move_alias, parse_gate, promote
from ragtrail.store import open_store

IDS = [f"q{i:02d}" for i in range(60)]


@pytest.fixture
def store(store_path):  # type: ignore[no-untyped-def]
    s = open_store(store_path)
    yield s
    s.close()


def _two_runs(store, *, drop: float = 0.0, cost: float | None = 0.001):  # type: ignore[no-untyped-def]
    """v1 (production) and v2 = v1 − drop on faithfulness, plus an error and an undefined score in v2."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.75, 1.0, len(IDS))
    f_a = {e: float(v) for e, v in zip(IDS, base)}
    f_b = {e: float(np.clip(v - drop + rng.normal(0, 0.01), 0, 1)) for e, v in zip(IDS, base)}
    rec = {e: float(i % 2) for i, e in enumerate(IDS)}
    rec_b = dict(rec)
    rec_b["q00"] = ("undefined", "no relevant documents")
    lat = {e: 100.0 + i for i, e in enumerate(IDS)}
    costs = dict.fromkeys(IDS, cost)
    make_run(store, "rag-qa", {"faithfulness": f_a, "recall@5": rec}, latency_ms=lat, cost_usd=costs)
    make_run(store, "rag-qa", {"faithfulness": f_b, "recall@5": rec_b}, latency_ms=lat, cost_usd=costs,
             example_errors={"q59": "TimeoutError: upstream"})
    move_alias(store, "rag-qa:v1", "production")


def test_parse_gate_forms() -> None:
    g = parse_gate("faithfulness >= 0.85")
    assert (g.kind, g.metric, g.op, g.value) == ("threshold", "faithfulness", ">=", 0.85)
    g = parse_gate("token_f1 >= production - 0.02")
    assert (g.kind, g.metric, g.against, g.value) == ("non_inferiority", "token_f1", "production", 0.02)
    g = parse_gate("recall@5 >= rag-qa:production - 0.01")
    assert g.against == "rag-qa:production" and g.metric == "recall@5"
    assert parse_gate("error_rate(faithfulness) <= 0.1").metric == "faithfulness"
    assert parse_gate({"max_p95_latency_ms": 1500}).quantile == 95
    assert parse_gate({"metric": "f1", "non_inferior": {"margin": 0.03, "against": "staging"}}).against == "staging"
    assert parse_gate({"metric": "f1", "min": 0.5}).op == ">="
    assert parse_gate({"max_cost_usd": 2}).kind == "cost"


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("faithfulness 0.85", r"cannot parse gate"),
        ("f1 >= banana pie", r"right-hand side"),
        ({"metric": "f1", "min": "high"}, r"gates\[0\]: min must be a number"),
        ({"metric": "f1", "minimum": 0.5}, r"gates\[0\]: cannot tell what this gate checks"),
        ({"max_error_rate": 0.1, "colour": "red"}, r"gates\[0\]: unknown key\(s\) colour"),
        ("error_rate >= 0.1", r"upper bounds"),
        ({"metric": "f1", "non_inferior": -0.1}, r"margin must be >= 0"),
    ],
)
def test_bad_gates_name_the_field(item, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match):
        load_gates({"gates": [item]}).gates  # noqa: B018


def test_gate_file_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "gates.yaml"
    bad.write_text("gates:\n  - f1 >= 0.5\n  - [unclosed\n")
    with pytest.raises(ConfigError, match=r"gates.yaml:\d+: invalid YAML"):
        load_gates(bad)
    bad.write_text("gate:\n  - f1 >= 0.5\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) gate"):
        load_gates(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_gates(tmp_path / "missing.yaml")


def test_check_gates_pass_and_fail(store) -> None:  # type: ignore[no-untyped-def]
    _two_runs(store, drop=0.0)
    rep = check_gates(store, "rag-qa:v2", [
        "faithfulness >= 0.8", "faithfulness >= production - 0.02", "error_rate <= 0.05",
        "undefined_rate(recall@5) <= 0.05", "cost_usd <= 1.0", "p95_latency_ms <= 200",
    ])  # fmt: skip
    assert rep.passed, rep.to_markdown()
    assert rep.baseline is not None and rep.baseline.ref == "rag-qa:v1"
    by = {r.gate.text: r for r in rep.results}
    assert by["error_rate <= 0.05"].observed == pytest.approx(1 / 60)
    assert by["cost_usd <= 1.0"].observed == pytest.approx(0.06)
    assert by["p95_latency_ms <= 200"].observed == pytest.approx(np.percentile([100.0 + i for i in range(60)], 95))
    rep = check_gates(store, "rag-qa:v2", ["faithfulness >= 0.99", "p95_latency_ms <= 150", "error_rate <= 0.0"])
    assert not rep.passed and rep.exit_code == 1 and len(rep.failed) == 3
    with pytest.raises(AssertionError, match="3 of 3 gates failed"):
        rep.raise_for_failure()


def test_non_inferiority_uses_ci_lower_bound(store) -> None:  # type: ignore[no-untyped-def]
    _two_runs(store, drop=0.03)  # v2 is ~0.03 worse on faithfulness
    rep = check_gates(store, "rag-qa:v2", ["faithfulness >= production - 0.01"])
    r = rep.results[0]
    assert r.status == "fail" and r.observed < -0.01 and "lower bound must be > -0.0100" in r.detail
    assert r.detail.startswith("observed = the CI's lower bound")  # the observed column explained
    rep = check_gates(store, "rag-qa:v2", ["faithfulness >= production - 0.05"])
    assert rep.passed and rep.results[0].observed > -0.05
    assert rep.comparison is not None and rep.comparison["faithfulness"].delta == pytest.approx(-0.03, abs=0.01)


def test_unknown_cost_fails_not_passes(store) -> None:  # type: ignore[no-untyped-def]
    _two_runs(store, cost=None)
    rep = check_gates(store, "rag-qa:v2", [{"max_cost_usd": 100}])
    assert not rep.passed and "no cost recorded" in rep.results[0].detail


def test_unknown_metric_and_missing_baseline_are_errors(store) -> None:  # type: ignore[no-untyped-def]
    make_run(store, "rag-qa", {"faithfulness": {"q1": 0.9, "q2": 0.8}})
    with pytest.raises(ConfigError, match=r"gates\[0\] \(faithfullness >= 0.85\): unknown metric 'faithfullness'.*faithfulness"):
        check_gates(store, "rag-qa:v1", {"gates": ["faithfullness >= 0.85"]})
    with pytest.raises(EvalError, match=r"baseline 'rag-qa:production'.*--allow-missing-baseline"):
        check_gates(store, "rag-qa:v1", ["faithfulness >= production - 0.02"])
    rep = check_gates(store, "rag-qa:v1", ["faithfulness >= production - 0.02"], allow_missing_baseline=True)
    assert rep.passed and rep.results[0].status == "skipped"
    with pytest.raises(ConfigError, match="no gates given"):
        check_gates(store, "rag-qa:v1", None)


# ------------------------------------------------------------------------------------------ CLI
GATES_YAML = """\
baseline: production
gates:
  - faithfulness >= 0.8
  - metric: faithfulness
    non_inferior: 0.02
  - max_error_rate: 0.05
  - p95_latency_ms <= 200
"""


def test_cli_gate_exit_codes_junit_markdown(store, store_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _two_runs(store, drop=0.0)
    gates = tmp_path / "gates.yaml"
    gates.write_text(GATES_YAML)
    junit, md = tmp_path / "out" / "gates.xml", tmp_path / "summary.md"
    runner = CliRunner()
    base = ["gate", "rag-qa:v2", "--store", store_path, "--junit", str(junit), "--markdown", str(md)]
    res = runner.invoke(cli_app, [*base, "--gates", str(gates)])
    assert res.exit_code == 0, res.output
    assert "all gates passed" in res.output
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "4" and suite.get("failures") == "0"
    assert "✅ passed" in md.read_text() and "| faithfulness |" in md.read_text()

    res = runner.invoke(cli_app, [*base, "--gates", str(gates), "--gate", "faithfulness >= 0.99", "--max-p95-latency-ms", "120"])
    assert res.exit_code == 1, res.output
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite.get("failures") == "2"
    failed = [tc.get("name") for tc in suite.iter("testcase") if tc.find("failure") is not None]
    assert failed == ["faithfulness >= 0.99", "p95_latency_ms <= 120"]
    assert "❌ 2 failed" in md.read_text()

    res = runner.invoke(cli_app, [*base, "--gate", "faithfulnes >= 0.5"])
    assert res.exit_code == 2 and "unknown metric 'faithfulnes'" in res.output
    assert ET.parse(junit).getroot().find("testsuite").get("errors") == "1"
    res = runner.invoke(cli_app, ["gate", "rag-qa:v7", "--store", store_path, "--gate", "faithfulness >= 0.5"])
    assert res.exit_code == 2 and "rag-qa:v7" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("gates: [faithfulness >=\n")
    res = runner.invoke(cli_app, ["gate", "rag-qa:v2", "--store", store_path, "--gates", str(bad)])
    assert res.exit_code == 2 and "invalid YAML" in res.output
    res = runner.invoke(cli_app, ["gate", "rag-qa:v2", "--store", store_path, "--non-inferior", "faithfulness:0.02",
                                  "--baseline", "production", "--json"])  # fmt: skip
    assert res.exit_code == 0 and '"passed": true' in res.output


def _runs_app() -> typer.Typer:
    from ragtrail.cli._runs_extra import register

    app = typer.Typer()

    @app.callback()
    def _cb() -> None: ...

    register(app)
    return app


def test_cli_promote_alias_compare(store, store_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _two_runs(store, drop=0.05)
    gates = tmp_path / "gates.yaml"
    gates.write_text("gates:\n  - faithfulness >= production - 0.01\n")
    runner, app = CliRunner(), _runs_app()
    res = runner.invoke(app, ["promote", "rag-qa:v2", "--alias", "production", "--gates", str(gates), "--store", store_path])
    assert res.exit_code == 1, res.output
    assert "not promoted" in res.output and current_alias(store, "rag-qa", "production") == store.query(
        "SELECT run_id FROM runs WHERE version = 1")[0][0]
    res = runner.invoke(app, ["promote", "rag-qa:v2", "--gate", "faithfulness >= production - 0.1", "--store", store_path])
    assert res.exit_code == 0 and "promoted: rag-qa:production -> rag-qa:v2 (was rag-qa:v1)" in res.output
    res = runner.invoke(app, ["alias", "rag-qa:v1", "staging", "--by", "ci-bot", "--history", "--store", store_path])
    assert res.exit_code == 0 and "rag-qa:staging -> rag-qa:v1 (was unset)" in res.output and "ci-bot" in res.output
    res = runner.invoke(app, ["alias", "rag-qa:v1", "latest", "--store", store_path])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError)
    res = runner.invoke(app, ["compare", "rag-qa:v1", "rag-qa:production", "--store", store_path])
    assert res.exit_code == 0 and "faithfulness" in res.output and "worse" in res.output
    res = runner.invoke(app, ["promote", "rag-qa:v2", "--store", store_path])
    assert res.exit_code == 2 and "--force" in res.output


def test_promote_library(store) -> None:  # type: ignore[no-untyped-def]
    _two_runs(store, drop=0.0)
    res = promote(store, "rag-qa:v2", "production", ["faithfulness >= 0.99"])
    assert not res.moved and res.report is not None and not res.report.passed
    res = promote(store, "rag-qa:v2", "production", ["faithfulness >= production - 0.02", "faithfulness >= 0.5"])
    assert res.moved and res.report.passed and res.report.baseline.ref == "rag-qa:v1"
    hist = store.query("SELECT previous_run_id, run_id, set_by FROM alias_history ORDER BY set_at")
    assert [h[0] for h in hist][-1] == res.previous_run_id


# ---------------------------------------------------------------------------- concurrency
def _promote_worker(url: str, ref: str, barrier, out) -> None:  # type: ignore[no-untyped-def]
    s = open_store(url)
    barrier.wait()
    moves = 0
    for _ in range(3):
        r = promote(s, ref, "production", ["faithfulness >= 0.0", "faithfulness >= production - 1.0"], by=ref)
        moves += int(r.moved)
        # hand it back to v1 (also a move) so that every round races again
        r2 = promote(s, "rag-qa:v1", "production", ["faithfulness >= 0.0"], by=ref)
        moves += int(r2.moved)
    out.put(moves)
    s.close()


def _concurrent_promotions(url: str) -> None:
    s = open_store(url)
    for _ in range(5):
        make_run(s, "rag-qa", {"faithfulness": dict.fromkeys(IDS[:20], 0.9)})
    move_alias(s, "rag-qa:v1", "production")
    ctx = mp.get_context("spawn")
    n = 4
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_promote_worker, args=(url, f"rag-qa:v{i + 2}", barrier, out)) for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(240)
        assert p.exitcode == 0
    moves = sum(out.get(timeout=10) for _ in procs)
    rows = s.query("SELECT run_id FROM aliases WHERE name = 'rag-qa' AND alias = 'production'")
    assert len(rows) == 1  # never two rows, never none
    hist = s.query(
        "SELECT run_id, previous_run_id FROM alias_history WHERE name = 'rag-qa' AND alias = 'production' ORDER BY set_at"
    )
    assert len(hist) == moves + 1  # every reported move has exactly one history row (+ the initial one)
    ids = {r[0] for r in s.query("SELECT run_id FROM runs")}
    for (prev_run, _), (run, previous) in zip(hist, hist[1:]):
        assert previous == prev_run, "a lost update: a move's previous run is not the run before it"
        assert run in ids
    assert rows[0][0] == hist[-1][0]  # the alias is where the last move put it
    s.close()


@pytest.mark.slow
def test_concurrent_promotions_sqlite(store_path) -> None:  # type: ignore[no-untyped-def]
    _concurrent_promotions(store_path)


@pytest.mark.slow
@pytest.mark.postgres
def test_concurrent_promotions_postgres(pg_url) -> None:  # type: ignore[no-untyped-def]
    _concurrent_promotions(pg_url)
