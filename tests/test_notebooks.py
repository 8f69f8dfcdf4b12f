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
    """The committed notebooks hold exactly the cells notebooks/_build.py writes (no stale copies), with
    the outputs of an execution (`python notebooks/_build.py --execute`), so they read on GitHub."""
    import runpy

    built = runpy.run_path(str(NOTEBOOKS / "_build.py"))["notebooks"]()
    committed = {p.name: nbformat.read(p, as_version=4) for p in NOTEBOOKS.glob("*.ipynb")}
    assert sorted(committed) == sorted(built)
    for name, nb in built.items():
        have = [(c.cell_type, c.source, c.get("id")) for c in committed[name].cells]
        assert have == [(c.cell_type, c.source, c.get("id")) for c in nb.cells], f"{name} is stale: rebuild it"
        code = [c for c in committed[name].cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), f"{name} is committed without outputs"
        outputs = [o for c in code for o in c.get("outputs", [])]
        assert outputs and not [o for o in outputs if o.get("output_type") == "error"]
