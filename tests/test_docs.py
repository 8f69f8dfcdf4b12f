"""The docs site: it builds with ``mkdocs build --strict``, its examples run, it uses only public names,
and the configuration reference lists every option and environment variable the code reads."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ragtrail

ROOT = Path(__file__).resolve().parent.parent
PKG = Path(ragtrail.__file__).resolve().parent  # ragtrail/ now, src/ragtrail/ after a src layout
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"(<!-- runnable -->\n)?```python\n(.*?)```", re.S)


def _blocks(path: Path) -> list[tuple[bool, str]]:
    """(runnable, code) for every ```python block of a page."""
    return [(bool(m.group(1)), m.group(2)) for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


def _hooks():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ragtrail_docs_hooks", DOCS / "hooks.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


# ----------------------------------------------------------------------------------- the site
@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    """Broken links, missing pages and unresolved API references fail the build."""
    assert importlib.util.find_spec("mkdocs") is not None, "mkdocs is not installed: pip install -e '.[dev]'"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(PKG.parent)}
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                       cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    cli = (tmp_path / "site" / "cli" / "index.html").read_text(encoding="utf-8")
    for command in ("ragtrail traces list", "ragtrail eval run", "ragtrail runs compare", "--set"):
        assert command in cli, f"the generated CLI reference lacks {command!r}"
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert "record_usage" in api and "Evaluation" in api


def test_every_page_is_in_the_navigation() -> None:
    """Pages missing from mkdocs.yml's nav still reach the site under "Features" (docs/hooks.py)."""
    import yaml

    cfg = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)  # noqa: S506
    config = {"nav": cfg["nav"], "docs_dir": str(DOCS)}
    hooks = _hooks()
    hooks.on_config(config)
    assert hooks.unlisted_pages(DOCS, config["nav"]) == []


def test_cli_reference_covers_every_command_with_readable_values() -> None:
    text = _hooks().cli_reference()
    import typer

    from ragtrail.cli import app

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="ragtrail")
    for name in root.list_commands(ctx):
        assert f"`ragtrail {name}`" in text, name
    assert "<str>" not in text and "<bool>" not in text and "<list[" not in text
    undocumented = [row for row in text.splitlines() if row.startswith("| `-") and row.endswith("|  |")]
    assert not undocumented, f"options without help text: {undocumented}"
    assert "`--store`, `-s` | PATH\\|URL" in text


# ------------------------------------------------------------------------------- code blocks
RUNNABLE = [p for p in PAGES if any(run for run, _ in _blocks(p))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE, ids=[p.relative_to(DOCS).as_posix() for p in RUNNABLE])
def test_runnable_blocks_run(page: Path, tmp_path: Path) -> None:
    """Blocks marked ``<!-- runnable -->`` run offline, in page order, in one fresh process."""
    code = "\n".join(textwrap.dedent(c) for run, c in _blocks(page) if run)
    _run(code, tmp_path)


README_CHAIN = """
# the reader's `chain`: a real LangChain runnable whose LLM answer is faked (FakeListChatModel)
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate
chain = ChatPromptTemplate.from_template("Answer: {q}") | FakeListChatModel(responses=["Use the reset link."])
"""

README_CHECK = """
import ragtrail
spans = ragtrail.Client().spans(project="support-bot")
assert {s.kind for s in spans} >= {"CHAIN", "LLM"}, spans
assert answer.content == "Use the reset link."
"""


@pytest.mark.slow
@pytest.mark.parametrize("page", [ROOT / "README.md", DOCS / "index.md"], ids=["README", "index"])
def test_quick_start_runs(page: Path, tmp_path: Path) -> None:
    """The 10-line LangChain quick start is the first Python block and runs as written."""
    first = _blocks(page)[0][1]
    assert "CallbackHandler" in first and len(first.strip().splitlines()) <= 10
    _run(README_CHAIN + first + README_CHECK, tmp_path)


def _run(code: str, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(code, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(PKG.parent), "RAGTRAIL_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env.pop("RAGTRAIL_STORE", None)
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                       env=env)  # fmt: skip
    assert r.returncode == 0, f"{code}\n---\n{r.stdout}\n{r.stderr}"


# ------------------------------------------------------------------------------ public names
def _imports(code: str) -> list[tuple[str, str | None]]:
    """(module, name) for every ragtrail import in a code block (name None for ``import m``)."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return []
    out: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ragtrail"):
            out.extend((node.module or "", a.name) for a in node.names)
        elif isinstance(node, ast.Import):
            out.extend((a.name, None) for a in node.names if a.name.startswith("ragtrail"))
    return out


DOC_FILES = [ROOT / "README.md", *PAGES]


def test_docs_import_only_public_names() -> None:
    problems = []
    seen = 0
    for page in DOC_FILES:
        for _, code in _blocks(page):
            for module, name in _imports(code):
                seen += 1
                where = f"{page.relative_to(ROOT)}: from {module} import {name}"
                if any(part.startswith("_") for part in module.split(".")):
                    problems.append(f"{where}: private module")
                    continue
                mod = importlib.import_module(module)
                if name is None:
                    continue
                if importlib.util.find_spec(f"{module}.{name}") is not None and not name.startswith("_"):
                    continue  # a public submodule
                if name not in getattr(mod, "__all__", ()):
                    problems.append(f"{where}: {name!r} is not in {module}.__all__")
    assert seen > 20, "no imports found: is the code-block pattern still right?"
    assert not problems, "\n".join(problems)


def test_docs_name_no_private_module() -> None:
    """Prose too: `ragtrail.tracing._gpu` and the like send users into private modules."""
    private = re.compile(r"\bragtrail(?:\.\w+)*\._\w+")
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in DOC_FILES for m in private.finditer(p.read_text())]
    assert not hits, hits


def test_docs_have_no_machine_specific_paths() -> None:
    pattern = re.compile(r"/(?:work|root|home/\w+|Users/\w+|tmp/\w+)/")
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in DOC_FILES for m in pattern.finditer(p.read_text())]
    assert not hits, hits


# ----------------------------------------------------------------------- configuration reference
def test_configuration_reference_lists_every_option_and_variable() -> None:
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    from ragtrail.tracing import _setup

    source = Path(_setup.__file__).read_text(encoding="utf-8")
    known = re.search(r"known = \{(.*?)\}", source, re.S)
    assert known is not None
    options = re.findall(r'"(\w+)"', known.group(1))
    assert len(options) >= 10
    for option in [*options, "project", "store", "capture_content", "otlp_endpoint", "openinference"]:
        assert f"{option}=" in text, f"init option {option!r} is missing from docs/configuration.md"
    variables = set()
    for path in PKG.rglob("*.py"):
        variables |= set(re.findall(r"\b(RAGTRAIL_[A-Z_]+)\b", path.read_text(encoding="utf-8")))
    missing = sorted(v for v in variables if f"`{v}`" not in text)
    assert not missing, f"environment variables missing from docs/configuration.md: {missing}"
