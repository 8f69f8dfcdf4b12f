"""First-use CLI polish: ``--version``, ``eval run --set``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ragtrail
from ragtrail.cli import app
from ragtrail.cli._eval import apply_overrides

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_tracing_left_behind():  # type: ignore[no-untyped-def]
    """Evaluations start ragtrail when it is not running; stop it so the next test starts clean."""
    yield
    import ragtrail

    ragtrail.shutdown()


def test_version_prints_the_version() -> None:
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == ragtrail.__version__


def _eval_dir(tmp_path: Path) -> Path:
    (tmp_path / "pipe_set.py").write_text("def answer(question, config):\n    return str(config['top_k'])\n")
    (tmp_path / "data.jsonl").write_text('{"id": "a", "input": "q", "reference": "3"}\n')
    (tmp_path / "eval.yaml").write_text(
        "name: settest\ndataset: data.jsonl\npipeline: pipe_set:answer\nscorers: [exact_match]\n"
        "config: {top_k: 5, retriever: {k: 1}}\n"
    )
    return tmp_path


def test_eval_run_set_overrides_config_values(tmp_path: Path) -> None:
    d = _eval_dir(tmp_path)
    store = str(tmp_path / "s.db")
    base = ["eval", "run", str(d / "eval.yaml"), "--store", store, "--no-progress"]
    r = runner.invoke(app, base)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, [*base, "--set", "top_k=3", "--set", "retriever.k=2", "--set", "model=gpt-4o"])
    assert r.exit_code == 0, r.output
    assert "settest:v2" in r.output
    v1, v2 = (ragtrail.Client(store).run(f"settest:v{i}") for i in (1, 2))
    assert v1.config == {"top_k": 5, "retriever": {"k": 1}}
    assert v2.config == {"top_k": 3, "retriever": {"k": 2}, "model": "gpt-4o"}  # YAML-typed values
    assert v1.metrics["exact_match"] == 0.0 and v2.metrics["exact_match"] == 1.0  # the pipeline saw top_k=3
    shown = json.loads(runner.invoke(app, ["runs", "show", "settest:v2", "--store", store, "--json"]).output)
    assert shown["config"]["top_k"] == 3


@pytest.mark.parametrize(
    ("item", "message"),
    [("top_k", "expected KEY=VALUE"), ("=3", "expected KEY=VALUE"), ("top_k.x=1", "not a mapping")],
)
def test_set_rejects_malformed_items(item: str, message: str) -> None:
    with pytest.raises(ragtrail.ConfigError, match=message):
        apply_overrides({"top_k": 5}, [item])


def test_set_error_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    d = _eval_dir(tmp_path)
    r = runner.invoke(app, ["eval", "run", str(d / "eval.yaml"), "--store", str(tmp_path / "s.db"), "--set", "oops"])
    assert r.exit_code != 0
    assert isinstance(r.exception, ragtrail.ConfigError) and "--set 'oops'" in str(r.exception)


def test_runs_list_shows_the_differing_config_without_pandas(tmp_path: Path) -> None:
    import subprocess
    import sys

    d = _eval_dir(tmp_path)
    store = str(tmp_path / "s.db")
    base = ["eval", "run", str(d / "eval.yaml"), "--store", store, "--no-progress"]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, [*base, "--set", "top_k=3"]).exit_code == 0
    root = Path(__file__).resolve().parent.parent
    code = (
        "import sys; import tests._wheel_smoke as s; sys.meta_path.insert(0, s._Block());"
        "sys.argv = ['ragtrail', 'runs', 'list', '--store', sys.argv[1]];"
        "from ragtrail.cli import main; main()"
    )
    r = subprocess.run([sys.executable, "-c", code, store], cwd=root, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(ragtrail.__file__).parent.parent), str(root)]),
                            "COLUMNS": "250"})  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    lines = {ln.split()[1]: ln for ln in r.stdout.splitlines() if "settest:v" in ln}
    assert "top_k=3" in lines["settest:v2"] and "top_k=5" in lines["settest:v1"]
    assert "retriever" not in r.stdout  # unchanged keys are left out


def test_results_with_text_and_informative_reprs(tmp_path: Path) -> None:
    ragtrail.shutdown()  # an earlier test's evaluation left ragtrail initialised into its own store
    d = _eval_dir(tmp_path)
    store = str(tmp_path / "s.db")
    base = ["eval", "run", str(d / "eval.yaml"), "--store", store, "--no-progress"]
    assert runner.invoke(app, base).exit_code == 0
    assert runner.invoke(app, [*base, "--set", "top_k=3"]).exit_code == 0
    client = ragtrail.Client(store)
    run = client.run("settest:v2")
    (row,) = run.results(with_text=True)
    assert (row["input"], row["reference"], row["output"]) == ("q", "3", "3")
    assert "input" not in run.results()[0]
    df = run.results_df(with_text=True)
    assert list(df.columns[-3:]) == ["input", "reference", "output"] and df.loc[0, "reference"] == "3"
    assert repr(run) == "<Run settest:v2 finished 1 examples exact_match=1>"
    cmp = client.compare("settest:v1", "settest:v2")
    assert repr(cmp).startswith("<Comparison settest:v2 vs settest:v1: 1 metrics, 0 better, 0 worse at 95%")
    assert "settest:v2 vs settest:v1" in cmp._repr_html_() and "<table>" in cmp._repr_html_()
    assert "<b>settest:v2 (finished, 1 examples)</b>" in run._repr_html_()
    assert ragtrail.flush()  # the evaluation traced each example into this store
    trace = client.trace(row["trace_id"])
    assert repr(trace).startswith(f"<Trace {trace.trace_id[:8]}… ") and " spans " in repr(trace)
    out = runner.invoke(app, ["runs", "show", "settest:v2", "--store", store, "-e", "--text"]).output
    assert "input:     q" in out and "reference: 3" in out and "output:    3" in out


def test_runs_compare_table_has_a_verdict_header_and_keeps_tiny_figures() -> None:
    from rich.console import Console

    from ragtrail.evals._compare import _fmt

    assert _fmt(1.03e-05) == "1.03e-05" and _fmt(1.7e-05, signed=True) == "+1.7e-05"  # per-example cost
    assert _fmt(0.0) == "0.0000" and _fmt(0.58159) == "0.5816"
    import ragtrail.evals._compare as c

    cmp = c.Comparison(a=None, b=None, metrics=[], regressions=[], improvements=[])  # type: ignore[arg-type]
    cmp.a = cmp.b = type("R", (), {"ref": "x:v1"})()  # type: ignore[assignment]
    console = Console(record=True, width=200)
    console.print(cmp.table())
    assert "verdict" in console.export_text()


def test_help_is_readable_grouped_and_ordered() -> None:
    import typer

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="ragtrail")
    paths = [[]]
    for name in root.list_commands(ctx):
        sub = root.get_command(ctx, name)
        paths.append([name])
        sub_ctx = sub.context_class(sub, info_name=name, parent=ctx)
        paths += [[name, n] for n in getattr(sub, "list_commands", lambda _c: [])(sub_ctx)]
    assert len(paths) > 20
    for path in paths:
        out = runner.invoke(app, [*path, "--help"], terminal_width=200).output
        assert "<bool>" not in out and "<list[" not in out, (path, out)
    import re

    top = runner.invoke(app, ["--help"], terminal_width=200).output
    order = re.findall(r"^│ (\w+)\s{2,}", top, flags=re.M)
    assert order[0] == "traces" and order.index("serve") < order.index("store") < order.index("datasets"), order
    assert order.index("datasets") < order.index("eval") < order.index("runs") < order.index("gate"), order
    assert top.index("Tracing") < top.index("│ traces") < top.index("Evaluation") < top.index("│ datasets")
    assert "─ Commands ─" not in top  # every command sits in a named panel (a new one under "More")
    listing = runner.invoke(app, ["traces", "list", "--help"], terminal_width=200).output
    assert "PATH|URL" in listing and "ISO-TIME" in listing and "<str>" not in listing
    runs = runner.invoke(app, ["runs", "--help"], terminal_width=200).output
    assert "List, show, compare, alias and promote" in runs
