"""README.md is a front page: short, the LangChain quick start first, the two commands, links that resolve.

The rest of the documentation lives in docs/ (checked by tests/test_docs.py, which also runs the
README's quick start).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_is_a_front_page() -> None:
    assert len(README.splitlines()) <= 200, "README.md should stay a front page; move details into docs/"


def test_quick_start_comes_first() -> None:
    first_code = README.index("```python")
    assert "pip install 'ragtrail[langchain]'" in README[:first_code]
    assert README.index("CallbackHandler") < README.index("## The two commands")
    assert "ragtrail traces" in README[first_code : README.index("## Evaluate")]


def test_readme_has_the_two_commands_and_the_screenshot() -> None:
    assert "make demo" in README and "make test" in README
    assert "(docs/img/ui-trace.png)" in README  # written by the UI's screenshot script (docs/ui_screenshots.py)


def test_readme_links_resolve() -> None:
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    local = [link for link in links if not link.startswith(("http://", "https://"))]
    assert len(local) > 15
    # the screenshot comes with the UI's branch (docs/img/); every other link must exist now
    missing = [link for link in local if not link.startswith("docs/img/") and not (ROOT / link).exists()]
    assert not missing, missing


def test_makefile_and_ci_call_the_readme_commands() -> None:
    make = (ROOT / "Makefile").read_text()
    assert "\ndemo: venv" in make and "\ntest: venv" in make
    assert "make test" in (ROOT / ".ci" / "run").read_text()
