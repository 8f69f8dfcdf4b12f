"""The store under load: 8 processes at once, each writing 5,000 spans through ``ragtrail.span`` while
an ``Evaluation`` of 200 examples (2 scorers) commits its results, into one SQLite file and into one
PostgreSQL schema. Nothing may be lost (exact counts), no lock error may surface (nothing logged at
WARNING or above, no failed/dropped spans in ``ragtrail.stats()``), and the eight runs of the same
evaluation get versions 1..8. The pipeline's answers are scripted (no LLM).

The processes are the ones ``benchmarks/store_load.py`` measures; here only correctness is asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.store_load import expected_spans, problems, run_load

pytestmark = pytest.mark.slow

PROCS, SPANS, RESULTS = 8, 5_000, 200


def _check(res: dict, n_results: int) -> None:  # type: ignore[type-arg]
    assert problems(res, n_results) == []
    want = expected_spans(res["mode"], SPANS, n_results)
    assert res["span_counts"] == dict.fromkeys(range(PROCS), want)


def test_eight_processes_spans_and_results_sqlite(tmp_path: Path) -> None:
    res = run_load(str(tmp_path / "load.db"), "traced", PROCS, SPANS, RESULTS)
    _check(res, RESULTS)
    assert res["run_versions"] == list(range(1, PROCS + 1))
    assert res["run_results"] == PROCS * RESULTS * 2 and res["run_examples"] == PROCS * RESULTS


def test_eight_processes_spans_and_results_postgres(pg_url: str) -> None:
    res = run_load(pg_url, "traced", PROCS, SPANS, RESULTS)
    _check(res, RESULTS)
    assert res["run_versions"] == list(range(1, PROCS + 1))
    assert res["run_results"] == PROCS * RESULTS * 2 and res["run_examples"] == PROCS * RESULTS


def test_eight_processes_write_spans_postgres_twice_is_idempotent(pg_url: str) -> None:
    """Store.write_spans (COPY + INSERT … ON CONFLICT DO NOTHING) from 8 processes; writing the same
    rows again from 8 processes adds nothing."""
    from ragtrail.store import open_store

    for _ in range(2):
        res = run_load(pg_url, "direct", PROCS, SPANS, batch=700)
        _check(res, 0)
    assert open_store(pg_url).count_spans() == PROCS * SPANS
