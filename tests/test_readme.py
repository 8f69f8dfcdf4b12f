"""README.md is assembled from docs/readme/*.md and states the two commands."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _builder():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("build_readme", ROOT / "docs" / "build_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_readme_is_built_from_docs():
    assert (ROOT / "README.md").read_text(encoding="utf-8") == _builder().build(), (
        "README.md is stale: run `python docs/build_readme.py`"
    )


def test_readme_has_the_two_commands_and_every_section():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make demo" in text and "make test" in text
    for name in _builder().ORDER:
        assert (ROOT / "docs" / "readme" / name).exists(), name
    assert "DEMO_OUTPUT" not in text and "BEIR_RESULT" not in text  # placeholders filled in


def test_makefile_and_ci_call_the_readme_commands():
    make = (ROOT / "Makefile").read_text()
    assert "\ndemo: venv" in make and "\ntest: venv" in make
    assert "make test" in (ROOT / ".ci" / "run").read_text()
