"""Per-minute aggregates of the GenAI metrics (table ``metric_minutes``, migration 9): all their SQL.

Rows come from delta data points (the in-process metric exporter, or OTLP metrics received by
``ragtrail serve``): each point adds its count and sum to its minute's row and widens min/max. A point
is filed under the minute its collection interval ended in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragtrail._exceptions import StoreError

__all__ = ["METRIC_COLUMNS", "MetricPoint", "aggregate", "read_metric_minutes", "write_metric_points"]

METRIC_COLUMNS = (
    "minute", "project", "metric", "operation", "provider", "model", "response_model", "token_type", "error_type",
    "count", "sum", "min", "max",
)  # fmt: skip

# attribute → column (the GenAI metric conventions' attribute names)
_SERIES = (
    ("gen_ai.operation.name", "operation"),
    ("gen_ai.provider.name", "provider"),
    ("gen_ai.request.model", "model"),
    ("gen_ai.response.model", "response_model"),
    ("gen_ai.token.type", "token_type"),
    ("error.type", "error_type"),
)
_KEY = "project, metric, minute, operation, provider, model, response_model, token_type, error_type"


@dataclass(frozen=True)
class MetricPoint:
    """One delta data point: a histogram's (count, sum, min, max) or a counter's increment (count 1 per
    point is not meaningful for a counter: its ``count`` is the number of points merged, ``sum`` the value)."""

    metric: str
    attributes: Mapping[str, Any]
    time_ns: int
    count: int
    sum: float
    min: float | None
    max: float | None


def aggregate(points: Iterable[MetricPoint], project: str) -> list[tuple[Any, ...]]:
    """Merge points into rows (METRIC_COLUMNS order), one per minute and series."""
    rows: dict[tuple[Any, ...], list[Any]] = {}
    for p in points:
        attrs = p.attributes or {}
        proj = str(attrs.get("ragtrail.project") or project)
        key = (
            int(p.time_ns // 1_000_000_000 // 60 * 60),
            proj,
            p.metric,
            *(str(attrs.get(a) or "") for a, _ in _SERIES),
        )
        row = rows.get(key)
        if row is None:
            rows[key] = [int(p.count), float(p.sum), p.min, p.max]
            continue
        row[0] += int(p.count)
        row[1] += float(p.sum)
        if p.min is not None:
            row[2] = p.min if row[2] is None else min(row[2], p.min)
        if p.max is not None:
            row[3] = p.max if row[3] is None else max(row[3], p.max)
    return [(*k, *v) for k, v in rows.items()]


def write_metric_points(store: Any, points: Iterable[MetricPoint], project: str) -> int:
    """Add ``points`` to the per-minute rows in one transaction; returns the rows touched."""
    rows = aggregate(points, project)
    if not rows:
        return 0
    lo, hi = ("MIN", "MAX") if store.kind == "sqlite" else ("LEAST", "GREATEST")
    sql = (
        f"INSERT INTO metric_minutes ({', '.join(METRIC_COLUMNS)}) VALUES ({', '.join('?' * len(METRIC_COLUMNS))}) "  # noqa: S608 - fixed names
        f"ON CONFLICT ({_KEY}) DO UPDATE SET count = metric_minutes.count + excluded.count, "
        "sum = metric_minutes.sum + excluded.sum, "
        f"min = COALESCE({lo}(metric_minutes.min, excluded.min), metric_minutes.min, excluded.min), "
        f"max = COALESCE({hi}(metric_minutes.max, excluded.max), metric_minutes.max, excluded.max)"
    )
    rows.sort()  # a fixed order: two writers never lock the same rows in opposite orders
    with store.transaction() as cur:
        cur.executemany(sql, rows)
    return len(rows)


def read_metric_minutes(
    store: Any,
    *,
    metric: str | None = None,
    project: str | None = None,
    since_s: float | None = None,
    until_s: float | None = None,
    limit: int | None = None,
) -> list[tuple[Any, ...]]:
    """Rows of ``metric_minutes`` (METRIC_COLUMNS order), oldest first, optionally filtered."""
    where: list[str] = []
    params: list[Any] = []
    for col, value in (("metric", metric), ("project", project)):
        if value is not None:
            where.append(f"{col} = ?")
            params.append(value)
    if since_s is not None:
        where.append("minute >= ?")
        params.append(int(since_s))
    if until_s is not None:
        where.append("minute < ?")
        params.append(int(until_s))
    sql = f"SELECT {', '.join(METRIC_COLUMNS)} FROM metric_minutes"  # noqa: S608 - fixed column names
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY minute, metric, project, model, token_type"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    try:
        return store.query(sql, params)
    except StoreError:
        raise
    except Exception as exc:  # pragma: no cover - a driver error not translated by the store
        raise StoreError(f"reading metric_minutes from {store.url}: {exc}") from exc


def metric_totals(store: Any, metric: str, by: Sequence[str] = ()) -> list[tuple[Any, ...]]:
    """``(*by, count, sum)`` totals of ``metric`` over all minutes, grouped by columns in ``by``."""
    cols = [c for c in by if c in METRIC_COLUMNS[:9]]
    head = ", ".join(cols) + ", " if cols else ""
    sql = f"SELECT {head}SUM(count), SUM(sum) FROM metric_minutes WHERE metric = ?"  # noqa: S608 - fixed names
    if cols:
        sql += " GROUP BY " + ", ".join(cols) + " ORDER BY " + ", ".join(cols)
    return store.query(sql, (metric,))
