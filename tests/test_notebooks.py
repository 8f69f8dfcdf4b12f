"""The three notebooks run top to bottom (their assert cells check what they produced)."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", ["01_trace_a_rag_app.ipynb", "02_analyze_traces.ipynb", "03_evaluate_and_compare.ipynb"]
)
def test_notebook_executes_and_asserts(name, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGTRAIL_STORE", str(tmp_path / "nb.db"))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders plots as PNG
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # rich displays were produced (tables as HTML, plots as PNG), not only text
    kinds = {k for o in outputs for k in o.get("data", {})}
    assert "text/html" in kinds
    if name != "01_trace_a_rag_app.ipynb":
        assert "image/png" in kinds
    else:
        # the Trace renders as a waterfall
        assert any("RETRIEVER" in o.get("data", {}).get("text/html", "") for o in outputs)


def test_notebooks_are_built_from_source():
    """The committed notebooks are exactly what notebooks/_build.py writes (no stale copies)."""
    import runpy

    before = {p.name: p.read_text() for p in NOTEBOOKS.glob("*.ipynb")}
    assert len(before) == 3
    runpy.run_path(str(NOTEBOOKS / "_build.py"), run_name="__main__")
    after = {p.name: p.read_text() for p in NOTEBOOKS.glob("*.ipynb")}
    assert before == after
