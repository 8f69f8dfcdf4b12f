"""What ``Client`` adds for the production loop: feedback and sessions as DataFrames, feedback columns on
``spans_df``/``traces_df``, traces filtered by session/user/tags. pandas is imported only when used."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ragtrail.store import Store
from ragtrail.store import _feedback as fb

if TYPE_CHECKING:
    import pandas as pd

FEEDBACK_PREFIX = "feedback."
"""Prefix of the per-name feedback columns of ``spans_df``/``traces_df``/``sessions_df``."""


def row_value(row: Sequence[Any]) -> Any:
    """The Python value of a feedback row: float (numeric), bool (boolean) or str (categorical)."""
    vtype, num, text = row[4], row[5], row[6]
    if vtype == "boolean":
        return text == "true" if text is not None else bool(num)
    if vtype == "numeric":
        return None if num is None else float(num)
    return text


def latest_by_trace(store: Store, trace_ids: Sequence[str]) -> dict[tuple[str, str | None], dict[str, Any]]:
    """``{(trace_id, span_id or None): {name: latest value}}`` for the given traces."""
    out: dict[tuple[str, str | None], dict[str, Any]] = {}
    if not trace_ids or not has_feedback(store):
        return out
    for r in fb.select_feedback(store, trace_ids=trace_ids):  # oldest first: later rows overwrite
        out.setdefault((r[1], r[2]), {})[r[3]] = row_value(r)
    return out


def has_feedback(store: Store) -> bool:
    return fb.any_feedback(store)


def trace_feedback(store: Store, trace_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{trace_id: {name: latest value}}``, trace- and span-level feedback together (latest wins)."""
    out: dict[str, dict[str, Any]] = {}
    if not trace_ids or not has_feedback(store):
        return out
    for r in fb.select_feedback(store, trace_ids=trace_ids):
        out.setdefault(r[1], {})[r[3]] = row_value(r)
    return out


def add_trace_feedback_columns(df: pd.DataFrame, store: Store) -> pd.DataFrame:
    """``feedback.<name>`` columns (latest value per name) on a traces DataFrame; none without feedback."""
    if len(df) == 0:
        return df
    by = trace_feedback(store, list(df["trace_id"]))
    names = sorted({n for d in by.values() for n in d})
    if names:
        import pandas as pd

        for n in names:  # object columns: None where a trace has no such feedback, values as given
            df[FEEDBACK_PREFIX + n] = pd.Series(
                [by.get(t, {}).get(n) for t in df["trace_id"]], index=df.index, dtype=object
            )
    return df


def add_span_feedback_columns(df: pd.DataFrame, store: Store) -> pd.DataFrame:
    """``feedback.<name>`` columns on a spans DataFrame: span feedback on its span, trace feedback on the
    trace's root span(s)."""
    if len(df) == 0:
        return df
    by = latest_by_trace(store, list(dict.fromkeys(df["trace_id"])))
    if not by:
        return df
    names = sorted({n for d in by.values() for n in d})
    import pandas as pd

    roots = df["parent_span_id"].isna().tolist()
    for n in names:
        col = []
        for tid, sid, is_root in zip(df["trace_id"], df["span_id"], roots, strict=True):
            v = by.get((tid, sid), {}).get(n)
            if v is None and is_root:
                v = by.get((tid, None), {}).get(n)
            col.append(v)
        df[FEEDBACK_PREFIX + n] = pd.Series(col, index=df.index, dtype=object)
    return df


def feedback_frame(rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    """One row per feedback record, oldest first."""
    import pandas as pd

    cols = ["feedback_id", "trace_id", "span_id", "name", "value", "value_type", "comment", "source", "by",
            "created_at", "cost_usd"]  # fmt: skip
    data = [(r[0], r[1], r[2], r[3], row_value(r), r[4], r[7], r[8], r[9], r[10], r[11]) for r in rows]
    df = pd.DataFrame(data, columns=cols)
    df["created_at"] = pd.to_datetime(df["created_at"].astype("float64"), unit="s", utc=True)
    df["cost_usd"] = df["cost_usd"].astype("float64")
    df["value"] = df["value"].astype(object)
    return df


def sessions_frame(store: Store, project: str | None, user_id: str | None, limit: int | None) -> pd.DataFrame:
    """One row per session: session_id, user_id, n_traces, n_spans, first_time, last_time, input_tokens,
    output_tokens, cost_usd, project, n_feedback, then ``feedback.<name>`` (mean of the traces' latest
    numeric/boolean values)."""
    import pandas as pd

    rows = fb.session_rows(store, project, user_id, limit)
    cols = ["session_id", "user_id", "n_traces", "n_spans", "first_time", "last_time", "input_tokens",
            "output_tokens", "cost_usd", "project", "n_feedback"]  # fmt: skip
    data = [
        (r[0], r[1], int(r[2]), int(r[3]), r[4], r[5], r[6], r[7], float(r[8]) if r[9] else float("nan"), r[10])
        for r in rows
    ]
    df = pd.DataFrame(data, columns=cols[:-1])
    df["first_time"] = pd.to_datetime(df["first_time"].astype("int64"), unit="ns", utc=True)
    df["last_time"] = pd.to_datetime(df["last_time"].astype("int64"), unit="ns", utc=True)
    for c in ("input_tokens", "output_tokens"):
        df[c] = pd.array([None if v is None else int(v) for v in df[c]], dtype="Int64")
    df["cost_usd"] = df["cost_usd"].astype("float64")
    n_fb = [0] * len(df)
    means: dict[str, list[Any]] = {}
    if len(df) and has_feedback(store):
        for i, sid in enumerate(df["session_id"]):
            tids = fb.session_trace_ids(store, sid)
            per = fb.select_feedback(store, trace_ids=tids)
            n_fb[i] = len(per)
            latest: dict[tuple[str, str], Any] = {}
            for r in per:
                latest[(r[1], r[3])] = row_value(r)
            acc: dict[str, list[float]] = {}
            for (_t, name), v in latest.items():
                if isinstance(v, (bool, float, int)):
                    acc.setdefault(name, []).append(float(v))
            for name, vs in acc.items():
                means.setdefault(name, [float("nan")] * len(df))[i] = sum(vs) / len(vs)
    df["n_feedback"] = pd.Series(n_fb, dtype="int64")
    for name in sorted(means):
        df[FEEDBACK_PREFIX + name] = pd.Series(means[name], dtype="float64")
    return df


def combine_where(where: str, params: list[Any], clause: str, extra: Iterable[Any]) -> tuple[str, list[Any]]:
    """Add ``clause`` to a `` WHERE …`` string (or start one)."""
    if not clause:
        return where, params
    return (f"{where} AND {clause}" if where else f" WHERE {clause}"), [*params, *extra]
