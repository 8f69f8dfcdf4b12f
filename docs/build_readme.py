"""Assemble README.md from docs/readme/*.md (``python docs/build_readme.py``).

Each area's section lives next to the others in docs/readme/; this script joins them in a fixed
order, so the README stays one page. tests/test_readme.py checks that README.md is up to date.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = [
    "_intro.md",
    "core.md",
    "langchain.md",
    "retrieval.md",
    "openai_serve.md",
    "gpu.md",
    "evals.md",
    "judges.md",
    "compare.md",
    "notebooks.md",
    "scaling.md",
    "benchmarks.md",
    "development.md",
]


def build() -> str:
    parts = []
    for name in ORDER:
        p = ROOT / "docs" / "readme" / name
        if p.exists():
            parts.append(p.read_text(encoding="utf-8").strip() + "\n")
    return "\n".join(parts)


if __name__ == "__main__":
    (ROOT / "README.md").write_text(build(), encoding="utf-8")
