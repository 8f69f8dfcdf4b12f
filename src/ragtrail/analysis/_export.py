"""Exporting spans to JSONL and Parquet, in bounded memory."""

from __future__ import annotations

import json
import os
from typing import Any

from ragtrail._deps import require
from ragtrail.store import SPAN_COLUMNS, span_columns_sql


def export_spans(client: Any, path: str | os.PathLike[str], *, fmt: str = "jsonl", project: str | None = None) -> int:
    """Write every span (optionally of one project) to ``path``; returns the number written."""
    where, params = ("WHERE project = ?", [project]) if project else ("", [])
    store = client.store
    sql = f"SELECT {span_columns_sql(store)} FROM spans {where} ORDER BY start_time_ns"  # noqa: S608
    batches = store.iter_query(sql, params) if hasattr(store, "iter_query") else [store.query(sql, params)]
    n = 0
    if fmt == "jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for rows in batches:
                for r in rows:
                    d = dict(zip(SPAN_COLUMNS, r, strict=True))
                    d["attributes"] = json.loads(d["attributes"] or "{}")
                    d["events"] = json.loads(d["events"] or "[]")
                    d["resource"] = json.loads(d["resource"] or "{}")
                    f.write(json.dumps(d, ensure_ascii=False, default=str) + "\n")
                    n += 1
        return n
    pa = require("pyarrow", extra="analysis")
    pq = require("pyarrow.parquet", extra="analysis", package="pyarrow")
    # one fixed schema: a batch whose column is all NULL must not change the file's types
    ints = {"start_time_ns", "end_time_ns", "input_tokens", "output_tokens", "cached_input_tokens"}
    floats = {"duration_ms", "cost_usd"}
    schema = pa.schema(
        [(c, pa.int64() if c in ints else pa.float64() if c in floats else pa.string()) for c in SPAN_COLUMNS]
    )
    writer = pq.ParquetWriter(os.fspath(path), schema)
    try:
        for rows in batches:
            if not rows:
                continue
            cols = list(zip(*rows, strict=True))
            table = pa.table(
                [pa.array(cols[i], type=schema.field(i).type) for i in range(len(SPAN_COLUMNS))], schema=schema
            )
            writer.write_table(table)
            n += len(rows)
    finally:
        writer.close()
    return n
