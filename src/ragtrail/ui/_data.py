"""The data behind every page, as plain JSON-ready dicts: the pages render them, ``/api/`` returns them.

Span reads go through :mod:`ragtrail.store._queries`; eval reads through the library's public API
(``ragtrail.evals``), never SQL of their own.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Any

from orjson import loads as _loads

from ragtrail import semconv
from ragtrail._exceptions import RagtrailError, StoreError
from ragtrail.store import Store
from ragtrail.store import _queries as q
from ragtrail.tracing._model import SpanRecord, Trace, maybe_json

_Z95 = 1.959963984540054
_PARAMS = (
    semconv.GEN_AI_REQUEST_TEMPERATURE, semconv.GEN_AI_REQUEST_TOP_P, semconv.GEN_AI_REQUEST_TOP_K,
    semconv.GEN_AI_REQUEST_MAX_TOKENS, semconv.GEN_AI_REQUEST_SEED, semconv.GEN_AI_REQUEST_STOP_SEQUENCES,
    semconv.GEN_AI_REQUEST_FREQUENCY_PENALTY, semconv.GEN_AI_REQUEST_PRESENCE_PENALTY,
    semconv.GEN_AI_REQUEST_CHOICE_COUNT, semconv.OI_LLM_INVOCATION_PARAMETERS, semconv.RETRIEVAL_TOP_K,
)  # fmt: skip
_GPU_PREFIX = "ragtrail.gpu."
_LATENCY_PREFIX = "ragtrail.latency."


class NotFound(RagtrailError):
    """A page's object (trace, span, run, dataset) is not in the store."""


def finite(v: Any) -> Any:
    """``v`` with NaN/inf as None (JSON has neither)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class Qrels:
    """Relevance labels of eval examples, cached per (dataset, version)."""

    def __init__(self, store: Store, size: int = 16) -> None:
        self.store = store
        self._cache: OrderedDict[str, dict[str, dict[str, float]]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def for_run_example(self, run_ref: str, example_id: str) -> dict[str, float] | None:
        try:
            from ragtrail.evals import load_run

            run = load_run(self.store, run_ref)
            key = f"{run.dataset_name}:{run.dataset_version}"
            with self._lock:
                cached = self._cache.get(key)
            if cached is None:
                ds = run.dataset()
                cached = {e.id: dict(e.relevant) for e in ds if e.relevant}
                with self._lock:
                    self._cache[key] = cached
                    while len(self._cache) > self._size:
                        self._cache.popitem(last=False)
            return cached.get(example_id)
        except (RagtrailError, ImportError, KeyError):
            return None


# ------------------------------------------------------------------------------------------ traces
def trace_list(store: Store, params: dict[str, str]) -> dict[str, Any]:
    filters = {k: params[k] for k in q.TRACE_FILTERS if params.get(k)}
    page = q.list_traces(
        store,
        filters,
        sort=params.get("sort") or "start",
        order=params.get("order") or "desc",
        after=params.get("after") or None,
    )
    return {
        "traces": page.rows,
        "next": page.next_cursor,
        "sort": page.sort,
        "order": page.order,
        "filters": page.filters,
    }


def load_trace(store: Store, trace_id: str) -> Trace:
    try:
        tid = q.resolve_trace_id(store, trace_id)
    except RagtrailError as exc:
        raise NotFound(str(exc)) from exc
    if tid is None:
        raise NotFound(f"no trace {trace_id!r} in the store {store.url}")
    return Trace([_span_record(r) for r in q.trace_rows(store, tid)])


def _span_record(row: Any) -> SpanRecord:
    """A SpanRecord from a store row, parsing the JSON with orjson (a 5,000-span trace loads ~3x faster)."""
    return SpanRecord.from_row(row, loads=_loads)


def _kind(s: SpanRecord) -> str:
    return s.kind or "CHAIN"


def trace_view(store: Store, trace: Trace) -> dict[str, Any]:
    """The trace's spans in tree order with their offsets on the trace's time axis."""
    t0 = min(s.start_time_ns for s in trace.spans)
    t1 = max(s.end_time_ns for s in trace.spans)
    rows = []
    for depth, s in trace.walk():
        rows.append({
            "span_id": s.span_id, "parent_span_id": s.parent_span_id, "name": s.name, "kind": _kind(s),
            "depth": depth, "status": s.status, "start_ms": (s.start_time_ns - t0) / 1e6,
            "duration_ms": s.duration_ms, "model": s.model, "input_tokens": s.input_tokens,
            "output_tokens": s.output_tokens, "cost_usd": s.cost_usd,
        })  # fmt: skip
    root = trace.root
    attrs = root.attributes if root else {}
    totals_cost = [s.cost_usd for s in trace.spans if s.cost_usd is not None]
    return {
        "trace_id": trace.trace_id,
        "name": root.name if root else "",
        "project": root.project if root else None,
        "start_time_ns": t0,
        "duration_ms": (t1 - t0) / 1e6,
        "n_spans": len(trace.spans),
        "n_errors": sum(1 for s in trace.spans if s.is_error),
        "input_tokens": sum(int(s.input_tokens or 0) for s in trace.spans),
        "output_tokens": sum(int(s.output_tokens or 0) for s in trace.spans),
        "cost_usd": sum(totals_cost) if totals_cost else None,
        "eval_run_id": attrs.get(semconv.EVAL_RUN_ID),
        "eval_example_id": attrs.get(semconv.EVAL_EXAMPLE_ID),
        "eval_name": attrs.get(semconv.EVAL_NAME),
        "spans": rows,
    }


def _view_messages(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages read by :mod:`ragtrail.tracing._messages` (the parts schema) as the span panel shows them."""
    out = []
    for m in msgs:
        parts: list[dict[str, Any]] = []
        for p in m["parts"]:
            ptype = p.get("type")
            if ptype in ("text", "reasoning"):
                parts.append({"type": "text", "text": "" if p.get("content") is None else str(p["content"]),
                              "reasoning": ptype == "reasoning"})  # fmt: skip
            elif ptype == "tool_call":
                parts.append({"type": "tool_call", "name": str(p.get("name") or ""), "id": p.get("id"),
                              "arguments": p.get("arguments")})  # fmt: skip
            elif ptype == "tool_call_response":
                parts.append({"type": "tool_result", "id": p.get("id"), "result": p.get("response")})
            else:
                parts.append({"type": ptype, "data": p})
        out.append({"role": m["role"], "parts": parts, "finish_reason": m.get("finish_reason")})
    return out


def _oi_messages(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for k, v in attrs.items():
        if not k.startswith(prefix + "."):
            continue
        rest = k[len(prefix) + 1 :].split(".", 1)
        if len(rest) != 2 or not rest[0].isdigit():
            continue
        m = out.setdefault(int(rest[0]), {"role": "", "parts": []})
        if rest[1] == semconv.OI_MESSAGE_ROLE:
            m["role"] = str(v)
        elif rest[1] == semconv.OI_MESSAGE_CONTENT:
            m["parts"].append({"type": "text", "text": str(v)})
    return [out[i] for i in sorted(out)]


def span_view(store: Store, trace: Trace, span_id: str, qrels: Qrels | None = None) -> dict[str, Any]:
    """Everything the span panel shows about one span."""
    try:
        s = trace.span(span_id)
    except KeyError as exc:
        raise NotFound(f"no span {span_id!r} in trace {trace.trace_id}") from exc
    a = s.attributes
    t0 = min(x.start_time_ns for x in trace.spans)
    labels: dict[str, float] | None = None
    root = trace.root
    if qrels is not None and root is not None:
        run_id, ex = root.attributes.get(semconv.EVAL_RUN_ID), root.attributes.get(semconv.EVAL_EXAMPLE_ID)
        if run_id and ex:
            labels = qrels.for_run_example(str(run_id), str(ex))
    docs = []
    for i, d in enumerate(s.documents()):
        did = d.get("id")
        docs.append({
            "rank": d.get("rank", i), "id": did, "score": d.get("score"), "content": d.get("content"),
            "metadata": d.get("metadata"),
            "relevance": None if labels is None else labels.get(str(did), 0.0),
        })  # fmt: skip
    in_msgs = _view_messages(s.input_messages()) or _oi_messages(a, semconv.OI_LLM_INPUT_MESSAGES)
    out_msgs = _view_messages(s.output_messages()) or _oi_messages(a, semconv.OI_LLM_OUTPUT_MESSAGES)
    tool = None
    if semconv.GEN_AI_TOOL_NAME in a or semconv.GEN_AI_TOOL_CALL_ARGUMENTS in a:
        tool = {
            "name": a.get(semconv.GEN_AI_TOOL_NAME),
            "call_id": a.get(semconv.GEN_AI_TOOL_CALL_ID),
            "arguments": maybe_json(a.get(semconv.GEN_AI_TOOL_CALL_ARGUMENTS)),
            "result": maybe_json(a.get(semconv.GEN_AI_TOOL_CALL_RESULT)),
        }
    usage = {
        "input_tokens": s.input_tokens,
        "output_tokens": s.output_tokens,
        "cached_input_tokens": a.get(semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS),
        "source": a.get(semconv.USAGE_SOURCE),
        "cost_usd": s.cost_usd,
        "cost_source": a.get(semconv.COST_SOURCE),
        "price_date": a.get(semconv.COST_PRICE_DATE),
        "ttft_s": a.get(semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK),
        "provider": a.get(semconv.GEN_AI_PROVIDER_NAME),
        "model": s.model,
    }
    events = []
    for e in s.events:
        if not isinstance(e, dict):
            continue
        ea = e.get("attributes") or {}
        ts = e.get("time_ns") or e.get("timestamp")
        events.append({
            "name": str(e.get("name", "")),
            "offset_ms": (int(ts) - t0) / 1e6 if isinstance(ts, (int, float)) else None,
            "exception": e.get("name") == semconv.EXCEPTION_EVENT,
            "type": ea.get("exception.type"), "message": ea.get("exception.message"),
            "stacktrace": ea.get("exception.stacktrace"), "attributes": ea,
        })  # fmt: skip
    return {
        "trace_id": s.trace_id,
        "span_id": s.span_id,
        "parent_span_id": s.parent_span_id,
        "name": s.name,
        "kind": _kind(s),
        "status": s.status,
        "status_message": s.status_message,
        "start_ms": (s.start_time_ns - t0) / 1e6,
        "duration_ms": s.duration_ms,
        "input": maybe_json(a.get(semconv.INPUT_VALUE) or a.get(semconv.OI_INPUT_VALUE)),
        "output": maybe_json(a.get(semconv.OUTPUT_VALUE) or a.get(semconv.OI_OUTPUT_VALUE)),
        "input_messages": in_msgs,
        "output_messages": out_msgs,
        "tool": tool,
        "documents": docs,
        "has_labels": labels is not None,
        "usage": usage,
        "params": {k: a[k] for k in _PARAMS if k in a},
        "gpu": {k: v for k, v in a.items() if k.startswith(_GPU_PREFIX)},
        "latency": {k: v for k, v in a.items() if k.startswith(_LATENCY_PREFIX)},
        "events": events,
        "attributes": dict(sorted(a.items())),
    }


# -------------------------------------------------------------------------------------------- runs
def _ci(m: dict[str, Any]) -> tuple[float | None, float | None]:
    """A normal-approximation 95% CI of a metric's mean from its summary (std, n_ok)."""
    mean, std, n = m.get("mean"), m.get("std"), int(m.get("n_ok") or 0)
    if mean is None or std is None or n < 2:
        return None, None
    half = _Z95 * float(std) / math.sqrt(n)
    return float(mean) - half, float(mean) + half


def _run_dict(run: Any) -> dict[str, Any]:
    s = run.summary or {}
    metrics = {}
    for name, m in (s.get("metrics") or {}).items():
        lo, hi = _ci(m)
        metrics[name] = {
            "mean": finite(m.get("mean")), "ci_low": lo, "ci_high": hi, "n_ok": m.get("n_ok", 0),
            "n_undefined": m.get("n_undefined", 0), "n_error": m.get("n_error", 0),
        }  # fmt: skip
    lat = s.get("latency_ms") or {}
    return {
        "run_id": run.run_id, "ref": run.ref, "name": run.name, "version": run.version, "status": run.status,
        "created_at": run.created_at, "dataset": run.dataset_name, "dataset_version": run.dataset_version,
        "config": run.config, "config_hash": run.config_hash, "n_examples": s.get("n_examples"),
        "n_error": s.get("n_error"), "latency_p50_ms": lat.get("p50"), "latency_p95_ms": lat.get("p95"),
        "cost_usd": s.get("cost_usd"), "metrics": metrics,
    }  # fmt: skip


def runs_view(store: Store) -> dict[str, Any]:
    """Evaluations with their versions (newest first), aliases and headline metrics."""
    from ragtrail.evals import list_runs, runs_df

    aliases: dict[str, list[str]] = {}
    df = runs_df(store)
    for rid, al in zip(df["run_id"], df["aliases"], strict=True):
        aliases[rid] = list(al)
    evals: dict[str, list[dict[str, Any]]] = {}
    for r in list_runs(store):
        d = _run_dict(r)
        d["aliases"] = aliases.get(r.run_id, [])
        evals.setdefault(r.name, []).append(d)
    out = []
    for name, runs in evals.items():
        metric_names = sorted({m for r in runs for m in r["metrics"]})
        out.append({"name": name, "runs": runs, "metrics": metric_names})
    return {"evaluations": out}


def run_view(store: Store, ref: str, params: dict[str, str]) -> dict[str, Any]:
    """One run: metrics with CIs and counts, and the per-example table (filtered, sorted)."""
    from ragtrail.evals import load_run

    try:
        run = load_run(store, ref)
    except RagtrailError as exc:
        raise NotFound(str(exc)) from exc
    d = _run_dict(run)
    d["aliases"] = run.aliases()
    inputs: dict[str, Any] = {}
    refs: dict[str, Any] = {}
    try:
        for e in run.dataset():
            inputs[e.id], refs[e.id] = e.input, e.reference
    except RagtrailError:
        pass
    rows: dict[str, dict[str, Any]] = {}
    for ex in run.examples():
        rows[ex["example_id"]] = {
            "example_id": ex["example_id"], "status": ex["status"], "error": ex["error"], "output": ex["output"],
            "trace_id": ex["trace_id"], "latency_ms": ex["latency_ms"], "cost_usd": ex["cost_usd"],
            "input": inputs.get(ex["example_id"]), "reference": refs.get(ex["example_id"]), "scores": {},
        }  # fmt: skip
    scorers: list[str] = []
    for r in run.results():
        if r["scorer"] not in scorers:
            scorers.append(r["scorer"])
        row = rows.setdefault(
            r["example_id"],
            {"example_id": r["example_id"], "status": r["example_status"], "error": r["example_error"],
             "output": None, "trace_id": r["trace_id"], "latency_ms": r["latency_ms"], "cost_usd": r["cost_usd"],
             "input": inputs.get(r["example_id"]), "reference": refs.get(r["example_id"]), "scores": {}},
        )  # fmt: skip
        row["scores"][r["scorer"]] = {"score": finite(r["score"]), "status": r["status"], "reason": r["reason"]}
    table = list(rows.values())
    show = params.get("show") or "all"
    scorer = params.get("scorer") or ""
    below = params.get("below") or ""
    if show == "failures":
        table = [
            r for r in table
            if r["status"] == "error" or any(c["status"] != "ok" for c in r["scores"].values())
        ]  # fmt: skip
    if scorer:
        table = [r for r in table if scorer in r["scores"]]
        if below:
            try:
                x = float(below)
            except ValueError:
                x = math.inf
            table = [
                r for r in table if (r["scores"][scorer]["score"] is not None and r["scores"][scorer]["score"] < x)
            ]
    sort = params.get("sort") or "example_id"
    desc = (params.get("order") or "asc") == "desc"
    if sort in scorers:

        def key(r: dict[str, Any]) -> tuple[int, float]:
            c = r["scores"].get(sort)
            v = None if c is None else c["score"]
            return (0, float(v)) if v is not None else (1, 0.0)

        table.sort(key=key, reverse=desc)
    elif sort in ("latency_ms", "cost_usd"):
        table.sort(key=lambda r: (r[sort] is None, r[sort] or 0.0), reverse=desc)
    else:
        table.sort(key=lambda r: str(r["example_id"]), reverse=desc)
    d.update({"scorers": scorers, "examples": table, "show": show, "scorer": scorer, "below": below,
              "sort": sort, "order": "desc" if desc else "asc", "n_total": len(rows)})  # fmt: skip
    return d


def compare_view(store: Store, a: str, b: str) -> dict[str, Any]:
    """Per-metric deltas with paired CIs and Holm-adjusted p, regressions, improvements, config diff."""
    import warnings

    from ragtrail.evals import compare, load_run

    try:
        ra, rb = load_run(store, a), load_run(store, b)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            comp = compare(store, ra, rb, allow_different=True)
    except RagtrailError as exc:
        raise NotFound(str(exc)) from exc
    out = comp.to_dict()
    keys = sorted(set(ra.config) | set(rb.config))
    out["config_diff"] = [
        {"key": k, "a": ra.config.get(k), "b": rb.config.get(k), "changed": ra.config.get(k) != rb.config.get(k)}
        for k in keys
    ]
    out["a"]["run_id"], out["b"]["run_id"] = ra.run_id, rb.run_id
    return out


def _span_keys(trace: Trace) -> dict[str, str]:
    """A key per span that matches across two traces of one pipeline: the path of names from the root,
    each with its occurrence index among same-named siblings."""
    keys: dict[str, str] = {}

    def visit(parent: SpanRecord | None, prefix: str) -> None:
        seen: dict[str, int] = {}
        for c in trace.children(parent):
            n = seen.get(c.name, 0)
            seen[c.name] = n + 1
            k = f"{prefix}/{c.name}#{n}"
            keys[c.span_id] = k
            visit(c, k)

    visit(None, "")
    return keys


def _delta(a: Any, b: Any) -> Any:
    if a is None or b is None:
        return None
    return b - a


def trace_diff(store: Store, a: str, b: str, example_id: str) -> dict[str, Any]:
    """One example's traces in runs ``a`` and ``b`` side by side: matched spans with latency, token and
    cost deltas, and the retrieved-documents diff (gained, lost, moved) with relevance labels."""
    from ragtrail.evals import load_run

    try:
        ra, rb = load_run(store, a), load_run(store, b)
    except RagtrailError as exc:
        raise NotFound(str(exc)) from exc
    tids = {}
    for run, side in ((ra, "a"), (rb, "b")):
        hit = [e for e in run.examples() if e["example_id"] == example_id]
        if not hit or not hit[0]["trace_id"]:
            raise NotFound(f"run {run.ref} has no trace for example {example_id!r}")
        tids[side] = hit[0]["trace_id"]
    ta, tb = load_trace(store, tids["a"]), load_trace(store, tids["b"])
    labels = Qrels(store).for_run_example(rb.run_id, example_id) or {}
    ka, kb = _span_keys(ta), _span_keys(tb)
    by_key_b = {k: sid for sid, k in kb.items()}
    rows = []
    matched_b = set()
    for depth, s in ta.walk():
        k = ka.get(s.span_id)
        other = tb.span(by_key_b[k]) if k in by_key_b else None
        if other is not None:
            matched_b.add(other.span_id)
        rows.append(_diff_row(depth, s, other))
    for depth, s in tb.walk():
        if s.span_id not in matched_b:
            rows.append(_diff_row(depth, None, s))
    docs_a = ta.retrieved_documents()
    docs_b = tb.retrieved_documents()
    rank_a = {str(d.get("id")): i for i, d in enumerate(docs_a)}
    rank_b = {str(d.get("id")): i for i, d in enumerate(docs_b)}
    doc_rows = []
    for did in list(rank_b) + [x for x in rank_a if x not in rank_b]:
        ia, ib = rank_a.get(did), rank_b.get(did)
        change = "gained" if ia is None else "lost" if ib is None else "moved" if ia != ib else "same"
        src = docs_b[ib] if ib is not None else docs_a[ia]  # type: ignore[index]
        doc_rows.append({
            "id": did, "rank_a": ia, "rank_b": ib, "change": change, "relevance": labels.get(did, 0.0) if labels else None,
            "content": src.get("content"),
        })  # fmt: skip
    return {
        "a": {"ref": ra.ref, "run_id": ra.run_id, "trace_id": ta.trace_id},
        "b": {"ref": rb.ref, "run_id": rb.run_id, "trace_id": tb.trace_id},
        "example_id": example_id,
        "spans": rows,
        "documents": doc_rows,
        "has_labels": bool(labels),
    }


def _diff_row(depth: int, sa: SpanRecord | None, sb: SpanRecord | None) -> dict[str, Any]:
    s = sa or sb
    assert s is not None
    la = None if sa is None else sa.duration_ms
    lb = None if sb is None else sb.duration_ms

    def tok(x: SpanRecord | None) -> int | None:
        if x is None or (x.input_tokens is None and x.output_tokens is None):
            return None
        return int(x.input_tokens or 0) + int(x.output_tokens or 0)

    return {
        "depth": depth, "name": s.name, "kind": _kind(s), "in": "both" if sa and sb else ("a" if sa else "b"),
        "span_a": None if sa is None else sa.span_id, "span_b": None if sb is None else sb.span_id,
        "ms_a": la, "ms_b": lb, "ms_delta": _delta(la, lb), "tokens_a": tok(sa), "tokens_b": tok(sb),
        "tokens_delta": _delta(tok(sa), tok(sb)), "cost_a": None if sa is None else sa.cost_usd,
        "cost_b": None if sb is None else sb.cost_usd,
        "cost_delta": _delta(None if sa is None else sa.cost_usd, None if sb is None else sb.cost_usd),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------- datasets
def datasets_view(store: Store) -> dict[str, Any]:
    from ragtrail.evals import list_datasets

    by: dict[str, list[dict[str, Any]]] = {}
    for d in list_datasets(store):
        by.setdefault(d["name"], []).append(d)
    return {"datasets": [{"name": n, "versions": v} for n, v in by.items()]}


def dataset_view(store: Store, name: str, params: dict[str, str]) -> dict[str, Any]:
    """Versions of one dataset, the examples of one version (a page after an id), a diff of two versions."""
    from ragtrail.evals import list_datasets, load_dataset

    versions = list_datasets(store, name)
    if not versions:
        raise NotFound(f"no dataset {name!r} in the store {store.url}")
    version = params.get("version") or versions[0]["version"]
    try:
        ds = load_dataset(store, f"{name}:{version}")
    except RagtrailError as exc:
        raise NotFound(str(exc)) from exc
    after = params.get("after") or ""
    exs = [e for e in ds if not after or e.id > after]
    exs.sort(key=lambda e: e.id)
    page = exs[: q.PAGE_SIZE]
    out: dict[str, Any] = {
        "name": name, "version": version, "versions": versions, "n_examples": len(ds),
        "examples": [e.model_dump(mode="json") for e in page],
        "next": page[-1].id if len(exs) > q.PAGE_SIZE else None, "diff": None,
    }  # fmt: skip
    other = params.get("diff")
    if other:
        try:
            od = load_dataset(store, f"{name}:{other}")
        except RagtrailError as exc:
            raise NotFound(str(exc)) from exc
        dd = od.diff(ds)
        out["diff"] = {"from": other, "to": version, "added": dd.added, "removed": dd.removed, "changed": dd.changed}
    return out


def overview_view(store: Store, params: dict[str, str]) -> dict[str, Any]:
    try:
        days = max(1, min(366, int(params.get("days") or 14)))
    except ValueError:
        days = 14
    data = q.overview(store, params.get("project") or None, days=days)
    data["n_days"] = days
    return data


__all__ = [
    "NotFound",
    "Qrels",
    "StoreError",
    "compare_view",
    "dataset_view",
    "datasets_view",
    "finite",
    "load_trace",
    "overview_view",
    "run_view",
    "runs_view",
    "span_view",
    "trace_diff",
    "trace_list",
    "trace_view",
]
