"""Run fixtures for the compare/gate/report/sweep tests: rows inserted straight into the store's
runs, run_examples and run_results tables (the schema the eval harness writes). Holds no tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

from ragtrail.store import Store


def make_run(
    store: Store,
    name: str,
    scores: Mapping[str, Mapping[str, Any]],
    *,
    dataset: str = "qa",
    dataset_version: str = "d1",
    latency_ms: Mapping[str, float] | None = None,
    cost_usd: Mapping[str, float | None] | None = None,
    example_errors: Mapping[str, str] | None = None,
    config: Mapping[str, Any] | None = None,
    sweep_id: str | None = None,
    trace_ids: bool = True,
) -> str:
    """Insert a finished run; ``scores`` is ``{metric: {example_id: value}}`` where a value is a float
    (ok), ``("undefined", reason)`` or ``("error", reason)``. Returns the run id (version = next)."""
    run_id = uuid.uuid4().hex
    now = time.time()
    example_ids = sorted({e for per in scores.values() for e in per} | set(latency_ms or {}))
    with store.transaction() as cur:
        cur.execute("SELECT COALESCE(MAX(version), 0) FROM runs WHERE name = ?", (name,))
        version = int(cur.fetchone()[0]) + 1
        cur.execute(
            "INSERT INTO runs (run_id, name, version, created_at, finished_at, status, dataset_name, "
            "dataset_version, config, config_hash, lineage, summary, source_run_id, sweep_id) "
            "VALUES (?, ?, ?, ?, ?, 'finished', ?, ?, ?, ?, '{}', '{}', NULL, ?)",
            (run_id, name, version, now, now, dataset, dataset_version, json.dumps(dict(config or {})),
             uuid.uuid4().hex[:12], sweep_id),
        )
        tids = {e: (uuid.uuid4().hex if trace_ids else None) for e in example_ids}
        for e in example_ids:
            err = (example_errors or {}).get(e)
            cur.execute(
                "INSERT INTO run_examples (run_id, example_id, status, output, error, trace_id, latency_ms, "
                "input_tokens, output_tokens, cost_usd, created_at) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, e, "error" if err else "ok", err, tids[e], (latency_ms or {}).get(e), 10, 5,
                 (cost_usd or {}).get(e), now),
            )
        for metric, per in scores.items():
            for e, v in per.items():
                if isinstance(v, tuple):
                    status, reason, score = v[0], v[1], None
                else:
                    status, reason, score = "ok", None, float(v)
                cur.execute(
                    "INSERT INTO run_results (run_id, example_id, scorer, score, status, reason, details, "
                    "trace_id, created_at) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                    (run_id, e, metric, score, status, reason, tids[e], now),
                )
    return run_id
