"""Untrusted text in the terminal and in reports, dry runs that run nothing, and small errors that must be
one clear line (issue 13, parts 4-6). The CLI runs in-process (typer's CliRunner) and, where the exit
status and the printed line matter, as the real console script in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ragtrail
from ragtrail.cli import app
from ragtrail.evals import Dataset, Evaluation
from ragtrail.evals._scorers import FunctionScorer

runner = CliRunner()
HOSTILE = "[/][link=https://evil.example]click[/link] \x1b]8;;https://evil.example\x1b\\x\x1b[2J"
ROOT = str(Path(__file__).resolve().parents[1])


def cli(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", "from ragtrail.cli import main; main()", *args],
                          capture_output=True, text=True, env=env, cwd=cwd, timeout=120)  # fmt: skip


@pytest.fixture
def hostile_store(tmp_path) -> str:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "h.db")
    ragtrail.init(project="p", store=path)
    try:
        with ragtrail.span(HOSTILE):
            pass
        ds = Dataset.from_records([{"id": str(i), "input": f"q{i}", "reference": "a"} for i in range(4)], name="d")
        scorer = FunctionScorer(lambda output: 1.0 if output == "a" else 0.0, name="[link=https://evil]m[/link]")
        ev = Evaluation("[/]x", dataset=ds, pipeline=lambda q: "a", scorers=[scorer], store=path)
        ev.run(config={})
        ev2 = Evaluation("[/]x", dataset=ds, pipeline=lambda q: "b" if q == "q1" else "a", scorers=[scorer], store=path)
        ev2.run(config={})
        ragtrail.flush()
    finally:
        ragtrail.shutdown()
    return path


def _no_raw_control(text: str) -> None:
    assert "\x1b" not in text and "\x9b" not in text


def test_markup_and_escape_sequences_in_stored_names_are_shown_as_text(hostile_store):
    res = runner.invoke(app, ["traces", "list", "-s", hostile_store])
    assert res.exit_code == 0, res.output
    assert "[/]" in res.output and "[link=https://evil.example]click" in res.output
    _no_raw_control(res.output)
    tid = ragtrail.Client(hostile_store).traces_df(limit=50).query("root_name.str.startswith('[/]')").trace_id.iloc[0]
    res = runner.invoke(app, ["traces", "show", tid, "-s", hostile_store])
    assert res.exit_code == 0 and "[link=https://evil.example]" in res.output
    _no_raw_control(res.output)
    res = runner.invoke(app, ["runs", "list", "-s", hostile_store])
    assert res.exit_code == 0, res.output
    assert "[/]x:v1" in res.output
    res = runner.invoke(app, ["runs", "compare", "[/]x:v1", "[/]x:v2", "-s", hostile_store])
    assert res.exit_code == 0, res.output
    assert "[link=https://evil]m[/link]" in res.output


def test_report_placeholders_are_substituted_in_one_pass(hostile_store, tmp_path):
    from ragtrail.evals._report import render_html

    page = render_html({"title": "{{data}} and /*{{js}}*/", "runs": [], "secret": "sk-proj-" + "R" * 30})
    title = page.split("<title>", 1)[1].split("</title>", 1)[0]
    assert title == "{{data}} and /*{{js}}*/"
    assert "R" * 30 not in page and page.count('"secret"') == 1


def test_eval_dry_run_imports_and_calls_nothing(tmp_path):
    (tmp_path / "app.py").write_text(f"open({str(tmp_path / 'imported')!r}, 'w').write('x')\n"
                                     "def answer(q):\n    return q\n")  # fmt: skip
    (tmp_path / "data.jsonl").write_text('{"id": "1", "input": "q", "reference": "a"}\n')
    (tmp_path / "eval.yaml").write_text(
        "name: dry\ndataset: data.jsonl\npipeline: app:answer\nscorers:\n  - token_f1\n"
        f"  - subprocess:run: {{args: 'touch {tmp_path / 'pwned'}', shell: true}}\n"
    )
    res = cli("eval", "run", "eval.yaml", "--dry-run", "-s", str(tmp_path / "s.db"), cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert "config OK" in res.stdout
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "imported").exists()
    (tmp_path / "eval.yaml").write_text("name: dry\ndataset: data.jsonl\npipeline: app:missing\nscorers: [token_f1]\n")
    res = cli("eval", "run", "eval.yaml", "--dry-run", "-s", str(tmp_path / "s.db"), cwd=str(tmp_path))
    assert res.returncode == 2 and "defines no 'missing'" in res.stderr
    assert not (tmp_path / "imported").exists()


def test_read_commands_need_an_existing_store(tmp_path):
    missing = tmp_path / "missing" / "dir" / "x.db"
    res = cli("traces", "list", "-s", str(missing))
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        f"error: no store at {missing}; " + res.stderr.split("; ", 1)[1].strip()
    ]
    assert not missing.parent.exists()


def test_unknown_project_lists_the_projects(hostile_store):
    res = cli("traces", "list", "-s", hostile_store, "--project", "nope")
    assert res.returncode == 2 and "no project 'nope'" in res.stderr and "projects: p" in res.stderr


def test_export_to_a_missing_directory_is_one_line(hostile_store, tmp_path):
    res = cli("traces", "export", "-s", hostile_store, "-o", str(tmp_path / "missing" / "x.jsonl"))
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "does not exist" in res.stderr


def test_serve_without_the_otlp_extra_names_the_install_line(monkeypatch, tmp_path):
    import importlib.util

    from ragtrail._exceptions import MissingDependencyError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    res = runner.invoke(app, ["serve", "-s", str(tmp_path / "s.db")])
    assert isinstance(res.exception, MissingDependencyError)
    assert "pip install 'ragtrail[otlp]'" in str(res.exception) and "uvicorn" in str(res.exception)
