"""Offline scoring: runs logged from outputs and traces already recorded, calling no pipeline
(:func:`evaluate_traces` for traces, :func:`rescore` for a stored run's outputs)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ragtrail import semconv
from ragtrail._exceptions import ConfigError, EvalError
from ragtrail._store_of import store_of
from ragtrail.evals._datasets import Dataset
from ragtrail.evals._runs import Run, create_run, finish_run, load_run
from ragtrail.evals._types import Score
from ragtrail.store import _evals as repo
from ragtrail.tracing._model import Trace

if TYPE_CHECKING:
    pass
from ragtrail.evals._engine import _EMPTY_TRACE, _Done, _Engine, _load_traces, _output_json, _safe_score
from ragtrail.evals._harness import Evaluation

__all__ = ["evaluate_traces", "rescore"]


# ------------------------------------------------------------------------------------- offline scoring
def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)


def _score_offline(
    name: str,
    dataset: Dataset,
    scorers: Sequence[Any],
    items: Mapping[str, tuple[Any, Trace, tuple[Any, ...]]],
    *,
    store: Any,
    config: Mapping[str, Any] | None,
    lineage_extra: Mapping[str, Any],
    source_run_id: str | None,
    missing_reason: str,
    batch_size: int = 256,
) -> Run:
    """Log a run from outputs/traces already recorded: no pipeline is called."""
    ev = Evaluation(name, dataset, None, scorers, store=store, batch_size=batch_size, progress=False)
    st = ev._store()
    dataset.push(st)
    cfg = dict(config or {})
    run = create_run(st, name, dataset_name=dataset.name, dataset_version=dataset.version, config=cfg,
                     lineage=ev._lineage(cfg, lineage_extra), source_run_id=source_run_id)  # fmt: skip
    engine = _Engine(ev, st, run, ev.scorers, None, cfg)
    done: list[_Done] = []
    for ex in dataset.examples:
        if ex.id not in items:
            engine._commit(ex.id, ("error", None, missing_reason, None, None, None, None, None),
                           [(s.name, Score.error(missing_reason)) for s in ev.scorers], None)  # fmt: skip
            continue
        output, trace, row = items[ex.id]
        tid = row[3]
        if row[0] != "ok":
            err = row[2] or "the recorded example failed"
            engine._commit(ex.id, row, [(s.name, Score.error(f"pipeline failed: {err}")) for s in ev.scorers], tid)
            continue
        results = [(s.name, _safe_score(s, ex, output, trace)) for s in engine.plain]
        engine._commit(ex.id, row, results, tid)
        done.append(_Done(ex, output, trace, True))
    for start in range(0, len(done), ev.batch_size):
        engine.flush_batched(done[start : start + ev.batch_size])
    finish_run(st, run.run_id, "finished", {"pipeline_calls": 0})
    return load_run(st, run.run_id)


def evaluate_traces(
    dataset: Dataset,
    traces: Iterable[Trace | str],
    scorers: Sequence[Any],
    *,
    name: str | None = None,
    store: Any = None,
    config: Mapping[str, Any] | None = None,
) -> Run:
    """Score traces already recorded against ``dataset`` and log a run, calling no pipeline.

    Each trace is matched to an example by its ``ragtrail.eval.example_id`` attribute, else by an
    exact match of its root span's input with the example's input; the output is the root span's
    output. Examples without a matching trace are recorded as errors ("no recorded trace").
    """
    st = store_of(store)
    objs: list[Trace] = []
    ids: list[str] = []
    for t in traces:
        if isinstance(t, Trace):
            objs.append(t)
        elif isinstance(t, str):
            ids.append(t)
        else:
            raise ConfigError(f"evaluate_traces: traces must be Trace objects or trace ids, not {type(t).__name__}")
    if ids:
        loaded = _load_traces(st, ids)
        missing = [i for i in ids if i not in loaded]
        if missing:
            raise EvalError(f"evaluate_traces: trace {missing[0]!r} is not in the store {st.url}")
        objs.extend(loaded[i] for i in ids)
    by_input: dict[str, str] = {}
    for ex in dataset.examples:
        by_input.setdefault(_canon(ex.input), ex.id)
    items: dict[str, tuple[Any, Trace, tuple[Any, ...]]] = {}
    for t in objs:
        root = t.root
        if root is None:
            continue
        ex_id = None
        for s in t.spans:
            v = s.attributes.get(semconv.EVAL_EXAMPLE_ID)
            if v is not None and str(v) in dataset:
                ex_id = str(v)
                break
        if ex_id is None:
            ex_id = by_input.get(_canon(root.input))
        if ex_id is None or ex_id in items:
            continue
        ok = not root.is_error
        tin = sum(int(s.input_tokens or 0) for s in t.llm_calls())
        tout = sum(int(s.output_tokens or 0) for s in t.llm_calls())
        row = ("ok" if ok else "error", _output_json(root.output) if ok else None,
               None if ok else (root.status_message or "the recorded trace ended in an error"), t.trace_id,
               root.duration_ms, tin or None, tout or None, t.cost_usd)  # fmt: skip
        items[ex_id] = (root.output, t, row)
    return _score_offline(
        name or f"{dataset.name}-traces", dataset, scorers, items, store=st, config=config,
        lineage_extra={"source": "traces", "n_traces": len(objs), "n_matched": len(items)},
        source_run_id=None, missing_reason="no recorded trace matched this example",
    )  # fmt: skip


def rescore(run: Any, scorers: Sequence[Any], *, name: str | None = None, store: Any = None) -> Run:
    """Score a stored run's outputs and traces with ``scorers`` as a new run linked to it
    (``source_run_id``); no pipeline is called."""
    st = store_of(store if store is not None else getattr(run, "store", None))
    src = load_run(st, run)
    ds = src.dataset()
    rows = [tuple(d.values()) for d in repo.example_rows(st, src.run_id)]  # EXAMPLE_FIELDS order
    traces = _load_traces(st, [r[4] for r in rows if r[4]])
    items: dict[str, tuple[Any, Trace, tuple[Any, ...]]] = {}
    for r in rows:
        output = json.loads(r[2]) if r[2] else None
        items[r[0]] = (output, traces.get(r[4] or "", _EMPTY_TRACE), tuple(r[1:]))
    return _score_offline(
        name or src.name, ds, scorers, items, store=st, config=src.config,
        lineage_extra={"source": "rescore", "source_run": src.ref}, source_run_id=src.run_id,
        missing_reason=f"example not in the source run {src.ref}",
    )  # fmt: skip
