"""The eval harness: run a pipeline over a dataset, score each example from its trace, log a run.

Each example runs under its own root span (a new trace) carrying the run and example ids; the spans
of that trace are collected in-process and handed to the scorers as a :class:`Trace`. Results are
committed to the store as each example finishes, so an interrupted run resumes where it stopped.
"""

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
from ragtrail._exceptions import ConfigError, EvalError, MissingDependencyError
from ragtrail._log import logger
from ragtrail.evals._concurrency import AdaptiveLimiter
from ragtrail.evals._datasets import Dataset
from ragtrail.evals._runs import Run, _json, config_hash, create_run, finish_run, git_info, load_run, package_versions
from ragtrail.evals._scorers import as_scorer
from ragtrail.evals._types import Example, Score, Scorer
from ragtrail.tracing._model import Trace

if TYPE_CHECKING:
    from ragtrail.store import Store

__all__ = ["CostEstimate", "Evaluation", "evaluate_traces", "rescore", "score_items"]

_EMPTY_TRACE = Trace([])


# ------------------------------------------------------------------------------------- scoring
def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def _safe_score(s: Scorer, ex: Example, output: Any, trace: Trace) -> Score:
    try:
        if getattr(s, "is_async", False) and type(s).score is Scorer.score:
            res = asyncio.run(_await(s.ascore(ex, output, trace)))
        else:
            res = s.score(ex, output, trace)
        return Score.coerce(res)
    except Exception as exc:
        logger.debug("ragtrail: scorer %s failed on %s", s.name, ex.id, exc_info=True)
        return Score.error(_reason(exc))


async def _await(aw: Any) -> Any:
    return await aw


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
        now = time.time()
        rid = self.run.run_id
        with self.store.transaction() as cur:
            if row is not None:
                if replace_example:
                    cur.execute("DELETE FROM run_examples WHERE run_id = ? AND example_id = ?", (rid, ex_id))
                    cur.execute("DELETE FROM run_results WHERE run_id = ? AND example_id = ?", (rid, ex_id))
                cur.execute(
                    "INSERT INTO run_examples (run_id, example_id, status, output, error, trace_id, latency_ms, "
                    "input_tokens, output_tokens, cost_usd, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (rid, ex_id, *row, now),
                )
            for name, sc in results:
                cur.execute(
                    "DELETE FROM run_results WHERE run_id = ? AND example_id = ? AND scorer = ?", (rid, ex_id, name)
                )
                cur.execute(
                    "INSERT INTO run_results (run_id, example_id, scorer, score, status, reason, details, trace_id, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        rid,
                        ex_id,
                        name,
                        sc.value,
                        sc.status,
                        sc.reason,
                        _json(sc.details) if sc.details else None,
                        trace_id,
                        now,
                    ),
                )

    def _commit_batch(self, rows: Sequence[tuple[str, str, Score, str | None]]) -> None:
        now = time.time()
        rid = self.run.run_id
        with self.store.transaction() as cur:
            cur.executemany(
                "DELETE FROM run_results WHERE run_id = ? AND example_id = ? AND scorer = ?",
                [(rid, ex_id, name) for ex_id, name, _sc, _tid in rows],
            )
            cur.executemany(
                "INSERT INTO run_results (run_id, example_id, scorer, score, status, reason, details, trace_id, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (rid, e, n, sc.value, sc.status, sc.reason, _json(sc.details) if sc.details else None, tid, now)
                    for e, n, sc, tid in rows
                ],
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
            with self._lock:
                self.pipeline_calls += 1
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
            with self._lock:
                self.pipeline_calls += 1
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


# ------------------------------------------------------------------------------------- Evaluation
class Evaluation:
    """Run ``pipeline`` over ``dataset``, score every example from its trace and log a versioned run.

    Args:
        name: evaluation name; runs are ``name:v1``, ``name:v2``…
        dataset: a :class:`Dataset` (pushed to the store so the run keeps its exact snapshot).
        pipeline: ``f(input) -> output`` — sync or async, a LangChain Runnable (``invoke``/``ainvoke``)
            or any callable; it gets ``config=`` too when it has a parameter of that name. The output
            is a string or ``{"answer": …, "contexts": […]}`` (or anything your scorers understand).
        scorers: Scorer objects, functions, or registered names.
        max_concurrency: the most examples in flight (threads for sync pipelines, tasks for async);
            the adaptive limiter lowers it on rate limits and timeouts and raises it back.
        store: where runs go (default: the store of ``ragtrail.init()``, else the default store).
        max_cost: stop cleanly once pipeline + judge cost reaches this many USD (resumable).
        timeout_s: per-example timeout for async pipelines.
        batch_size: examples per call of a batched scorer.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        name: str,
        dataset: Dataset,
        pipeline: Callable[..., Any] | Any = None,
        scorers: Sequence[Any] = (),
        *,
        max_concurrency: int = 8,
        store: Any = None,
        max_cost: float | None = None,
        timeout_s: float | None = None,
        batch_size: int = 256,
        progress: bool = True,
        limiter: AdaptiveLimiter | None = None,
        project: str | None = None,
        description: str | None = None,
    ) -> None:
        if not name or ":" in name:
            raise ConfigError(f"Evaluation name {name!r} must be non-empty and contain no ':'")
        if not isinstance(dataset, Dataset):
            raise ConfigError(f"Evaluation({name!r}): dataset must be a ragtrail Dataset, not {type(dataset).__name__}")
        if max_concurrency < 1:
            raise ConfigError(f"Evaluation({name!r}): max_concurrency must be >= 1, got {max_concurrency}")
        self.name = name
        self.dataset = dataset
        self.pipeline = pipeline
        self.scorers = _scorer_list(scorers)
        self.max_concurrency = int(max_concurrency)
        self.store_arg = store
        self.max_cost = max_cost
        self.timeout_s = timeout_s
        self.batch_size = max(1, int(batch_size))
        self.progress = progress
        self.limiter = limiter
        self.project = project
        self.description = description
        self._sync_fn: Callable[..., Any] | None = None
        self._async_fn: Callable[..., Any] | None = None
        self._pass_config = False
        if pipeline is not None:
            self._bind_pipeline(pipeline)

    def __repr__(self) -> str:
        return f"Evaluation({self.name!r}, dataset={self.dataset.ref!r}, scorers={[s.name for s in self.scorers]})"

    def _bind_pipeline(self, p: Any) -> None:
        if _is_async_callable(p):
            self._async_fn = p
            self._pass_config = _accepts_config(p)
        elif hasattr(p, "invoke") and callable(p.invoke):  # a LangChain Runnable
            self._sync_fn = p.invoke
            self._pass_config = False
        elif callable(p):
            self._sync_fn = p
            self._pass_config = _accepts_config(p)
        else:
            raise ConfigError(
                f"Evaluation({self.name!r}): the pipeline must be callable (or a Runnable), not {type(p).__name__}"
            )

    @property
    def pipeline_ref(self) -> str | None:
        p = self.pipeline
        if p is None:
            return None
        mod = getattr(p, "__module__", None) or type(p).__module__
        qual = getattr(p, "__qualname__", None) or type(p).__qualname__
        return f"{mod}:{qual}"

    def _store(self) -> Store:
        from ragtrail.evals._datasets import _store

        return _store(self.store_arg)

    def _ensure_tracing(self, store: Store) -> None:
        from ragtrail.tracing import collector, get_config, init

        if get_config() is None:
            logger.info("ragtrail: tracing was not initialised; initialising it into %s for this evaluation", store.url)
            init(project=self.project or self.name, store=store)
        c = collector()
        cfg = get_config()
        prov = cfg.provider if cfg is not None else None
        procs = getattr(getattr(prov, "_active_span_processor", None), "_span_processors", None)
        if prov is not None and procs is not None and c not in procs:
            prov.add_span_processor(c)  # a new provider that reused a collected one's id

    def _lineage(self, config: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        scorers = [dict(s.describe()) for s in self.scorers]
        judges = sorted({str(j) for d in scorers
                         for j in (d.get("judge_model"), (d.get("params") or {}).get("judge_model")) if j})  # fmt: skip
        lin = {
            "dataset": {"name": self.dataset.name, "version": self.dataset.version, "n_examples": len(self.dataset)},
            "config": dict(config),
            "config_hash": config_hash(config),
            "git": git_info(),
            "packages": package_versions(),
            "scorers": scorers,
            "judge_models": judges,
            "pipeline": self.pipeline_ref,
            "max_concurrency": self.max_concurrency,
        }
        if extra:
            lin.update(extra)
        return lin

    # ------------------------------------------------------------------------------ public
    def estimate(self, config: Mapping[str, Any] | None = None, *, resume: Any = None) -> CostEstimate:
        """A dry-run cost estimate: no pipeline is called and no run is created.

        The pipeline cost per example comes from the latest run of this evaluation (its mean cost
        per example); scorers that can (LLM judges) estimate their own cost via ``estimate_cost``."""
        store = self._store()
        todo = list(self.dataset.examples)
        if resume is not None:
            run = load_run(store, resume)
            done = {
                r[0]
                for r in store.query(
                    "SELECT example_id FROM run_examples WHERE run_id = ? AND status = 'ok'", (run.run_id,)
                )
            }
            todo = [e for e in todo if e.id not in done]
        per: float | None = None
        basis = "no previous run of this evaluation to estimate the pipeline cost from"
        rows = store.query("SELECT run_id FROM runs WHERE name = ? ORDER BY version DESC LIMIT 1", (self.name,))
        if rows:
            c = store.query(
                "SELECT AVG(cost_usd), COUNT(cost_usd) FROM run_examples WHERE run_id = ? AND cost_usd IS NOT NULL",
                (rows[0][0],),
            )
            if c and c[0][1]:
                per = float(c[0][0])
                basis = f"pipeline cost per example from {load_run(store, rows[0][0]).ref} (mean of {c[0][1]} examples)"
        scorer_cost: float | None = None
        for s in self.scorers:
            est = getattr(s, "estimate_cost", None)
            if callable(est):
                total = 0.0
                for e in todo:
                    v = est(e)
                    if v is not None:
                        total += float(v)
                scorer_cost = (scorer_cost or 0.0) + total
        pipe = per * len(todo) if per is not None else None
        total_usd = None if pipe is None and scorer_cost is None else (pipe or 0.0) + (scorer_cost or 0.0)
        return CostEstimate(len(todo), per, pipe, scorer_cost, total_usd, basis, [s.name for s in self.scorers])

    def run(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        resume: Any = None,
        force: bool = False,
        backend: Any = "local",
        max_cost: float | None = None,
        dry_run: bool = False,
        on_example_scored: Callable[[str, Mapping[str, Score]], str | None] | None = None,
    ) -> Run:
        """Run the evaluation and return the logged :class:`Run` (``rag-qa:v3``).

        ``resume="rag-qa:v3"`` continues that run: only missing or errored examples run again (and
        missing scores are computed from the stored outputs); it refuses when the dataset or config
        changed unless ``force=True``. ``dry_run=True`` returns a :class:`CostEstimate` instead.
        ``on_example_scored(example_id, {scorer: Score})`` is called as each example's scores are
        stored (local backend); when it returns a reason, the run stops like ``max_cost`` (a sweep's
        pruning; by default the hook of the sweep trial running now).
        Safe to call inside a running event loop (Jupyter): the work then runs in a worker thread.
        """
        if backend not in ("local", "ray") and getattr(backend, "name", None) != "ray":
            raise ConfigError(f"backend must be 'local', 'ray' or a RayBackend(...), not {backend!r}")
        if backend != "local":
            try:
                import ray  # noqa: F401
            except ImportError as exc:
                raise MissingDependencyError("backend='ray' needs Ray: pip install 'ragtrail[ray]'") from exc
        if dry_run:
            return self.estimate(config, resume=resume)  # type: ignore[return-value]
        if backend != "local":  # examples spread over Ray tasks (ragtrail/evals/_ray.py)
            from ragtrail.evals._ray import run_on_ray

            return run_on_ray(self, config, resume=resume, force=force, max_cost=max_cost, backend=backend)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.arun(config, resume=resume, force=force, max_cost=max_cost,
                                         on_example_scored=on_example_scored))  # fmt: skip
        box: dict[str, Any] = {}

        def worker() -> None:
            try:
                box["run"] = asyncio.run(self.arun(config, resume=resume, force=force, max_cost=max_cost,
                                                   on_example_scored=on_example_scored))  # fmt: skip
            except BaseException as exc:
                box["exc"] = exc

        t = threading.Thread(target=worker, name="ragtrail-eval", daemon=True)
        t.start()
        t.join()
        if "exc" in box:
            raise box["exc"]
        return box["run"]  # type: ignore[no-any-return]

    async def arun(
        self,
        config: Mapping[str, Any] | None = None,
        *,
        resume: Any = None,
        force: bool = False,
        max_cost: float | None = None,
        on_example_scored: Callable[[str, Mapping[str, Score]], str | None] | None = None,
    ) -> Run:
        """``await ev.arun(...)``: the same as :meth:`run` from async code."""
        if self._sync_fn is None and self._async_fn is None:
            raise ConfigError(
                f"Evaluation({self.name!r}) has no pipeline; use evaluate_traces() to score recorded traces"
            )
        from ragtrail.evals._sweep_trial import current_trial

        trial = current_trial()  # a sweep's trial: linked from the start, reports its running metric
        if on_example_scored is None and trial is not None:
            on_example_scored = trial.on_example_scored
        cfg = dict(config or {})
        store = self._store()
        self._ensure_tracing(store)
        self.dataset.push(store)
        rerun: set[str] = set()
        rescore: dict[str, set[str]] = {}
        if resume is not None:
            run = load_run(store, resume)
            self._check_resume(run, cfg, force)
            todo, rerun, rescore = self._resume_plan(store, run)
            lineage = dict(run.lineage)
            known = {d.get("name") for d in lineage.get("scorers", [])}
            lineage["scorers"] = [
                *lineage.get("scorers", []),
                *(dict(s.describe()) for s in self.scorers if s.name not in known),
            ]
            lineage.setdefault("resumes", []).append({"at": time.time(), "forced": bool(force), "git": git_info()})
            with store.transaction() as cur:
                cur.execute(
                    "UPDATE runs SET status = 'running', finished_at = NULL, lineage = ? WHERE run_id = ?",
                    (_json(lineage), run.run_id),
                )
            run.status = "running"
        else:
            run = create_run(store, self.name, dataset_name=self.dataset.name, dataset_version=self.dataset.version,
                             config=cfg, lineage=self._lineage(cfg, trial.lineage if trial is not None else None),
                             sweep_id=trial.sweep_id if trial is not None else None)  # fmt: skip
            todo = list(self.dataset.examples)
        engine = _Engine(self, store, run, self.scorers, max_cost if max_cost is not None else self.max_cost, cfg,
                         on_example_scored)  # fmt: skip
        status = "finished"
        try:
            await self._drive(engine, todo, rerun, rescore)
            if engine.stop_reason:
                status = "stopped"
        except BaseException:
            status = "interrupted"
            with contextlib.suppress(Exception):
                finish_run(store, run.run_id, status, {"stopped_reason": "interrupted"})
            raise
        extra: dict[str, Any] = {"pipeline_calls": engine.pipeline_calls}
        if engine.stop_reason:
            extra["stopped_reason"] = engine.stop_reason
        if engine.limiter.n_backoffs:
            extra["backoffs"] = engine.limiter.n_backoffs
        finish_run(store, run.run_id, status, extra)
        from ragtrail.tracing import flush

        flush(10.0)
        return load_run(store, run.run_id)

    def _check_resume(self, run: Run, cfg: Mapping[str, Any], force: bool) -> None:
        if run.name != self.name:
            raise EvalError(f"cannot resume {run.ref} as evaluation {self.name!r}: the names differ")
        problems = []
        if run.dataset_name != self.dataset.name or run.dataset_version != self.dataset.version:
            problems.append(f"the dataset changed ({run.dataset_name}:{run.dataset_version} -> {self.dataset.ref})")
        if run.config_hash != config_hash(cfg):
            problems.append(f"the config changed (hash {run.config_hash} -> {config_hash(cfg)})")
        if problems and not force:
            raise EvalError(
                f"refusing to resume {run.ref}: {'; '.join(problems)}. Start a new run, or pass force=True (--force)."
            )
        if problems:
            logger.warning("ragtrail: resuming %s although %s (forced)", run.ref, "; ".join(problems))

    def _resume_plan(self, store: Store, run: Run) -> tuple[list[Example], set[str], dict[str, set[str]]]:
        ex_rows = store.query("SELECT example_id, status FROM run_examples WHERE run_id = ?", (run.run_id,))
        status = {r[0]: r[1] for r in ex_rows}
        have: dict[str, set[str]] = {}
        for e, s, st in store.query(
            "SELECT example_id, scorer, status FROM run_results WHERE run_id = ?", (run.run_id,)
        ):
            if st != "error":
                have.setdefault(e, set()).add(s)
        names = {s.name for s in self.scorers}
        todo: list[Example] = []
        rerun: set[str] = set()
        rescore: dict[str, set[str]] = {}
        for ex in self.dataset.examples:
            st = status.get(ex.id)
            if st is None:
                todo.append(ex)
            elif st != "ok":
                todo.append(ex)
                rerun.add(ex.id)
            else:
                missing = names - have.get(ex.id, set())
                if missing:
                    rescore[ex.id] = missing
        return todo, rerun, rescore

    # ------------------------------------------------------------------------------ driving
    async def _drive(self, engine: _Engine, todo: list[Example], rerun: set[str], rescore: dict[str, set[str]]) -> None:
        total = len(todo) + len(rescore)
        bar = None
        if self.progress and total:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, desc=f"{engine.run.ref}", unit="ex", leave=True)
            except ImportError:  # pragma: no cover
                bar = None
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.max_concurrency + 1, thread_name_prefix="ragtrail-eval"
        )
        loop = asyncio.get_running_loop()
        batch: list[_Done] = []
        batch_lock = asyncio.Lock()

        async def add_to_batch(d: _Done, only: dict[str, set[str]] | None = None) -> None:
            if not engine.batched or not d.ok:
                return
            async with batch_lock:
                batch.append(d)
                if len(batch) >= self.batch_size:
                    items = list(batch)
                    batch.clear()
                else:
                    return
            await loop.run_in_executor(pool, engine.flush_batched, items, only)

        try:
            # 1. examples already run whose scores are missing: score from the stored output and trace
            if rescore:
                done = await loop.run_in_executor(pool, self._rescore_stored, engine, rescore)
                if bar is not None:
                    bar.update(len(done))
                if engine.batched and done:
                    for start in range(0, len(done), self.batch_size):
                        chunk = done[start : start + self.batch_size]
                        await loop.run_in_executor(pool, engine.flush_batched, chunk, rescore)
            # 2. the pipeline over the examples to (re)run
            sem = asyncio.Semaphore(self.max_concurrency)
            tasks: set[asyncio.Task[None]] = set()

            async def one(ex: Example) -> None:
                try:
                    if engine.ev._async_fn is not None:
                        d = await engine.run_async_example(ex, ex.id in rerun, pool)
                    else:
                        d = await engine.run_sync_example(ex, ex.id in rerun, pool)
                    await add_to_batch(d)
                finally:
                    sem.release()
                    if bar is not None:
                        bar.update(1)

            engine.unstarted = len(todo)
            for ex in todo:
                await sem.acquire()
                if engine.stop_reason:
                    sem.release()
                    break
                engine.unstarted -= 1
                t = asyncio.ensure_future(one(ex))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*list(tasks))
            if batch:
                await loop.run_in_executor(pool, engine.flush_batched, list(batch), None)
                batch.clear()
        finally:
            pool.shutdown(wait=True)
            if bar is not None:
                bar.close()

    def _rescore_stored(self, engine: _Engine, rescore: Mapping[str, set[str]]) -> list[_Done]:
        rows = engine.store.query(
            "SELECT example_id, output, trace_id FROM run_examples WHERE run_id = ?", (engine.run.run_id,)
        )
        stored = {r[0]: (json.loads(r[1]) if r[1] else None, r[2]) for r in rows}
        traces = _load_traces(engine.store, [stored[e][1] for e in rescore if e in stored and stored[e][1]])
        out = []
        for ex_id, missing in rescore.items():
            output, tid = stored[ex_id]
            trace = traces.get(tid or "", _EMPTY_TRACE)
            out.append(engine.rescore_example(self.dataset[ex_id], output, trace, tid, missing))
        return out


def _load_traces(store: Store, trace_ids: Sequence[str]) -> dict[str, Trace]:
    from ragtrail.store import SPAN_COLUMNS
    from ragtrail.tracing import flush
    from ragtrail.tracing._model import SpanRecord

    if not trace_ids:
        return {}
    flush(10.0)
    by: dict[str, list[SpanRecord]] = {}
    ids = list(dict.fromkeys(trace_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        sql = f"SELECT {', '.join(SPAN_COLUMNS)} FROM spans WHERE trace_id IN ({', '.join('?' * len(chunk))})"  # noqa: S608
        for r in store.query(sql, chunk):
            s = SpanRecord.from_row(r)
            by.setdefault(s.trace_id, []).append(s)
    return {k: Trace(v) for k, v in by.items()}


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
    from ragtrail.evals._datasets import _store

    st = _store(store)
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
    from ragtrail.evals._datasets import _store

    st = _store(store if store is not None else getattr(run, "store", None))
    src = load_run(st, run)
    ds = src.dataset()
    rows = st.query(
        "SELECT example_id, status, output, error, trace_id, latency_ms, input_tokens, output_tokens, cost_usd "
        "FROM run_examples WHERE run_id = ?",
        (src.run_id,),
    )
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
