"""pytest plugin: assert ragtrail quality gates from a test suite.

Registered through the ``pytest11`` entry point (``ragtrail = "ragtrail.pytest_plugin"``), or
``-p ragtrail.pytest_plugin``. Two ways to use it::

    def test_rag_quality(ragtrail):                       # the fixture
        run = my_evaluation.run(config={"top_k": 5})
        ragtrail.assert_gates(run, "gates.yaml")          # or ["faithfulness >= 0.85", ...]
        ragtrail.assert_not_worse("rag-qa:production", run, metrics=["token_f1"], margin=0.02)

    @pytest.mark.ragtrail_gates("gates.yaml", run="rag-qa:latest", baseline="production")
    def test_latest_run_is_good_enough():                 # the marker: checked after the test passes
        ...

Options: ``--ragtrail-store`` (ini ``ragtrail_store``; default ``$RAGTRAIL_STORE``, else the
default store). Gate file paths are relative to the test file, then the rootdir. A failed gate
fails the test with a table of the gates; the Markdown summary is attached to the test report as
the ``ragtrail_gates`` user property (it shows up in ``--junitxml``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ragtrail._client import Client
    from ragtrail.evals._compare import Comparison
    from ragtrail.evals._gates import GateReport

_MARKER = "ragtrail_gates"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ragtrail", "ragtrail quality gates")
    group.addoption("--ragtrail-store", dest="ragtrail_store", default=None,
                    help="ragtrail store (path or URL) the ragtrail fixture and marker read runs from.")  # fmt: skip
    parser.addini("ragtrail_store", "ragtrail store (path or URL) for the ragtrail fixture and marker", default="")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(gates=None, *, run, baseline=None, **options): after the test passes, check ragtrail gates "
        "(a YAML file or a list such as ['faithfulness >= 0.85']) on the run (e.g. 'rag-qa:latest'); "
        "a failed gate fails the test.",
    )


def _store_arg(config: pytest.Config) -> str | None:
    return (
        config.getoption("ragtrail_store")
        or config.getini("ragtrail_store")
        or os.environ.get("RAGTRAIL_STORE")
        or None
    )


class RagtrailHelper:
    """What the ``ragtrail`` fixture gives a test."""

    def __init__(self, store: str | None, base_dirs: list[Path], item: pytest.Item | None = None) -> None:
        self._store_arg = store
        self._client: Client | None = None
        self._base_dirs = base_dirs
        self._item = item
        self.reports: list[GateReport] = []

    @property
    def client(self) -> Client:
        """A :class:`ragtrail.Client` on the configured store."""
        if self._client is None:
            from ragtrail._client import Client

            self._client = Client(self._store_arg)
        return self._client

    @property
    def store(self) -> Any:
        return self.client.store

    def run(self, ref: str) -> Any:
        """A stored run (``rag-qa:production``, ``rag-qa:v3``…)."""
        return self.client.run(ref)

    def compare(self, a: Any, b: Any, **kwargs: Any) -> Comparison:
        """``client.compare(a, b)``: the paired comparison (deltas b − a)."""
        return self.client.compare(a, b, **kwargs)  # type: ignore[no-any-return]

    def _gates(self, gates: Any) -> Any:
        if isinstance(gates, (str, os.PathLike)) and not str(gates).lstrip().startswith(("{", "[")):
            p = Path(gates)
            if not p.is_absolute():
                for base in self._base_dirs:
                    if (base / p).is_file():
                        return base / p
            return p
        return gates

    def check_gates(self, run: Any, gates: Any = None, *, baseline: str | None = None, **options: Any) -> GateReport:
        """Evaluate gates on ``run`` and return the :class:`GateReport` (no assertion)."""
        from ragtrail.evals._gates import check_gates

        report = check_gates(self.store, run, self._gates(gates), baseline=baseline, **options)
        self.reports.append(report)
        if self._item is not None:
            self._item.user_properties.append((_MARKER, report.to_markdown()))
        return report

    def assert_gates(self, run: Any, gates: Any = None, *, baseline: str | None = None, **options: Any) -> GateReport:
        """Fail the test (``AssertionError`` listing the failed gates) unless every gate passes."""
        report = self.check_gates(run, gates, baseline=baseline, **options)
        report.raise_for_failure()
        return report

    def assert_not_worse(
        self, baseline: Any, candidate: Any, *, metrics: list[str] | None = None, margin: float = 0.0, **kwargs: Any
    ) -> Comparison:
        """Non-inferiority of ``candidate`` to ``baseline`` on each metric: the CI's pessimistic
        bound of the delta must be within ``margin`` (lower bound > −margin; upper < +margin when
        lower is better)."""
        cmp = self.compare(baseline, candidate, metrics=metrics, **kwargs)
        bad = []
        for m in cmp.metrics:
            if m.ci_low is None or m.ci_high is None or m.n_pairs < 2:
                bad.append(f"  ✗ {m.metric}: only {m.n_pairs} paired examples")
                continue
            worst = m.ci_low if m.higher_is_better else -m.ci_high
            if not worst > -margin:
                bad.append(
                    f"  ✗ {m.metric}: delta {m.delta:+.4f}, CI [{m.ci_low:+.4f}, {m.ci_high:+.4f}] "
                    f"crosses the margin {margin:g}"
                )
        if bad:
            raise AssertionError(f"{cmp.b.ref} is worse than {cmp.a.ref}:\n" + "\n".join(bad))
        return cmp


def _base_dirs(item: pytest.Item) -> list[Path]:
    dirs = [Path(str(item.path)).parent] if getattr(item, "path", None) else []
    dirs.append(Path(str(item.config.rootpath)))
    return dirs


@pytest.fixture
def ragtrail(request: pytest.FixtureRequest) -> RagtrailHelper:
    """Assert ragtrail gates and comparisons: ``ragtrail.assert_gates(run, "gates.yaml")``."""
    return RagtrailHelper(_store_arg(request.config), _base_dirs(request.node), request.node)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    result = yield  # the test body raised already if it failed
    marker = item.get_closest_marker(_MARKER)
    if marker is not None:
        kwargs = dict(marker.kwargs)
        gates = marker.args[0] if marker.args else kwargs.pop("gates", None)
        run = kwargs.pop("run", None)
        if run is None:
            raise pytest.UsageError(f"@pytest.mark.{_MARKER} on {item.nodeid} needs run=, e.g. run='rag-qa:latest'")
        helper = RagtrailHelper(_store_arg(item.config), _base_dirs(item), item)
        helper.assert_gates(run, gates, **kwargs)
    return result


__all__ = ["RagtrailHelper", "ragtrail"]
