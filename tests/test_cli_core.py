"""The core CLI in-process (typer's CliRunner): traces list/show/export/reprice and store info, on a
store filled by real tracing; and the generated CLI reference (docs/cli.md) checked against the commands' options."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

import ragtrail
from ragtrail import semconv
from ragtrail.cli import app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
runner = CliRunner()


@pytest.fixture
def filled(store_path):
    """Two traces in project 'cli' (one with an LLM call and an error) and one in 'other'."""
    ragtrail.init(project="cli", store=store_path)
    try:

        @ragtrail.trace(kind="CHAIN")
        def answer(q):
            with ragtrail.span("lookup", kind="RETRIEVER") as s:
                ragtrail.record_documents(s, [{"id": "d1", "score": 0.5, "content": "doc"}])
            with ragtrail.span("llm", kind="LLM") as s:
                ragtrail.record_usage(s, provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100)
            return q

        @ragtrail.trace(kind="TOOL")
        def broken():
            raise RuntimeError("tool failed")

        answer("q1")
        with pytest.raises(RuntimeError):
            broken()
        assert ragtrail.flush()
    finally:
        ragtrail.shutdown()
    ragtrail.init(project="other", store=store_path)
    with ragtrail.span("elsewhere"):
        pass
    ragtrail.shutdown()
    return store_path


def _ok(args, **kw):
    r = runner.invoke(app, args, **kw)
    assert r.exit_code == 0, (r.output, r.exception)
    return r.output


def test_traces_list(filled):
    out = _ok(["traces", "list", "--store", filled])
    assert "3 trace(s)" in out
    assert "answer" in out and "broken" in out and "elsewhere" in out
    assert "1000→100" in out and "$0.000210" in out
    out = _ok(["traces", "list", "-p", "cli", "-n", "1"], env={"RAGTRAIL_STORE": filled})  # env var store
    assert "1 trace(s)" in out and "broken" in out and "answer" not in out
    out = _ok(["traces", "list", "-s", filled, "--since", "2999-01-01T00:00:00"])
    assert "0 trace(s)" in out


def test_traces_show(filled):
    tid = ragtrail.Client(filled).traces_df(project="cli").set_index("root_name").loc["answer", "trace_id"]
    out = _ok(["traces", "show", tid[:10], "-s", filled])
    lines = out.splitlines()
    assert lines[0].startswith(f"trace {tid}  3 spans")
    assert re.match(r"answer  \[CHAIN\]  \d+\.\d ms", lines[1])
    assert re.match(r"  lookup  \[RETRIEVER\]", lines[2])
    assert re.match(r"  llm  \[LLM\]  \d+\.\d ms  tokens 1000→100  \$0\.000210", lines[3])
    spans = json.loads(_ok(["traces", "show", tid, "-s", filled, "--json"]))
    assert sorted(s["name"] for s in spans) == ["answer", "llm", "lookup"]
    err_tid = ragtrail.Client(filled).traces_df(project="cli").set_index("root_name").loc["broken", "trace_id"]
    assert "ERROR RuntimeError: tool failed" in _ok(["traces", "show", err_tid, "-s", filled])


def test_traces_show_unknown_id_is_one_clear_line(filled):
    r = subprocess.run(
        [sys.executable, "-m", "ragtrail.cli", "traces", "show", "f" * 32, "-s", filled],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if "No module named ragtrail.cli.__main__" in r.stderr:
        r = subprocess.run(
            [sys.executable, "-c", "from ragtrail.cli import main; main()", "traces", "show", "f" * 32, "-s", filled],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
    assert r.returncode == 2
    assert r.stderr.startswith("error: no trace") and "Traceback" not in r.stderr


def test_traces_export_jsonl_and_parquet(filled, tmp_path):
    pd = pytest.importorskip("pandas")
    out = _ok(["traces", "export", "-o", str(tmp_path / "s.jsonl"), "-s", filled])
    assert "wrote 5 spans" in out
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(rows) == 5
    llm = next(r for r in rows if r["name"] == "llm")
    assert llm["input_tokens"] == 1000 and llm["attributes"][semconv.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini"
    _ok(["traces", "export", "-f", "parquet", "-o", str(tmp_path / "s.parquet"), "-p", "cli", "-s", filled])
    df = pd.read_parquet(tmp_path / "s.parquet")
    assert len(df) == 4 and set(df["project"]) == {"cli"}
    assert df.set_index("name").loc["llm", "cost_usd"] == pytest.approx(0.00021)
    assert json.loads(df.set_index("name").loc["llm", "attributes"])[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 100
    _ok(["traces", "export", "-f", "parquet", "-o", str(tmp_path / "e.parquet"), "-p", "nobody", "-s", filled])
    assert len(pd.read_parquet(tmp_path / "e.parquet")) == 0
    r = runner.invoke(app, ["traces", "export", "-f", "xml", "-o", str(tmp_path / "x"), "-s", filled])
    assert r.exit_code != 0 and isinstance(r.exception, ragtrail.ConfigError)


def test_traces_reprice(filled, tmp_path):
    prices = tmp_path / "p.json"
    prices.write_text(json.dumps({"gpt-4o-mini": {"input": 10.0, "output": 20.0}}))
    assert "repriced 1 span(s)" in _ok(["traces", "reprice", "--prices", str(prices), "-s", filled])
    assert ragtrail.Client(filled).spans_df(name="llm").iloc[0].cost_usd == pytest.approx(0.012)
    assert "repriced 0 span(s)" in _ok(["traces", "reprice", "--prices", str(prices), "-s", filled])
    assert "repriced 1 span(s)" in _ok(["traces", "reprice", "-p", "cli", "-s", filled])
    assert ragtrail.Client(filled).spans_df(name="llm").iloc[0].cost_usd == pytest.approx(0.00021)


def test_store_info(filled):
    out = _ok(["store", "info", "-s", filled])
    assert "sqlite" in out and filled in out
    data = json.loads(_ok(["store", "info", "-s", filled, "--json"]))
    assert data["spans"] == 5 and data["traces"] == 3 and data["projects"] == ["cli", "other"]
    assert data["schema_version"] >= 2 and data["size_bytes"] > 0


def test_store_info_postgres(pg_url):
    s = ragtrail.Client(pg_url).store
    s.write_spans(
        [
            (
                "a" * 32,
                "b" * 16,
                None,
                "x",
                "CHAIN",
                1,
                2,
                0.0,
                "OK",
                None,
                None,
                None,
                None,
                None,
                "pg",
                "{}",
                None,
                None,
            )
        ]
    )
    data = json.loads(_ok(["store", "info", "-s", pg_url, "--json"]))
    assert data["kind"] == "postgresql" and data["spans"] == 1 and data["projects"] == ["pg"]


# ------------------------------------------------------------- CLI reference (docs) vs --help
_COMMANDS = [("traces", "list"), ("traces", "show"), ("traces", "export"), ("traces", "reprice"), ("store", "info")]


def _command(group: str, name: str):
    root = typer.main.get_command(app)  # typer may ship its own click: use the command objects as they are
    return root.commands[group].commands[name]


def _doc_sections() -> dict[tuple[str, str], str]:
    """The CLI reference page as the docs build generates it (docs/hooks.py), one section per command."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ragtrail_docs_hooks", os.path.join(ROOT, "docs", "hooks.py"))
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    text = hooks.cli_reference()
    sections: dict[tuple[str, str], str] = {}
    parts = re.split(r"^#+ `ragtrail (\w+) (\w+)`\s*$", text, flags=re.M)
    for i in range(1, len(parts), 3):
        sections[(parts[i], parts[i + 1])] = parts[i + 2].split("\n#")[0]
    return sections


@pytest.mark.parametrize(("group", "name"), _COMMANDS)
def test_readme_cli_reference_matches_help(group, name):
    sections = _doc_sections()
    assert (group, name) in sections, f"the CLI reference has no section for ragtrail {group} {name}"
    documented = set(re.findall(r"`(--?[a-z][a-z-]*)`", sections[(group, name)]))
    cmd = _command(group, name)
    actual = {o for p in cmd.params if getattr(p, "param_type_name", "") == "option" for o in p.opts}
    actual.discard("--help")
    assert documented == actual, f"documented {sorted(documented)} but the command has {sorted(actual)}"
    help_text = runner.invoke(app, [group, name, "--help"]).output
    for opt in actual:
        assert opt in help_text
    first_doc_line = (cmd.help or "").strip().splitlines()[0]
    assert first_doc_line in " ".join(sections[(group, name)].split()), first_doc_line
