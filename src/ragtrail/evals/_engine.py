"""One execution of an evaluation (:class:`_Engine`): examples through the pipeline and the scorers,
each example's results committed to the store as it finishes; and the scoring helpers the harness,
the Ray backend and offline scoring share."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import json
import math
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragtrail import semconv
from ragtrail._exceptions import ConfigError
from ragtrail._log import logger
from ragtrail.evals._aio import run_sync
from ragtrail.evals._concurrency import AdaptiveLimiter
from ragtrail.evals._registry import as_scorer
from ragtrail.evals._runs import Run
from ragtrail.evals._types import Example, Score, Scorer
from ragtrail.store import _evals as repo
from ragtrail.tracing._content import mask_value
from ragtrail.tracing._model import Trace

if TYPE_CHECKING:
    from ragtrail.evals._harness import Evaluation
    from ragtrail.store import Store

_EMPTY_TRACE = Trace([])


# ------------------------------------------------------------------------------------- scoring
def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _safe_score(s: Scorer, ex: Example, output: Any, trace: Trace) -> Score:
    try:
        if getattr(s, "is_async", False) and type(s).score is Scorer.score:
            res = run_sync(s.ascore(ex, output, trace))
        else:
            res = s.score(ex, output, trace)
        return Score.coerce(res)
    except Exception as exc:
        logger.debug("ragtrail: scorer %s failed on %s", s.name, ex.id, exc_info=True)
        return Score.error(_reason(exc))


async def _safe_ascore(s: Scorer, ex: Example, output: Any, trace: Trace) -> Score:
    try:
        return Score.coerce(await s.ascore(ex, output, trace))
    except Exception as exc:
        return Score.error(_reason(exc))


def _safe_batch(s: Scorer, items: Sequence[tuple[Example, Any, Trace]]) -> list[Score]:
    try:
        res = s.score_batch(items)
        if len(res) != len(items):
            raise ValueError(f"score_batch returned {len(res)} scores for {len(items)} examples")
        out = []
        for r in res:
            try:
                out.append(Score.coerce(r))
            except Exception as exc:
                out.append(Score.error(_reason(exc)))
        return out
    except Exception as exc:
        if len(items) == 1:
            return [Score.error(_reason(exc))]
        logger.warning("ragtrail: batched scorer %s failed on a batch of %d; scoring one by one", s.name, len(items))
        return [_safe_batch(s, [it])[0] for it in items]


def score_items(
    scorers: Sequence[Any], items: Sequence[tuple[Example, Any, Trace | None]], *, batch_size: int = 1024
) -> list[dict[str, Score]]:
    """Score ``(example, output, trace)`` items in-process, without a store or a run (batched scorers
    get whole batches). Returns one ``{scorer name: Score}`` per item."""
    objs = _scorer_list(scorers)
    norm = [(e, o, t if t is not None else _EMPTY_TRACE) for e, o, t in items]
    out: list[dict[str, Score]] = [{} for _ in norm]
    plain = [s for s in objs if not s.batched]
    for i, (e, o, t) in enumerate(norm):  # example-major: scorers of one example share cached work
        d = out[i]
        for s in plain:
            d[s.name] = _safe_score(s, e, o, t)
    for s in objs:
        if s.batched:
            for start in range(0, len(norm), batch_size):
                chunk = norm[start : start + batch_size]
                for i, sc in enumerate(_safe_batch(s, chunk)):
                    out[start + i][s.name] = sc
    return out


def _scorer_list(scorers: Iterable[Any]) -> list[Scorer]:
    objs = [as_scorer(s) for s in scorers]
    names: dict[str, int] = {}
    for s in objs:
        names[s.name] = names.get(s.name, 0) + 1
    dup = [n for n, c in names.items() if c > 1]
    if dup:
        raise ConfigError(f"two scorers are named {dup[0]!r}; give one a different name (name=...)")
    return objs


# ------------------------------------------------------------------------------------- helpers
def _output_json(output: Any) -> str | None:
    if output is None:
        return None
    try:
        return json.dumps(output, ensure_ascii=False, default=_default)
    except (TypeError, ValueError):
        return json.dumps(str(output), ensure_ascii=False)


def _default(o: Any) -> Any:
    for attr in ("model_dump", "dict", "to_json"):
        f = getattr(o, attr, None)
        if callable(f):
            with contextlib.suppress(Exception):
                return f()
    if hasattr(o, "page_content"):  # a LangChain Document
        return {"content": o.page_content, "metadata": getattr(o, "metadata", {}), "id": getattr(o, "id", None)}
    return str(o)


def _details_cost(sc: Score) -> float:
    v = sc.details.get("cost_usd") if sc.details else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else 0.0


def _is_async_callable(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _accepts_config(fn: Any) -> bool:
    try:
        return "config" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


@dataclass
class CostEstimate:
    """What ``run(dry_run=True)`` returns: the examples that would run and the expected cost."""

    n_examples: int
    pipeline_cost_per_example: float | None
    pipeline_cost_usd: float | None
    scorer_cost_usd: float | None
    total_usd: float | None
    basis: str
    scorers: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        def money(v: float | None) -> str:
            return "unknown" if v is None else f"${v:.4f}"

        return (f"{self.n_examples} examples; pipeline {money(self.pipeline_cost_usd)}, scorers "
                f"{money(self.scorer_cost_usd)}, total {money(self.total_usd)} ({self.basis})")  # fmt: skip


@dataclass
class _Done:
    example: Example
    output: Any
    trace: Trace
    ok: bool


class _Engine:
    """One execution of an evaluation: feeds examples through the pipeline and scorers, commits."""

    def __init__(self, ev: Evaluation, store: Store, run: Run, scorers: list[Scorer], max_cost: float | None,
                 config: Mapping[str, Any], on_example_scored: Callable[..., str | None] | None = None) -> None:  # fmt: skip
        self.on_example_scored = on_example_scored
        self.unstarted = 0  # examples not started yet (a stop after the last one started changes nothing)
        self.ev = ev
        self.store = store
        self.run = run
        self.scorers = scorers
        self.plain = [s for s in scorers if not s.batched]
        self.batched = [s for s in scorers if s.batched]
        self.max_cost = max_cost
        self.config = dict(config)
        self.spent = 0.0
        self.stop_reason: str | None = None
        self._lock = threading.Lock()
        self._pending: list[_Done] = []
        self.limiter = ev.limiter or AdaptiveLimiter(ev.max_concurrency)
        self.pipeline_calls = 0
        self.bar: Any = None

    # ---------------------------------------------------------------------- cost
    def _add_cost(self, v: float) -> None:
        with self._lock:
            self.spent += v
            if self.max_cost is not None and self.spent >= self.max_cost and self.stop_reason is None:
                self.stop_reason = f"max_cost ${self.max_cost:g} reached (spent ${self.spent:.4f})"
                logger.warning(
                    "ragtrail: %s; stopping after the examples in flight (resume to continue)", self.stop_reason
                )

    def _count_call(self) -> None:
        """Counted as each pipeline call starts (the Ray backend also tells the run's driver)."""
        with self._lock:
            self.pipeline_calls += 1

    # ---------------------------------------------------------------------- per-example hook (sweeps, #22)
    def _scored(self, ex_id: str, results: Sequence[tuple[str, Score]]) -> None:
        """Tell ``on_example_scored(example_id, {scorer: Score})`` (a sweep trial's running metric);
        a non-empty string it returns stops the run like max_cost does (a pruned trial), unless every
        example has started already."""
        if self.on_example_scored is None:
            return
        try:
            why = self.on_example_scored(ex_id, dict(results))
        except Exception:
            logger.warning("ragtrail: on_example_scored failed on %s", ex_id, exc_info=True)
            return
        if why and self.unstarted > 0:
            with self._lock:
                if self.stop_reason is None:
                    self.stop_reason = str(why)

    # ---------------------------------------------------------------------- commits
    def _commit(self, ex_id: str, row: tuple[Any, ...] | None, results: Sequence[tuple[str, Score]], trace_id: str | None,
                replace_example: bool = False) -> None:  # fmt: skip
        if row is not None:
            row = mask_value(row)  # outputs and errors go through the masking step, as span content does
        repo.commit_example(
            self.store, self.run.run_id, ex_id, row,
            [(ex_id, name, sc.value, sc.status, mask_value(sc.reason), mask_value(sc.details), trace_id)
             for name, sc in results],
            replace_example=replace_example,
        )  # fmt: skip

    def _commit_batch(self, rows: Sequence[tuple[str, str, Score, str | None]]) -> None:
        repo.commit_results(
            self.store,
            self.run.run_id,
            [(e, n, sc.value, sc.status, mask_value(sc.reason), mask_value(sc.details), tid) for e, n, sc, tid in rows],
        )

    # ---------------------------------------------------------------------- pipeline call
    def _root_attrs(self, ex: Example) -> dict[str, Any]:
        attrs = {
            semconv.SPAN_KIND: semconv.CHAIN,
            semconv.EVAL_RUN_ID: self.run.run_id,
            semconv.EVAL_EXAMPLE_ID: ex.id,
            semconv.EVAL_NAME: self.run.name,
        }
        source = ex.metadata.get("source_trace_id")  # an example made from a production trace links back to it
        if isinstance(source, str):
            attrs[semconv.EVAL_SOURCE_TRACE_ID] = source
        return attrs

    def _start_root(self, ex: Example) -> tuple[Any, int, Any]:
        from opentelemetry import context as otel_context
        from opentelemetry import trace as otel_trace

        from ragtrail.tracing import collector, get_config, set_content

        cfg = get_config()
        tracer = cfg.tracer if cfg is not None else otel_trace.NoOpTracer()
        span = tracer.start_span(
            f"eval {self.run.name}", context=otel_context.Context(), attributes=self._root_attrs(ex)
        )
        tid = span.get_span_context().trace_id
        if span.is_recording():
            collector().watch(tid)
            set_content(span, semconv.INPUT_VALUE, ex.input)
        token = otel_context.attach(otel_trace.set_span_in_context(span, otel_context.Context()))
        return span, tid, token

    def _end_root(
        self, span: Any, tid: int, token: Any, output: Any, exc: BaseException | None
    ) -> tuple[Trace, str | None]:
        from opentelemetry import context as otel_context

        from ragtrail.tracing import collector, get_config, record_exception, set_content

        with contextlib.suppress(Exception):
            otel_context.detach(token)
        if not span.is_recording():
            return _EMPTY_TRACE, None
        if exc is not None:
            record_exception(span, exc)
        elif output is not None:
            set_content(span, semconv.OUTPUT_VALUE, output)
        span.end()
        cfg = get_config()
        trace = collector().take(tid, cfg.project if cfg else None)
        return trace, format(tid, "032x")

    def _invoke_args(self, ex: Example) -> tuple[Any, dict[str, Any]]:
        kw = {"config": self.config} if self.ev._pass_config else {}
        return ex.input, kw

    def _row(
        self, ok: bool, output: Any, err: str | None, trace: Trace, tid: str | None, latency: float
    ) -> tuple[Any, ...]:
        tin = sum(int(s.input_tokens or 0) for s in trace.llm_calls()) if len(trace) else 0
        tout = sum(int(s.output_tokens or 0) for s in trace.llm_calls()) if len(trace) else 0
        has_tok = (
            any(s.input_tokens is not None or s.output_tokens is not None for s in trace.llm_calls())
            if len(trace)
            else False
        )
        cost = trace.cost_usd if len(trace) else None
        return ("ok" if ok else "error", _output_json(output) if ok else None, err, tid, latency,
                tin if has_tok else None, tout if has_tok else None, cost)  # fmt: skip

    def call_sync(self, ex: Example) -> tuple[Any, BaseException | None, Trace, str | None, float]:
        """Worker-thread path: call a sync pipeline under the example's root span."""
        fn = self.ev._sync_fn
        arg, kw = self._invoke_args(ex)
        span, tid, token = self._start_root(ex)
        t0 = time.perf_counter()
        output: Any = None
        exc: BaseException | None = None
        try:
            self._count_call()
            output = self.limiter.call(fn, arg, **kw)  # type: ignore[arg-type]
        except Exception as e:
            exc = e
        latency = (time.perf_counter() - t0) * 1000
        trace, tid_hex = self._end_root(span, tid, token, output, exc)
        return output, exc, trace, tid_hex, latency

    async def run_sync_example(self, ex: Example, replace: bool, pool: concurrent.futures.Executor) -> _Done:
        loop = asyncio.get_running_loop()
        output, exc, trace, tid_hex, latency = await loop.run_in_executor(pool, self.call_sync, ex)
        pre = await self._async_scores(ex, output, exc, trace)
        return await loop.run_in_executor(
            pool, self._finish_example, ex, output, exc, trace, tid_hex, latency, replace, pre
        )

    async def _async_scores(
        self, ex: Example, output: Any, exc: BaseException | None, trace: Trace
    ) -> dict[str, Score]:
        """Async scorers run on the event loop (one loop for the whole run, so judge clients keep theirs)."""
        out: dict[str, Score] = {}
        if exc is None:
            todo = [s for s in self.plain if getattr(s, "is_async", False)]
            if todo:
                res = await asyncio.gather(*[_safe_ascore(s, ex, output, trace) for s in todo])
                out = {s.name: r for s, r in zip(todo, res, strict=False)}
        return out

    async def run_async_example(self, ex: Example, replace: bool, pool: concurrent.futures.Executor) -> _Done:
        fn = self.ev._async_fn
        assert fn is not None
        arg, kw = self._invoke_args(ex)
        span, tid, token = self._start_root(ex)
        t0 = time.perf_counter()
        output: Any = None
        exc: BaseException | None = None
        try:
            self._count_call()
            if self.ev.timeout_s:
                output = await self.limiter.acall(lambda: asyncio.wait_for(fn(arg, **kw), self.ev.timeout_s))
            else:
                output = await self.limiter.acall(fn, arg, **kw)
        except Exception as e:
            exc = e
        latency = (time.perf_counter() - t0) * 1000
        trace, tid_hex = self._end_root(span, tid, token, output, exc)
        async_scores = await self._async_scores(ex, output, exc, trace)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            pool, self._finish_example, ex, output, exc, trace, tid_hex, latency, replace, async_scores
        )

    def _finish_example(self, ex: Example, output: Any, exc: BaseException | None, trace: Trace, tid: str | None,
                        latency: float, replace: bool, pre: Mapping[str, Score] | None = None) -> _Done:  # fmt: skip
        if exc is not None:
            err = _reason(exc)
            logger.debug("ragtrail: pipeline failed on example %s: %s", ex.id, "".join(traceback.format_exception(exc)))
            row = self._row(False, None, err, trace, tid, latency)
            results = [(s.name, Score.error(f"pipeline failed: {err}")) for s in self.scorers]
            self._commit(ex.id, row, results, tid, replace_example=replace)
            self._add_cost(float(row[-1] or 0.0))
            self._scored(ex.id, results)
            return _Done(ex, None, trace, False)
        results = []
        for s in self.plain:
            sc = pre[s.name] if pre and s.name in pre else _safe_score(s, ex, output, trace)
            results.append((s.name, sc))
        row = self._row(True, output, None, trace, tid, latency)
        self._commit(ex.id, row, results, tid, replace_example=replace)
        self._add_cost(float(row[-1] or 0.0) + sum(_details_cost(sc) for _n, sc in results))
        self._scored(ex.id, results)
        return _Done(ex, output, trace, True)

    def rescore_example(self, ex: Example, output: Any, trace: Trace, tid: str | None, missing: set[str]) -> _Done:
        results = [(s.name, _safe_score(s, ex, output, trace)) for s in self.plain if s.name in missing]
        if results:
            self._commit(ex.id, None, results, tid)
            self._add_cost(sum(_details_cost(sc) for _n, sc in results))
            self._scored(ex.id, results)
        return _Done(ex, output, trace, True)

    # ---------------------------------------------------------------------- batched scorers
    def flush_batched(self, items: Sequence[_Done], only: Mapping[str, set[str]] | None = None) -> None:
        rows: list[tuple[str, str, Score, str | None]] = []
        for s in self.batched:
            todo = [d for d in items if d.ok and (only is None or s.name in only.get(d.example.id, set()))]
            if not todo:
                continue
            scores = _safe_batch(s, [(d.example, d.output, d.trace) for d in todo])
            for d, sc in zip(todo, scores, strict=False):
                tid = d.trace.trace_id or None
                rows.append((d.example.id, s.name, sc, tid))
        if rows:
            self._commit_batch(rows)
            self._add_cost(sum(_details_cost(sc) for _e, _n, sc, _t in rows))
            for ex_id in dict.fromkeys(r[0] for r in rows):
                self._scored(ex_id, [(n, sc) for e, n, sc, _t in rows if e == ex_id])


def _load_traces(store: Store, trace_ids: Sequence[str]) -> dict[str, Trace]:
    from ragtrail.tracing import flush
    from ragtrail.tracing._model import SpanRecord

    if not trace_ids:
        return {}
    flush(10.0)
    by: dict[str, list[SpanRecord]] = {}
    for r in repo.trace_span_rows(store, trace_ids):
        s = SpanRecord.from_row(r)
        by.setdefault(s.trace_id, []).append(s)
    return {k: Trace(v) for k, v in by.items()}
