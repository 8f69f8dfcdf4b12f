"""Shared fixtures: a temporary store, ragtrail initialised into it with an in-memory exporter beside
the store, and the real PostgreSQL server (skipped on a laptop without one; a failure in CI)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

import ragtrail  # noqa: E402


@dataclass
class Traced:
    """What the ``traced`` fixture gives a test."""

    store_path: str
    memory: InMemorySpanExporter
    config: object

    def spans(self):  # type: ignore[no-untyped-def]
        """Flush, then the ended spans (SDK ReadableSpans) in end order."""
        assert ragtrail.flush(10)
        return list(self.memory.get_finished_spans())

    def by_name(self, name: str):  # type: ignore[no-untyped-def]
        return [s for s in self.spans() if s.name == name]

    def client(self) -> ragtrail.Client:
        ragtrail.flush(10)
        return ragtrail.Client(self.store_path)


@pytest.fixture
def store_path(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return str(tmp_path / "ragtrail.db")


@pytest.fixture
def traced(store_path) -> Iterator[Traced]:  # type: ignore[no-untyped-def]
    """ragtrail initialised into a temp SQLite store, with an in-memory exporter beside it."""
    mem = InMemorySpanExporter()
    cfg = ragtrail.init(project="test", store=store_path, exporters=[mem], schedule_delay_ms=50)
    try:
        yield Traced(store_path, mem, cfg)
    finally:
        ragtrail.shutdown()


def _pg_base_url() -> str:
    return os.environ.get("RAGTRAIL_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema on the real server (search_path set through the URL options).

    Skips with a reason when no server answers, unless RAGTRAIL_REQUIRE_POSTGRES=1 (CI), where a
    missing server fails the test.
    """
    psycopg = pytest.importorskip("psycopg")
    base = _pg_base_url()
    try:
        conn = psycopg.connect(base, connect_timeout=3, autocommit=True)
    except Exception as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("RAGTRAIL_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"PostgreSQL required (RAGTRAIL_REQUIRE_POSTGRES=1) but not reachable at {base}: {exc}")
        pytest.skip(f"no PostgreSQL server at {base}: {exc}")
    schema = "rt_" + uuid.uuid4().hex[:12]
    conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


# ------------------------------------------------------------------ base install (make test-otel-range)
# `make test-otel-range` runs the core tests in venvs that have only the base install (no extras) at the
# oldest and newest OpenTelemetry SDK of the supported range. There RAGTRAIL_BASE_ONLY=1 turns a failure
# that only says "this needs an extra" (MissingDependencyError, or an import of a module that the base
# install does not have) into a skip with that reason; every other failure stays a failure.
_BASE_MODULES = frozenset({"opentelemetry", "ragtrail", "wrapt", "typer", "click", "rich", "pydantic", "yaml", "tqdm",
                           "orjson", "pytest", "_pytest"})  # fmt: skip


def _needs_an_extra(exc: BaseException | None) -> bool:
    from ragtrail import MissingDependencyError

    if isinstance(exc, MissingDependencyError):
        return True
    return isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] not in _BASE_MODULES


if os.environ.get("RAGTRAIL_BASE_ONLY") == "1":

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
        outcome = yield
        report = outcome.get_result()
        if report.failed and call.excinfo is not None and _needs_an_extra(call.excinfo.value):
            report.outcome = "skipped"
            report.longrepr = (str(item.path), item.location[1] or 0, f"needs an extra: {call.excinfo.value}")
