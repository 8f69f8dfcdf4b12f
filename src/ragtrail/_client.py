"""``ragtrail.Client``: read traces, runs and datasets from a store as objects and DataFrames.

pandas is imported only by the ``*_df`` methods.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ragtrail import semconv
from ragtrail._deps import require
from ragtrail._exceptions import ConfigError, StoreError
from ragtrail.store import Store, open_store, span_columns_sql
from ragtrail.tracing._model import SpanRecord, Trace

_HEX = re.compile(r"[0-9a-f]+")

if TYPE_CHECKING:
    import pandas as pd

_DF_COLUMNS = [
    "trace_id", "span_id", "parent_span_id", "name", "kind", "start_time", "end_time", "duration_ms",
    "status", "model", "input_tokens", "output_tokens", "cost_usd", "project", "attributes",
]  # fmt: skip


_fast_loads: Callable[[Any], Any]
try:  # orjson (optional) parses attribute JSON ~4x faster than the standard library
    from orjson import loads as _fast_loads
except ImportError:  # pragma: no cover
    _fast_loads = json.loads


_CACHED_AT = 20  # cached_input_tokens: selected after the 15 classic and the 5 OTel columns


def _spans_frame(batches: Any, parse_attributes: bool = True) -> pd.DataFrame:
    """Build the spans DataFrame from row batches (the 15 classic spans_df columns in order, the OTel
    columns, then cached_input_tokens) in bounded memory:
    each batch becomes Arrow arrays at once, so the Python row tuples of only one batch are alive."""
    require("pandas", extra="analysis", feature="Client.spans_df()")
    import pandas as pd

    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pandas without pyarrow: the plain (slower) construction
        pa = None
    loads = _fast_loads
    cols: list[list[Any]] = [[] for _ in range(14)]
    attrs: list[Any] = []
    cached: list[Any] = []  # per batch: an Arrow array (or a list without pyarrow)
    for rows in batches:
        if not rows:
            continue
        data = list(zip(*rows, strict=True))
        if pa is not None:
            for i in (0, 1, 2, 3, 4, 8, 9, 13):
                cols[i].append(pa.array(data[i], type=pa.string()))
            for i in (5, 6, 10, 11):
                cols[i].append(pa.array(data[i], type=pa.int64()))
            for i in (7, 12):
                cols[i].append(pa.array(data[i], type=pa.float64()))
        else:
            for i in range(14):
                cols[i].extend(data[i])
        if parse_attributes:
            attrs.extend([loads(a) if a else {} for a in data[14]])
        else:
            attrs.extend(data[14])
        counts = data[_CACHED_AT]  # the promoted column (migration 13)
        cached.append(pa.array(counts, type=pa.int64()) if pa is not None else list(counts))
        del data, rows

    def strings(i: int) -> Any:
        if pa is None:
            return pd.array(cols[i], dtype="string")
        arr = pa.chunked_array(cols[i], type=pa.string()) if cols[i] else pa.chunked_array([], type=pa.string())
        return pd.array(arr, dtype="string") if len(arr) == 0 else pd.Series(arr, dtype=pd.StringDtype()).array

    def ints(i: int) -> Any:
        if pa is None:
            return pd.array(cols[i], dtype="Int64")
        arr = pa.chunked_array(cols[i], type=pa.int64()) if cols[i] else pa.chunked_array([], type=pa.int64())
        return pd.array(arr.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get), dtype="Int64")

    def floats(i: int) -> Any:
        if pa is None:
            return pd.Series([float("nan") if v is None else v for v in cols[i]], dtype="float64")
        arr = pa.chunked_array(cols[i], type=pa.float64()) if cols[i] else pa.chunked_array([], type=pa.float64())
        return pd.Series(arr.to_numpy(zero_copy_only=False), dtype="float64")

    def int64s(chunks: list[Any]) -> Any:
        if pa is None:
            return pd.array([v for c in chunks for v in c], dtype="Int64")
        arr = pa.chunked_array(chunks, type=pa.int64())
        return pd.array(arr.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get), dtype="Int64")

    start = ints(5).to_numpy(dtype="int64", na_value=0)
    end = ints(6).to_numpy(dtype="int64", na_value=0)
    frame = {
        "trace_id": strings(0),
        "span_id": strings(1),
        "parent_span_id": strings(2),
        "name": strings(3),
        "kind": strings(4),
        "start_time": pd.to_datetime(start, unit="ns", utc=True),
        "end_time": pd.to_datetime(end, unit="ns", utc=True),
        "duration_ms": floats(7),
        "status": strings(8),
        "model": strings(9),
        "input_tokens": ints(10),
        "output_tokens": ints(11),
        "cached_input_tokens": int64s(cached),
        "cost_usd": floats(12),
        "project": strings(13),
        "attributes": pd.Series(attrs, dtype=object),
    }
    df = pd.DataFrame(frame)
    df.index = pd.RangeIndex(len(df))
    return df


_NS_MAX = 2**63 - 1


def _to_ns(t: datetime | float | int | str | None) -> int | None:
    """Epoch nanoseconds (clamped to what a 64-bit column holds) from a datetime, ISO text or epoch
    seconds (numbers of 1e12 and above are taken as nanoseconds already)."""
    v = _to_ns_raw(t)
    return None if v is None else max(-_NS_MAX, min(_NS_MAX, v))


def _to_ns_raw(t: datetime | float | int | str | None) -> int | None:
    if t is None:
        return None
    if isinstance(t, datetime):
        return int(t.timestamp() * 1e9)
    if isinstance(t, str):
        try:
            return int(datetime.fromisoformat(t).timestamp() * 1e9)
        except ValueError as exc:
            raise ConfigError(f"cannot parse time {t!r}; use ISO 8601 such as 2026-11-29T12:00:00") from exc
    v = float(t)
    return int(v * 1e9) if v < 1e12 else int(v)  # seconds, else already ns


class Client:
    """Read access to a store. ``Client()`` opens the same store ``ragtrail.init()`` would use.

    Args:
        store: a path, ``sqlite:///…``/``postgresql://…`` URL, or a Store. Default: the store of the
            running ``ragtrail.init()``, else ``$RAGTRAIL_STORE``, else ``$RAGTRAIL_HOME/ragtrail.db``.
    """

    def __init__(self, store: str | os.PathLike[str] | Store | None = None) -> None:
        if store is None:
            from ragtrail.tracing._setup import get_config

            cfg = get_config()
            if cfg is not None and cfg.store is not None:
                store = cfg.store
        self.store: Store = open_store(store, create=False)

    def __repr__(self) -> str:
        return f"Client(store={self.store.url!r})"

    # ------------------------------------------------------------------------------------- spans
    def _span_where(
        self,
        project: str | None,
        start: Any,
        end: Any,
        name: str | None,
        kind: str | None,
        trace_id: str | Sequence[str] | None,
        status: str | None = None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if project is not None:
            clauses.append("project = ?")
            params.append(project)
        s, e = _to_ns(start), _to_ns(end)
        if s is not None:
            clauses.append("start_time_ns >= ?")
            params.append(s)
        if e is not None:
            clauses.append("start_time_ns < ?")
            params.append(e)
        if name is not None:
            clauses.append("name = ?")
            params.append(name)
        if kind is not None:
            if kind not in semconv.SPAN_KINDS:
                raise ConfigError(f"unknown span kind {kind!r}; use one of {', '.join(semconv.SPAN_KINDS)}")
            clauses.append("kind = ?")
            params.append(kind)
        if status is not None:
            clauses.append("status = ?")
            params.append(status.upper())
        if trace_id is not None:
            ids = [trace_id] if isinstance(trace_id, str) else list(trace_id)
            clauses.append(f"trace_id IN ({', '.join('?' * len(ids))})")
            params.extend(ids)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _trace_where(
        self, project: str | None, start: Any, end: Any, session_id: str | None, user_id: str | None, tags: Any
    ) -> tuple[str, list[Any]]:
        """The WHERE clause of the trace listings (:meth:`traces`, :meth:`trace_summaries`): spans of the
        project and time range, in traces of that session / user / carrying every tag."""
        from ragtrail._production import combine_where
        from ragtrail.store._feedback import trace_filter

        where, params = self._span_where(project, start, end, None, None, None)
        return combine_where(where, params, *trace_filter(self.store, project, session_id, user_id, tags))

    def spans(
        self,
        project: str | None = None,
        *,
        start: Any = None,
        end: Any = None,
        name: str | None = None,
        kind: str | None = None,
        trace_id: str | Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[SpanRecord]:
        """Spans matching the filters as :class:`SpanRecord` objects, oldest first."""
        where, params = self._span_where(project, start, end, name, kind, trace_id)
        sql = f"SELECT {span_columns_sql(self.store)} FROM spans{where} ORDER BY start_time_ns"  # noqa: S608
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [SpanRecord.from_row(r) for r in self.store.query(sql, params)]

    def spans_df(
        self,
        project: str | None = None,
        *,
        start: Any = None,
        end: Any = None,
        name: str | None = None,
        kind: str | None = None,
        trace_id: str | Sequence[str] | None = None,
        limit: int | None = None,
        parse_attributes: bool = True,
    ) -> pd.DataFrame:
        """One row per span: trace_id, span_id, parent_span_id, name, kind, start_time, end_time
        (UTC timestamps), duration_ms, status, model, input_tokens, output_tokens, cached_input_tokens
        (``gen_ai.usage.cache_read.input_tokens``: the part of input_tokens served from the provider's
        prompt cache; <NA> when the span recorded none), cost_usd, project, attributes (dict; the JSON text when ``parse_attributes=False``), then the OTel fields: span_kind
        (INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER), links (list of {trace_id, span_id, attributes}),
        resource (dict of every resource attribute), scope_name, scope_version. Oldest first."""
        from ragtrail import _otel_columns

        where, params = self._span_where(project, start, end, name, kind, trace_id)
        cols = ("trace_id, span_id, parent_span_id, name, kind, start_time_ns, end_time_ns, duration_ms, "
                f"status, model, input_tokens, output_tokens, cost_usd, project, {self.store.attributes_sql()}, "
                + _otel_columns.SELECT + ", cached_input_tokens")  # fmt: skip
        sql = f"SELECT {cols} FROM spans{where} ORDER BY start_time_ns"  # noqa: S608
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        it = getattr(self.store, "iter_query", None)
        batches = it(sql, params) if it is not None else [self.store.query(sql, params)]
        from ragtrail._production import add_span_feedback_columns

        extra: list[list[Any]] = [[] for _ in _otel_columns.OTEL_COLUMNS]
        df = _spans_frame(_otel_columns.collect(batches, extra), parse_attributes)
        df = _otel_columns.add_columns(df, extra, parse_attributes)
        return add_span_feedback_columns(df, self.store)

    def spans_linking_to(self, span_id: str, trace_id: str | None = None) -> list[dict[str, Any]]:
        """The spans whose links point at ``span_id`` (optionally in ``trace_id``): for each, its trace_id,
        span_id, name and the link's attributes. "Which spans link to this one?" (fan-in, queues, batches)."""
        from ragtrail.store._links import spans_linking_to

        return spans_linking_to(self.store, span_id, trace_id)

    def trace_summaries(
        self,
        project: str | None = None,
        *,
        start: Any = None,
        end: Any = None,
        limit: int | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """One dict per trace, newest first, without pandas: trace_id, root_name, root_kind,
        start_time_ns, end_time_ns, duration_ms, n_spans, n_errors, status, input_tokens, output_tokens,
        cost_usd (None when no span has a cost), project, session_id, user_id, cached_input_tokens (None
        when no span recorded a cached count).

        ``session_id`` / ``user_id`` / ``tags`` keep the traces of that session / user / carrying every tag."""
        where, params = self._trace_where(project, start, end, session_id, user_id, tags)
        sql = (
            "SELECT trace_id, MIN(start_time_ns), MAX(end_time_ns), COUNT(*), "  # noqa: S608 - fixed columns, values bound as parameters
            "SUM(CASE WHEN status = 'ERROR' THEN 1 ELSE 0 END), SUM(input_tokens), SUM(output_tokens), "
            "SUM(cost_usd), COUNT(cost_usd), MIN(project), "
            "MIN(CASE WHEN parent_span_id IS NULL THEN name END), MIN(CASE WHEN parent_span_id IS NULL THEN kind END), "
            "MIN(session_id), MIN(user_id), SUM(cached_input_tokens) "
            f"FROM spans{where} GROUP BY trace_id ORDER BY MIN(start_time_ns) DESC"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        out = []
        for tid, s, e, n, errs, tin, tout, cost, n_cost, proj, root, root_kind, sess, user, cached in self.store.query(
            sql, params
        ):
            out.append({
                "trace_id": tid, "root_name": root, "root_kind": root_kind,
                "start_time_ns": int(s), "end_time_ns": int(e), "duration_ms": (int(e) - int(s)) / 1e6,
                "n_spans": int(n), "n_errors": int(errs or 0), "status": "ERROR" if errs else "OK",
                "input_tokens": None if tin is None else int(tin), "output_tokens": None if tout is None else int(tout),
                "cost_usd": float(cost) if n_cost else None, "project": proj, "session_id": sess, "user_id": user,
                "cached_input_tokens": None if cached is None else int(cached),
            })  # fmt: skip
        return out

    def traces_df(
        self,
        project: str | None = None,
        *,
        start: Any = None,
        end: Any = None,
        limit: int | None = None,
        session_id: str | None = None,
        user_id: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """One row per trace: trace_id, root_name, root_kind, start_time, end_time, duration_ms,
        n_spans, n_errors, status, input_tokens, output_tokens, cached_input_tokens (the sum of the
        spans' ``gen_ai.usage.cache_read.input_tokens``, part of input_tokens; <NA> when no span of the
        trace recorded one), cost_usd, project, session_id, user_id, then ``feedback.<name>`` (the latest value) per feedback name given. Newest first.
        (:meth:`trace_summaries` gives the same without pandas.)

        ``session_id`` / ``user_id`` / ``tags`` keep the traces of that session / user / carrying every tag."""
        require("pandas", extra="analysis", feature="Client.traces_df()")
        import pandas as pd

        from ragtrail._production import add_trace_feedback_columns

        rows = self.trace_summaries(
            project, start=start, end=end, limit=limit, session_id=session_id, user_id=user_id, tags=tags
        )

        def col(name: str) -> list[Any]:
            return [r[name] for r in rows]

        start_ns = pd.Series(col("start_time_ns"), dtype="int64")
        end_ns = pd.Series(col("end_time_ns"), dtype="int64")
        df = pd.DataFrame(
            {
                "trace_id": pd.array(col("trace_id"), dtype="string"),
                "root_name": pd.array(col("root_name"), dtype="string"),
                "root_kind": pd.array(col("root_kind"), dtype="string"),
                "start_time": pd.to_datetime(start_ns, unit="ns", utc=True),
                "end_time": pd.to_datetime(end_ns, unit="ns", utc=True),
                "duration_ms": (end_ns - start_ns) / 1e6,
                "n_spans": pd.Series(col("n_spans"), dtype="int64"),
                "n_errors": pd.Series(col("n_errors"), dtype="int64"),
                "status": col("status"),
                "input_tokens": pd.array(col("input_tokens"), dtype="Int64"),
                "output_tokens": pd.array(col("output_tokens"), dtype="Int64"),
                "cached_input_tokens": pd.array(col("cached_input_tokens"), dtype="Int64"),
                "cost_usd": pd.Series([float("nan") if c is None else c for c in col("cost_usd")], dtype="float64"),
                "project": pd.array(col("project"), dtype="string"),
                "session_id": pd.array(col("session_id"), dtype="string"),
                "user_id": pd.array(col("user_id"), dtype="string"),
            }
        )
        return add_trace_feedback_columns(df, self.store)

    def metrics_df(
        self, metric: str | None = None, project: str | None = None, *, start: Any = None, end: Any = None
    ) -> pd.DataFrame:
        """Per-minute GenAI metric aggregates (every call, sampled or not): minute, project, metric,
        operation, provider, model, response_model, token_type, error_type, count, sum, min, max.

        ``metric`` e.g. ``"gen_ai.client.token.usage"`` (sum = tokens), ``"ragtrail.gen_ai.client.cost"``
        (sum = USD), ``"gen_ai.client.operation.duration"`` (sum / count = mean seconds). ``start`` /
        ``end``: datetimes or epoch seconds. Oldest first."""
        import pandas as pd

        from ragtrail.store._metrics import METRIC_COLUMNS, read_metric_minutes

        def secs(v: Any) -> float | None:
            return None if v is None else (v.timestamp() if isinstance(v, datetime) else float(v))

        rows = read_metric_minutes(self.store, metric=metric, project=project, since_s=secs(start), until_s=secs(end))
        df = pd.DataFrame(rows, columns=list(METRIC_COLUMNS))
        df["minute"] = pd.to_datetime(df["minute"].astype("int64"), unit="s", utc=True)
        df["count"] = df["count"].astype("int64")
        for c in ("sum", "min", "max"):
            df[c] = df[c].astype("float64")
        return df

    def trace(self, trace_id: str) -> Trace:
        """The trace with this id (a unique prefix of at least 8 hex digits works too)."""
        tid = trace_id.strip().lower()
        if len(tid) < 32:
            if len(tid) < 8:
                raise ConfigError(f"trace id {trace_id!r} is too short; give at least 8 hex digits")
            if not _HEX.fullmatch(tid):
                raise ConfigError(f"trace id {tid!r} is not hexadecimal; give a trace id or a prefix of 8+ hex digits")
            hits = self.store.query("SELECT DISTINCT trace_id FROM spans WHERE trace_id LIKE ?", (tid + "%",))
            if len(hits) > 1:
                raise ConfigError(f"trace id prefix {trace_id!r} is ambiguous ({len(hits)} traces); give more digits")
            if hits:
                tid = hits[0][0]
        spans = self.spans(trace_id=tid)
        if not spans:
            raise StoreError(
                f"no trace {trace_id!r} in the store {self.store.url}; `ragtrail traces list` shows the ids"
            )
        from ragtrail._production import trace_feedback

        t = Trace(spans)
        t.feedback = trace_feedback(self.store, [tid]).get(tid, {})
        return t

    def traces(
        self,
        project: str | None = None,
        *,
        limit: int | None = 100,
        start: Any = None,
        end: Any = None,
        session_id: str | None = None,
        user_id: str | None = None,
        tags: Sequence[str] | None = None,
    ) -> list[Trace]:
        """The newest ``limit`` traces (``None``: all) as :class:`Trace` objects, each with ``.feedback``
        (latest value per name); filtered like :meth:`traces_df`."""
        from ragtrail._production import trace_feedback

        where, params = self._trace_where(project, start, end, session_id, user_id, tags)
        sql = f"SELECT trace_id FROM spans{where} GROUP BY trace_id ORDER BY MIN(start_time_ns) DESC"  # noqa: S608
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        ids = [r[0] for r in self.store.query(sql, params)]
        if not ids:
            return []
        by: dict[str, list[SpanRecord]] = {}
        for i in range(0, len(ids), 500):
            for s in self.spans(trace_id=ids[i : i + 500]):
                by.setdefault(s.trace_id, []).append(s)
        fbk = trace_feedback(self.store, ids)
        out = []
        for i in ids:
            if i in by:
                t = Trace(by[i])
                t.feedback = fbk.get(i, {})
                out.append(t)
        return out

    # ------------------------------------------------------------------- feedback and sessions
    def feedback_df(
        self,
        trace_id: str | Sequence[str] | None = None,
        *,
        name: str | None = None,
        source: str | None = None,
        since: Any = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Every feedback record (history, oldest first): feedback_id, trace_id, span_id, name, value
        (float | bool | str), value_type, comment, source, by, created_at, cost_usd."""
        from ragtrail._production import feedback_frame
        from ragtrail.store._feedback import select_feedback

        ids = None if trace_id is None else ([trace_id] if isinstance(trace_id, str) else list(trace_id))
        t = _to_ns(since)
        rows = select_feedback(
            self.store, trace_ids=ids, name=name, source=source, since=None if t is None else t / 1e9, limit=limit
        )
        return feedback_frame(rows)

    def sessions_df(
        self, project: str | None = None, *, user_id: str | None = None, limit: int | None = None
    ) -> pd.DataFrame:
        """One row per session (newest activity first): session_id, user_id, n_traces, n_spans,
        first_time, last_time, input_tokens, output_tokens, cost_usd, project, n_feedback, then
        ``feedback.<name>``: the mean over the session's traces of their latest numeric/boolean value."""
        from ragtrail._production import sessions_frame

        return sessions_frame(self.store, project, user_id, limit)

    def reprice(self, project: str | None = None, prices: Any = None) -> int:
        """Recompute ``cost_usd`` of stored LLM/embedding spans from the current price table; returns
        how many spans changed. GPU-time costs are recomputed from their recorded GPU seconds."""
        from ragtrail.tracing._usage import compute_cost, gpu_cost, load_prices

        table = load_prices(prices)
        where = " WHERE (input_tokens IS NOT NULL OR output_tokens IS NOT NULL OR cost_usd IS NOT NULL)"
        params: list[Any] = []
        if project:
            where += " AND project = ?"
            params.append(project)
        sql = (
            f"SELECT trace_id, span_id, {self.store.attributes_sql()}, cost_usd, cached_input_tokens FROM spans{where}"  # noqa: S608
        )
        it = getattr(self.store, "iter_query", None)
        batches = it(sql, params) if it is not None else [self.store.query(sql, params)]
        rows = (r for batch in batches for r in batch)
        updates = []
        for trace_id, span_id, attrs_text, old, cached in rows:
            attrs = json.loads(attrs_text or "{}")
            if semconv.GPU_SECONDS in attrs:
                new = gpu_cost(attrs[semconv.GPU_SECONDS], attrs.get(semconv.GPU_TYPE), table)
                src: str | None = "gpu_time"
                date = None
            else:
                res = compute_cost(
                    attrs.get(semconv.GEN_AI_PROVIDER_NAME),
                    attrs.get(semconv.GEN_AI_RESPONSE_MODEL) or attrs.get(semconv.GEN_AI_REQUEST_MODEL),
                    attrs.get(semconv.GEN_AI_USAGE_INPUT_TOKENS),
                    attrs.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
                    cached,  # the promoted column (migration 13): a stored value that was not a count is NULL
                    table,
                )
                new = res[0] if res else None
                src = ("user_prices" if res[1].date == "user" else "price_table") if res else None
                date = res[1].date if res else None
            if new == old or (new is not None and old is not None and abs(new - old) <= 1e-15):
                continue
            for k in (semconv.COST_USD, semconv.COST_SOURCE, semconv.COST_PRICE_DATE):
                attrs.pop(k, None)
            if new is not None:
                attrs[semconv.COST_USD] = new
                attrs[semconv.COST_SOURCE] = src
                if date:
                    attrs[semconv.COST_PRICE_DATE] = date
            updates.append((new, json.dumps(attrs, ensure_ascii=False, separators=(",", ":")), trace_id, span_id))
        if updates:
            with self.store.transaction() as cur:
                cur.executemany(
                    "UPDATE spans SET cost_usd = ?, attributes = ?, content = NULL WHERE trace_id = ? AND span_id = ?",
                    updates,
                )
        return len(updates)

    # ---------------------------------------------------------------------- runs and datasets
    def run(self, ref: str) -> Any:
        """A versioned eval run by reference: ``name:vN``, ``name:alias`` (``latest``, ``production``…) or id."""
        from ragtrail.evals._runs import load_run

        return load_run(self.store, ref)

    def runs_df(self, name: str | None = None) -> pd.DataFrame:
        """One row per run (newest first) with its summary metrics."""
        from ragtrail.evals._runs import runs_df

        return runs_df(self.store, name)

    def set_alias(self, run: Any, alias: str, *, by: str | None = None) -> Any:
        """Point ``alias`` (e.g. ``production``) of the run's evaluation at ``run``; history is kept."""
        from ragtrail.evals._runs import set_alias

        return set_alias(self.store, run, alias, by=by)

    def compare(self, a: Any, b: Any, **kwargs: Any) -> Any:
        """Paired comparison of two runs (b − a) with bootstrap CIs and Holm-adjusted p-values."""
        from ragtrail.evals._compare import compare

        return compare(self.store, a, b, **kwargs)

    def log_artifact(self, artifact: Any, *, aliases: Any = (), run: Any = None, blobs: Any = None) -> Any:
        """Log a ``ragtrail.Artifact`` into this client's store (see ``ragtrail.artifacts.log_artifact``)."""
        from ragtrail.artifacts import log_artifact

        return log_artifact(artifact, aliases=aliases, run=run, store=self.store, blobs=blobs)

    def artifact(self, ref: str, *, blobs: Any = None) -> Any:
        """A stored artifact version: ``name:vN``, ``name:<alias>`` or ``name`` (its newest)."""
        from ragtrail.artifacts import get_artifact

        return get_artifact(ref, store=self.store, blobs=blobs)

    def dataset(self, ref: str) -> Any:
        """A stored dataset: ``name`` (latest version) or ``name:version``."""
        from ragtrail.evals._datasets import load_dataset

        return load_dataset(self.store, ref)

    def info(self) -> dict[str, Any]:
        """Store location, schema version and row counts."""
        return self.store.info()
