"""The eval harness: run a pipeline over a dataset, score each example from its trace, log a run.

Each example runs under its own root span (a new trace) carrying the run and example ids; the spans
of that trace are collected in-process and handed to the scorers as a :class:`Trace`. Results are
committed to the store as each example finishes, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ragtrail._exceptions import ConfigError, EvalError, MissingDependencyError
from ragtrail._log import logger
from ragtrail._store_of import store_of
from ragtrail.evals._aio import run_sync
from ragtrail.evals._concurrency import AdaptiveLimiter
from ragtrail.evals._datasets import Dataset
from ragtrail.evals._engine import (
    _EMPTY_TRACE,
    CostEstimate,
    _accepts_config,
    _Done,
    _Engine,
    _is_async_callable,
    _load_traces,
    _scorer_list,
    score_items,
)
from ragtrail.evals._runs import Run, config_hash, create_run, finish_run, git_info, load_run, package_versions
from ragtrail.evals._types import Example, Score
from ragtrail.store import _evals as repo

if TYPE_CHECKING:
    from ragtrail.store import Store

__all__ = ["CostEstimate", "Evaluation", "score_items"]


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
        return store_of(self.store_arg)

    def _ensure_tracing(self, store: Store) -> None:
        from ragtrail.tracing import collector, get_config, init

        if get_config() is None:
            logger.info("ragtrail: tracing was not initialised; initialising it into %s for this evaluation", store.url)
            init(project=self.project or self.name, store=store)
        collector()  # attached to the active provider once (the provider remembers it)

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
            done = {ex for ex, st in repo.example_statuses(store, run.run_id).items() if st == "ok"}
            todo = [e for e in todo if e.id not in done]
        per: float | None = None
        basis = "no previous run of this evaluation to estimate the pipeline cost from"
        prev_id = repo.latest_run_id(store, self.name)
        if prev_id is not None:
            mean, n = repo.mean_example_cost(store, prev_id)
            if mean is not None:
                per = mean
                basis = f"pipeline cost per example from {load_run(store, prev_id).ref} (mean of {n} examples)"
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
        return run_sync(
            self.arun(config, resume=resume, force=force, max_cost=max_cost, on_example_scored=on_example_scored),
            thread_name="ragtrail-eval",
        )

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
            repo.reopen_run(store, run.run_id, self._resume_lineage(run, force))
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

    def _resume_lineage(self, run: Run, force: bool, **extra: Any) -> dict[str, Any]:
        """The run's lineage with this evaluation's new scorers added and a ``resumes`` entry."""
        lineage = dict(run.lineage)
        known = {d.get("name") for d in lineage.get("scorers", [])}
        lineage["scorers"] = [
            *lineage.get("scorers", []),
            *(dict(s.describe()) for s in self.scorers if s.name not in known),
        ]
        lineage.setdefault("resumes", []).append({"at": time.time(), "forced": bool(force), "git": git_info(), **extra})
        return lineage

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
        status = repo.example_statuses(store, run.run_id)
        have: dict[str, set[str]] = {}
        for e, s, result_status in repo.result_statuses(store, run.run_id):
            if result_status != "error":
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
    async def _drive(self, engine: _Engine, todo: list[Example], rerun: set[str], rescore: dict[str, set[str]],
                     pool: concurrent.futures.ThreadPoolExecutor | None = None) -> None:  # fmt: skip
        """``pool``: threads to run on, kept by the caller (a Ray worker reuses its own across tasks)."""
        total = len(todo) + len(rescore)
        bar = None
        if self.progress and total:
            try:
                from tqdm.auto import tqdm

                bar = tqdm(total=total, desc=f"{engine.run.ref}", unit="ex", leave=True)
            except ImportError:  # pragma: no cover
                bar = None
        own_pool = pool is None
        if pool is None:
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
            if own_pool:
                pool.shutdown(wait=True)
            if bar is not None:
                bar.close()

    def _rescore_stored(self, engine: _Engine, rescore: Mapping[str, set[str]]) -> list[_Done]:
        rows = repo.example_rows(engine.store, engine.run.run_id, list(rescore))
        stored = {r["example_id"]: (json.loads(r["output"]) if r["output"] else None, r["trace_id"]) for r in rows}
        traces = _load_traces(engine.store, [stored[e][1] for e in rescore if e in stored and stored[e][1]])
        out = []
        for ex_id, missing in rescore.items():
            output, tid = stored[ex_id]
            trace = traces.get(tid or "", _EMPTY_TRACE)
            out.append(engine.rescore_example(self.dataset[ex_id], output, trace, tid, missing))
        return out
