"""The pytest plugin (fixture `ragtrail` and marker `ragtrail_gates`), exercised by running a real
inner pytest session against a real SQLite store holding two runs."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from importlib.metadata import entry_points

import numpy as np
from test_compare_support import make_run

from ragtrail.store import open_store

INNER = '''
import pytest


def test_fixture_pass(ragtrail):
    rep = ragtrail.assert_gates("rag-qa:v2", ["faithfulness >= 0.5", "faithfulness >= production - 0.05"])
    assert rep.passed and rep.baseline.ref == "rag-qa:v1"


def test_fixture_fail(ragtrail):
    ragtrail.assert_gates("rag-qa:v2", ["faithfulness >= 0.99"])


def test_fixture_gate_file(ragtrail):
    ragtrail.assert_gates("rag-qa:v2", "gates.yaml")


def test_not_worse_pass(ragtrail):
    ragtrail.assert_not_worse("rag-qa:production", "rag-qa:v2", metrics=["faithfulness"], margin=0.05)


def test_not_worse_fail(ragtrail):
    ragtrail.assert_not_worse("rag-qa:production", "rag-qa:v2", metrics=["faithfulness"], margin=0.0)


@pytest.mark.ragtrail_gates("gates.yaml", run="rag-qa:latest")
def test_marker_pass():
    pass


@pytest.mark.ragtrail_gates(["p95_latency_ms <= 10"], run="rag-qa:latest")
def test_marker_fail():
    pass


@pytest.mark.ragtrail_gates(["faithfulness >= 0.5"], run="rag-qa:latest")
def test_marker_body_fails_first():
    assert False, "the body failed"
'''


def test_plugin_fixture_and_marker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = str(tmp_path / "ragtrail.db")
    s = open_store(db)
    ids = [f"q{i}" for i in range(40)]
    base = np.random.default_rng(0).uniform(0.7, 0.9, 40)
    make_run(s, "rag-qa", {"faithfulness": dict(zip(ids, base.tolist()))}, latency_ms=dict.fromkeys(ids, 50.0))
    make_run(s, "rag-qa", {"faithfulness": dict(zip(ids, (base - 0.01).tolist()))}, latency_ms=dict.fromkeys(ids, 60.0))
    from ragtrail.evals._gates import move_alias

    move_alias(s, "rag-qa:v1", "production")
    s.close()
    (tmp_path / "test_inner.py").write_text(INNER)
    (tmp_path / "gates.yaml").write_text(textwrap.dedent("""\
        baseline: production
        gates:
          - faithfulness >= 0.6
          - metric: faithfulness
            non_inferior: 0.05
          - p95_latency_ms <= 100
    """))
    loaded = any(ep.value == "ragtrail.pytest_plugin" for ep in entry_points(group="pytest11"))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", f"--ragtrail-store={db}",
           f"--junitxml={tmp_path / 'junit.xml'}", "-W", "ignore::DeprecationWarning", "test_inner.py"]  # fmt: skip
    if not loaded:
        cmd[3:3] = ["-p", "ragtrail.pytest_plugin"]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    passed = {"test_fixture_pass", "test_fixture_gate_file", "test_not_worse_pass", "test_marker_pass"}
    failed = {"test_fixture_fail", "test_not_worse_fail", "test_marker_fail", "test_marker_body_fails_first"}
    for name in passed:
        assert f"PASSED test_inner.py::{name}" in text, text
    for name in failed:
        assert f"FAILED test_inner.py::{name}" in text, text
    assert "1 of 1 gates failed for rag-qa:v2" in text and "faithfulness >= 0.99" in text
    assert "p95_latency_ms <= 10: p95 of 40 example latencies" in text
    assert "rag-qa:v2 is worse than rag-qa:v1" in text
    assert "the body failed" in text
    junit = (tmp_path / "junit.xml").read_text()
    assert 'name="ragtrail_gates"' in junit and "ragtrail gates" in junit
