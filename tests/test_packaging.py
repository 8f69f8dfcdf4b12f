"""Packaging: a light base install, one clear error per missing extra, and a wheel that works on its own.

The slow test builds the sdist and the wheel, checks them with ``twine check``, installs the WHEEL into a
fresh venv (base dependencies from PyPI), measures its site-packages (≤ 70 MiB) and runs
tests/_wheel_smoke.py there: bare, then with ``[langchain]`` (langchain-core alone), then with ``[evals]``.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest
import tomllib

import ragtrail
from ragtrail import MissingDependencyError
from ragtrail._deps import EXTRAS, require

ROOT = Path(__file__).resolve().parent.parent
PKG = Path(ragtrail.__file__).resolve().parent  # the package's folder (ragtrail/ now, src/ragtrail/ after a src layout)
PATHS = os.pathsep.join(dict.fromkeys([str(PKG.parent), str(ROOT)]))  # the package, and tests/ for the smoke module
SMOKE = Path(__file__).resolve().parent / "_wheel_smoke.py"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
OPTIONAL = PYPROJECT["project"]["optional-dependencies"]
BASE_LIMIT_MIB = 70
HEAVY_DISTS = ("pandas", "pyarrow", "numpy", "scipy", "matplotlib", "langchain", "langgraph", "torch")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra)
    return env


# ------------------------------------------------------------------------------------------ fast
def test_require_raises_one_line_naming_the_extra() -> None:
    with pytest.raises(MissingDependencyError) as info:
        require("ragtrail_no_such_module.sub", extra="analysis", feature="Client.spans_df()")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.endswith("pip install 'ragtrail[analysis]'")
    assert "Client.spans_df()" in msg
    assert isinstance(info.value, ImportError)  # `except ImportError` in user code still catches it


def test_require_defaults_the_extra_from_the_module() -> None:
    assert EXTRAS["pandas"] == "analysis" and EXTRAS["numpy"] == "evals"
    with pytest.raises(MissingDependencyError, match=r"pip install 'ragtrail\[all\]'"):
        require("ragtrail_no_such_module")


def _required_extras() -> set[str]:
    """Every extra that the package's require(...) calls name."""
    found: set[str] = set(EXTRAS.values())
    for path in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "require":
                for kw in node.keywords:
                    if kw.arg == "extra" and isinstance(kw.value, ast.Constant):
                        found.add(kw.value.value)
    return found


def test_every_extra_the_code_names_exists_and_all_is_complete() -> None:
    missing = _required_extras() - set(OPTIONAL)
    assert not missing, f"require(..., extra=…) names extras that pyproject.toml lacks: {missing}"
    all_spec = " ".join(OPTIONAL["all"])
    # vllm pins its own torch build (installed separately, see Makefile); dev is for contributors
    for extra in set(OPTIONAL) - {"all", "dev", "vllm"}:
        assert extra in all_spec, f"extra {extra!r} is not part of 'all'"


def test_base_dependencies_are_light() -> None:
    base = " ".join(PYPROJECT["project"]["dependencies"]).lower()
    for heavy in HEAVY_DISTS:
        assert f'"{heavy}' not in f'"{base}' and f" {heavy}" not in f" {base}", f"{heavy} is a base dependency"
    assert OPTIONAL["langchain"] == [d for d in OPTIONAL["langchain"] if d.startswith("langchain-core")]


def test_bare_install_simulated(tmp_path: Path) -> None:
    """The smoke test with pandas, numpy, scipy, pyarrow, langchain… made unimportable in the dev venv."""
    r = subprocess.run(
        [sys.executable, str(SMOKE), str(tmp_path / "s.db"), "core"],
        env=_env(PYTHONPATH=PATHS, RAGTRAIL_SMOKE_BLOCK="1", RAGTRAIL_SMOKE_FROM_SOURCE="1"),
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0 and "ok core" in r.stdout, r.stdout + r.stderr


def test_cli_turns_a_missing_extra_into_one_line(tmp_path: Path) -> None:
    code = (
        "import sys, runpy; sys.argv = ['ragtrail', 'runs', 'compare', 'a:v1', 'a:v2', '--store', sys.argv[1]];"
        "import tests._wheel_smoke as s; sys.meta_path.insert(0, s._Block());"
        "from ragtrail.cli import main; main()"
    )
    from ragtrail.store import open_store

    open_store(str(tmp_path / "s.db")).close()  # an existing store: read commands refuse a missing one first
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.db")], env=_env(PYTHONPATH=PATHS),
                       capture_output=True, text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: numpy is not installed (needed by comparisons, gates, reports and sweeps); "
        "install it with: pip install 'ragtrail[evals]'"
    ], r.stderr


# ------------------------------------------------------------------------------------------ slow
def _pypi_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/pip/", timeout=5).close()  # noqa: S310
    except OSError:
        return False
    return True


def _site_packages_bytes(venv: Path) -> int:
    (sp,) = list(venv.glob("lib/python3*/site-packages"))
    return sum(f.stat().st_size for f in sp.rglob("*") if f.is_file() and not f.is_symlink())


def _build(tmp: Path) -> tuple[Path, Path]:
    """sdist + wheel built from a copy of the tree (no build/ or egg-info left in the checkout)."""
    src = tmp / "src"
    ignore = shutil.ignore_patterns(".venv*", "build", "dist", "*.egg-info", "__pycache__", ".git", "site", "*.db")
    shutil.copytree(ROOT, src, ignore=ignore)
    out = tmp / "dist"
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(src)],
                   check=True, capture_output=True, timeout=180, env=_env())  # fmt: skip
    (whl,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return whl, sdist


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The wheel and the sdist, built once for this module (needs PyPI for the fresh venvs)."""
    if not _pypi_reachable():
        if os.environ.get("RAGTRAIL_REQUIRE_PYPI"):
            pytest.fail("PyPI is not reachable: the wheel test needs it to install the base dependencies")
        pytest.skip("PyPI is not reachable (the fresh venv installs the base dependencies from it)")
    return _build(tmp_path_factory.mktemp("dist"))


def _venv(path: Path) -> tuple[Path, list[str]]:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    py = path / "bin" / "python"
    return py, [str(py), "-m", "pip", "install", "-q"]


def _smoke(py: Path, tmp_path: Path, step: str) -> None:
    r = subprocess.run([str(py), str(SMOKE), str(tmp_path / f"{step}.db"), step], cwd=tmp_path,
                       capture_output=True, text=True, timeout=180, env=_env())  # fmt: skip
    assert r.returncode == 0 and f"ok {step}" in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
def test_wheel_in_a_fresh_venv(dist: tuple[Path, Path], tmp_path: Path) -> None:
    whl, sdist = dist
    twine = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", str(whl), str(sdist)],
                           capture_output=True, text=True, env=_env())  # fmt: skip
    assert twine.returncode == 0, twine.stdout + twine.stderr

    names = set(zipfile.ZipFile(whl).namelist())
    for data in ("ragtrail/py.typed", "ragtrail/data/prices.json", "ragtrail/data/report/report.js",
                 "ragtrail/data/report/report.css", "ragtrail/data/demo/corpus.jsonl", "ragtrail/data/demo/qa.jsonl"):  # fmt: skip
        assert data in names, f"{data} is missing from the wheel"
    assert not any(n.startswith(("tests/", "benchmarks/")) for n in names)

    venv = tmp_path / "venv"
    py, pip = _venv(venv)
    subprocess.run([*pip, str(whl)], check=True, timeout=300, env=_env(), capture_output=True)
    size = _site_packages_bytes(venv)
    print(f"\nbare install: site-packages {size / 2**20:.1f} MiB")
    assert size <= BASE_LIMIT_MIB * 2**20, f"bare install is {size / 2**20:.1f} MiB (limit {BASE_LIMIT_MIB} MiB)"
    frozen = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True, env=_env()).stdout
    for heavy in HEAVY_DISTS:
        assert f"\n{heavy}==" not in "\n" + frozen.lower(), f"{heavy} came with the bare install"

    def smoke(step: str) -> None:
        _smoke(py, tmp_path, step)

    def cli(*args: str) -> str:
        r = subprocess.run([str(venv / "bin" / "ragtrail"), *args], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120, env=_env())  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    smoke("core")
    assert "answer" in cli("traces", "list", "--store", str(tmp_path / "core.db"))
    assert cli("--version").strip() == whl.name.split("-")[1]
    for args, extra in ((["serve"], "otlp"), (["runs", "compare", "toy:v1", "toy:v1"], "evals")):
        r = subprocess.run([str(venv / "bin" / "ragtrail"), *args, "--store", str(tmp_path / "core.db")],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env())  # fmt: skip
        assert r.returncode == 2 and r.stderr.strip().endswith(f"pip install 'ragtrail[{extra}]'"), r.stderr

    subprocess.run([*pip, f"{whl}[langchain]"], check=True, timeout=300, env=_env(), capture_output=True)
    print(f"with [langchain]: site-packages {_site_packages_bytes(venv) / 2**20:.1f} MiB")
    smoke("langchain")

    subprocess.run([*pip, f"{whl}[evals]"], check=True, timeout=300, env=_env(), capture_output=True)
    print(f"with [langchain,evals]: site-packages {_site_packages_bytes(venv) / 2**20:.1f} MiB")
    smoke("evals")


@pytest.mark.slow
def test_handler_with_the_oldest_supported_langchain_core(dist: tuple[Path, Path], tmp_path: Path) -> None:
    """The low end of the declared langchain-core range (the high end is what the dev venv has)."""
    (spec,) = OPTIONAL["langchain"]
    low = re.search(r">=\s*([\d.]+)", spec)
    assert low is not None, spec
    py, pip = _venv(tmp_path / "venv")
    subprocess.run([*pip, str(dist[0]), f"langchain-core=={low.group(1)}"], check=True, timeout=300, env=_env(),
                   capture_output=True)  # fmt: skip
    version = subprocess.run([str(py), "-c", "import langchain_core; print(langchain_core.__version__)"],
                             capture_output=True, text=True, env=_env()).stdout.strip()  # fmt: skip
    assert version.startswith(low.group(1)), version
    _smoke(py, tmp_path, "langchain")
