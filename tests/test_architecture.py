"""The package's import graph keeps the layering of DESIGN.md and has no import circles.

The graph is read from the source (ast), so nothing is imported. An import inside a function (a
deferred import) is counted apart from one at module level: circles among module-level imports are
never allowed; circles that need a deferred import are listed in ``DEFERRED_CIRCLES`` (the known
ones, to shrink) and a new one fails. Imports under ``if TYPE_CHECKING:`` are not imports at run time.
Importing ``a.b.c`` also runs the packages ``a.b`` (so it is an edge to them too).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "src" / "ragtrail"

FRAMEWORKS = ("langchain", "langchain_core", "langchain_community", "langchain_openai", "llama_index", "chromadb",
              "vllm", "torch", "transformers", "sentence_transformers", "openai", "ray", "pandas")  # fmt: skip
"""Libraries that the core layers (store, tracing) never import."""

DEFERRED_CIRCLES: list[set[str]] = [
    # init() loads the price table lazily; the price module reads the config and starts no span itself
    {"ragtrail.tracing._setup", "ragtrail.tracing._spans", "ragtrail.tracing._usage"},
    # the receiver starts its HTTP/gRPC front ends, which call back into it (grpcio/uvicorn stay optional)
    {"ragtrail.server._grpc", "ragtrail.server._http", "ragtrail.server._receiver"},
    # sweeps run evaluations built from config files, an evaluation run inside a sweep links its trial, and
    # the Ray backend (driver and worker side) drives the harness's engine (owned by the sweeps work: it moves
    # onto the repository later)
    {
        "ragtrail.evals._config",
        "ragtrail.evals._harness",
        "ragtrail.evals._ray",
        "ragtrail.evals._ray_worker",
        "ragtrail.evals._sweep",
    },  # fmt: skip
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _owner(name: str) -> str | None:
    """The ragtrail module that ``import name`` loads (``ragtrail.x.y`` or its closest package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> Iterator[tuple[str, bool]]:
    """``(imported absolute name, at module level?)`` for every import in ``module``."""
    path = MODULES[module]
    is_pkg = path.name == "__init__.py"

    def walk(node: ast.AST, top: bool) -> Iterator[tuple[str, bool]]:
        for ch in ast.iter_child_nodes(node):
            if isinstance(ch, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(ch, False)
            elif isinstance(ch, ast.If) and "TYPE_CHECKING" in ast.unparse(ch.test):
                yield from (x for s in ch.orelse for x in walk(ast.Module(body=[s], type_ignores=[]), top))
            elif isinstance(ch, ast.Import):
                yield from ((a.name, top) for a in ch.names)
            elif isinstance(ch, ast.ImportFrom):
                if ch.level:
                    base = module.split(".") if is_pkg else module.split(".")[:-1]
                    base = base[: len(base) - ch.level + 1]
                    mod = ".".join(base + ([ch.module] if ch.module else []))
                else:
                    mod = ch.module or ""
                for a in ch.names:
                    full = f"{mod}.{a.name}"
                    yield (full if full in MODULES else mod), top
            else:
                yield from walk(ch, top)

    yield from walk(ast.parse(path.read_text(encoding="utf-8")), True)


def _graph() -> tuple[dict[tuple[str, str], set[bool]], dict[str, set[str]]]:
    """Edges between ragtrail modules (with their levels) and each module's third-party imports."""
    edges: dict[tuple[str, str], set[bool]] = defaultdict(set)
    external: dict[str, set[str]] = defaultdict(set)
    for m in MODULES:
        for name, top in _imports(m):
            if not name.startswith("ragtrail"):
                if name != "__future__":
                    external[m].add(name.split(".")[0])
                continue
            target = _owner(name)
            if target is None or target == m:
                continue
            parts = target.split(".")
            for i in range(2, len(parts) + 1):  # the packages on the way run first
                t = ".".join(parts[:i])
                if t in MODULES and t != m and not m.startswith(t + "."):
                    edges[(m, t)].add(top)
            if target == "ragtrail" and m != "ragtrail":
                edges[(m, "ragtrail")].add(top)
    return edges, external


EDGES, EXTERNAL = _graph()


def _circles(module_level_only: bool) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    g: dict[str, set[str]] = defaultdict(set)
    for (a, b), levels in EDGES.items():
        if not module_level_only or True in levels:
            g[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ragtrail"


def _edges_from(layer: str) -> Iterator[tuple[str, str]]:
    for a, b in sorted(EDGES):
        if _layer(a) == layer:
            yield a, b


def test_the_graph_is_read() -> None:
    assert len(MODULES) > 50
    assert ("ragtrail.evals._runs", "ragtrail.store._evals") in EDGES  # a known edge, so the reader works


def test_no_module_level_import_circles() -> None:
    circles = _circles(module_level_only=True)
    assert circles == [], f"import circles at module level: {[sorted(c) for c in circles]}"


def test_no_new_deferred_import_circles() -> None:
    new = [sorted(c) for c in _circles(module_level_only=False) if not any(c <= known for known in DEFERRED_CIRCLES)]
    assert new == [], f"new import circles (through imports inside functions): {new}"


def test_semconv_imports_nothing() -> None:
    assert [n for n, _ in _imports("ragtrail.semconv") if n != "__future__"] == []


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("store", {"tracing", "evals", "analysis", "ui", "connectors", "server", "cli", "demo", "_client", "ragtrail"}),
        ("tracing", {"evals", "analysis", "ui", "connectors", "server", "cli", "demo", "_client", "ragtrail"}),
        ("evals", {"cli", "ui", "connectors", "server", "demo"}),
        ("analysis", {"cli", "ui", "server", "connectors"}),
    ],
)
def test_layering(layer: str, forbidden: set[str]) -> None:
    bad = [f"{a} -> {b}" for a, b in _edges_from(layer) if _layer(b) in forbidden]
    assert bad == [], f"{layer} must not import {sorted(forbidden)}: {bad}"


@pytest.mark.parametrize("layer", ["store", "tracing"])
def test_core_layers_import_no_framework(layer: str) -> None:
    bad = sorted(
        f"{m} -> {lib}" for m, libs in EXTERNAL.items() if _layer(m) == layer for lib in libs & set(FRAMEWORKS)
    )
    assert bad == [], f"{layer} must not import a framework: {bad}"


CONNECTOR_ALLOWED = {"ragtrail.tracing", "ragtrail.semconv", "ragtrail._exceptions", "ragtrail._deps", "ragtrail._log",
                     "ragtrail.connectors", "ragtrail.connectors._common"}  # fmt: skip
"""What a connector may import besides its own package: the public connector API (``ragtrail.tracing``),
``semconv``, the connectors' shared instrumentor base, the error types, ``require`` and the logger."""


def test_connectors_use_only_the_public_connector_api() -> None:
    bad = []
    for a, b in _edges_from("connectors"):
        own = ".".join(a.split(".")[:3])
        if b in CONNECTOR_ALLOWED or b == own or b.startswith(own + "."):
            continue
        bad.append(f"{a} -> {b}")
    assert bad == [], f"connectors import private tracing modules or other parts: {bad}"
