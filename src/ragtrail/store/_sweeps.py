"""The sweep repository: every statement a sweep runs on the eval tables (a trial's record lives in its
run's ``lineage["sweep"]``, the run's ``sweep_id`` column ties it to the sweep).

Functions take the :class:`Store` first and return plain values; ``evals/_sweep.py`` holds the logic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from ragtrail.store._evals import _loads as _obj  # the eval tables' one reader of a stored JSON object
from ragtrail.store._store import Store


def run_lineage(store: Store, run_id: str) -> dict[str, Any]:
    """The run's lineage (``{}`` when the run or its lineage is missing)."""
    rows = store.query("SELECT lineage FROM runs WHERE run_id = ?", (run_id,))
    return _obj(rows[0][0]) if rows else {}


def set_trial_record(store: Store, run_id: str, sweep_id: str, lineage: Mapping[str, Any], status: str | None) -> None:
    """Tie the run to ``sweep_id`` with ``lineage`` (never taking a run of another sweep), and set its
    status when ``status`` is given, in one transaction."""
    with store.transaction() as cur:
        cur.execute("UPDATE runs SET sweep_id = ?, lineage = ? WHERE run_id = ? AND (sweep_id IS NULL OR sweep_id = ?)",
                    (sweep_id, json.dumps(dict(lineage), default=str), run_id, sweep_id))  # fmt: skip
        if status is not None:
            cur.execute("UPDATE runs SET status = ? WHERE run_id = ? AND sweep_id = ?", (status, run_id, sweep_id))


def add_stop_reason(store: Store, run_id: str, reason: str) -> None:
    """Record why the run stopped in its summary (``stopped_reason``) and its finish time if it has none."""
    rows = store.query("SELECT summary FROM runs WHERE run_id = ?", (run_id,))
    summary = _obj(rows[0][0]) if rows else {}
    summary["stopped_reason"] = reason
    with store.transaction() as cur:
        cur.execute("UPDATE runs SET summary = ?, finished_at = COALESCE(finished_at, ?) WHERE run_id = ?",
                    (json.dumps(summary, default=str), time.time(), run_id))  # fmt: skip


def sweep_run_states(store: Store, sweep_id: str) -> list[tuple[str, dict[str, Any], str]]:
    """(run id, lineage, status) of every run of the sweep."""
    rows = store.query("SELECT run_id, lineage, status FROM runs WHERE sweep_id = ?", (sweep_id,))
    return [(run_id, _obj(lin), status) for run_id, lin, status in rows]


def count_examples(store: Store, run_id: str) -> int:
    """How many examples the run has stored."""
    rows = store.query("SELECT COUNT(*) FROM run_examples WHERE run_id = ?", (run_id,))
    return int(rows[0][0]) if rows else 0


def scored_results(store: Store, run_id: str, scorer: str) -> list[tuple[str, float | None, str]]:
    """(example id, score, status) of one scorer's results, in the order they were stored."""
    rows = store.query("SELECT example_id, score, status FROM run_results WHERE run_id = ? AND scorer = ? "
                       "ORDER BY created_at, example_id", (run_id, scorer))  # fmt: skip
    return [(r[0], r[1], r[2]) for r in rows]


def sweep_trial_rows(store: Store, sweep_id: str) -> list[tuple[str, str, int, dict[str, Any], str, dict[str, Any]]]:
    """(run id, name, version, config, status, lineage) of the sweep's runs, oldest first."""
    rows = store.query("SELECT run_id, name, version, config, status, lineage FROM runs WHERE sweep_id = ? "
                       "ORDER BY created_at, version", (sweep_id,))  # fmt: skip
    return [(r[0], r[1], r[2], _obj(r[3]), r[4], _obj(r[5])) for r in rows]


def sweep_runs(store: Store, sweep_id: str) -> list[tuple[str, str, int, dict[str, Any], str]]:
    """(run id, name, version, config, status) of the sweep's runs by version."""
    rows = store.query(
        "SELECT run_id, name, version, config, status FROM runs WHERE sweep_id = ? ORDER BY version", (sweep_id,)
    )
    return [(r[0], r[1], r[2], _obj(r[3]), r[4]) for r in rows]
