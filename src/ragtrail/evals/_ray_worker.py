"""The worker side of the Ray backend (see :mod:`ragtrail.evals._ray`): what runs inside a Ray worker.

One store and one thread pool per worker process (closed ``idle_close_s`` after its last task), the
password put back into the store URL from Ray's object store, and :func:`_run_chunk`, the Ray task:
it looks at what the run already committed for its examples, runs the rest through the harness's
engine and commits each example's results as it finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

from ragtrail._exceptions import EvalError
from ragtrail._log import logger
from ragtrail.store import _evals as repo

if TYPE_CHECKING:
    from ragtrail.evals._harness import Evaluation
    from ragtrail.store import Store


def _with_password(url: str, secret: str) -> str:
    p = urlparse(url)
    user, _, host = p.netloc.rpartition("@")
    return p._replace(netloc=f"{user}:{quote(secret, safe='')}@{host}").geturl()


# One store per URL and one thread pool per Ray worker process, kept across the tasks of a run and
# closed ``idle_close_s`` after the last one (Ray runs one task at a time in a worker process).
_worker: dict[str, Any] = {}
_stores: dict[str, Store] = {}
_worker_lock = threading.Lock()

_AUTH_FAILED = ("password authentication failed", "no password supplied", "authentication failed")


def _open_worker_store(spec: Mapping[str, Any]) -> Store:
    from ragtrail._exceptions import StoreError
    from ragtrail.store import open_store

    url = spec["store"]
    store = _stores.get(url)
    if store is not None:
        return store
    dsn = url
    if spec.get("secret") is not None:
        import ray

        dsn = _with_password(url, ray.get(spec["secret"]))
    try:
        store = open_store(dsn)
    except StoreError as exc:
        if any(w in str(exc).lower() for w in _AUTH_FAILED):
            raise EvalError(
                f"a Ray worker on {socket.gethostname()} could not log in to the PostgreSQL store {url}: "
                "authentication failed. Tasks get the URL without its password: give the workers PGPASSWORD "
                "(ray.init(runtime_env={'env_vars': {'PGPASSWORD': ...}})) or a PGPASSFILE on every node."
            ) from exc
        raise
    _stores[url] = store
    return store


def _thread_pool(n: int) -> Any:
    """This worker process's threads for the pipeline and the commits (not one pool per task)."""
    import concurrent.futures

    with _worker_lock:
        pool = _worker.get("pool")
        if pool is None or _worker.get("pool_size") != n:
            if pool is not None:
                pool.shutdown(wait=False)
            pool = concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="ragtrail-ray")
            _worker.update(pool=pool, pool_size=n)
        return pool


def _task_started() -> None:
    with _worker_lock:
        _worker["active"] = _worker.get("active", 0) + 1
        timer = _worker.pop("timer", None)
    if timer is not None:
        timer.cancel()


def _task_ended(idle_close_s: float) -> None:
    with _worker_lock:
        _worker["active"] = max(0, _worker.get("active", 1) - 1)
        if _worker["active"]:
            return
        timer = threading.Timer(idle_close_s, _close_idle)
        timer.daemon = True
        _worker["timer"] = timer
    timer.start()


def _close_idle() -> None:
    """No task for ``idle_close_s``: close this process's store connections and threads (the next
    task opens them again)."""
    from ragtrail.tracing import flush

    with _worker_lock:
        if _worker.get("active"):
            return
        _worker.pop("timer", None)
        pool = _worker.pop("pool", None)
        _worker.pop("pool_size", None)
        stores = list(_stores.values())
    flush(10.0)
    if pool is not None:
        pool.shutdown(wait=False)
    for st in stores:
        with contextlib.suppress(Exception):
            st.close()


def _worker_setup(spec: Mapping[str, Any]) -> Store:
    """Once per worker process (and again if the store or project changes): trace into the run's store."""
    from ragtrail import tracing
    from ragtrail.tracing import get_config

    for p in spec.get("sys_path") or ():  # appended: never shadows what the worker already imports from
        if p not in sys.path and os.path.isdir(p):
            sys.path.append(p)
    key = (spec["store"], spec["project"], spec.get("otlp_endpoint"), spec.get("trace_to_store"))
    if _worker.get("key") != key or get_config() is None:
        store = _open_worker_store(spec)
        kw: dict[str, Any] = {}
        if spec.get("max_attribute_bytes"):
            kw["max_attribute_bytes"] = spec["max_attribute_bytes"]
        if not spec.get("trace_to_store", True):
            kw["store_exporter"] = False
        if get_config() is not None:
            tracing.shutdown()
        tracing.init(project=spec["project"], store=store, capture_content=spec.get("capture_content", True),
                      otlp_endpoint=spec.get("otlp_endpoint"), **kw)  # fmt: skip
        _worker.update(key=key, store=store, blob_id=None, ev=None)
    for mod, qual in spec.get("connectors") or ():
        try:
            cls = getattr(importlib.import_module(mod), qual)
            if not cls().is_instrumented_by_opentelemetry:
                cls().instrument()
        except Exception as exc:  # tracing never breaks the run; the worker says why once
            if (mod, qual) not in _worker.setdefault("failed_connectors", set()):
                _worker["failed_connectors"].add((mod, qual))
                logger.warning("ragtrail: could not instrument %s.%s on this Ray worker: %s", mod, qual, exc)
    return _worker["store"]  # type: ignore[no-any-return]


def _evaluation(blob: bytes, store: Store) -> Evaluation:
    """The Evaluation a task runs, rebuilt once per worker process and blob (scorers keep their models)."""
    import cloudpickle

    from ragtrail.evals._harness import Evaluation

    bid = hash(blob)
    if _worker.get("blob_id") != bid or _worker.get("ev") is None:
        d = cloudpickle.loads(blob)
        _worker["ev"] = Evaluation(d["name"], d["dataset"], d["pipeline"], d["scorers"],
                                   max_concurrency=d["max_concurrency"], store=store, timeout_s=d["timeout_s"],
                                   batch_size=d["batch_size"], progress=False, project=d["project"])  # fmt: skip
        _worker["blob_id"] = bid
    return _worker["ev"]  # type: ignore[no-any-return]


def _plan(ev: Evaluation, store: Store, run_id: str, ids: Sequence[str]) -> tuple[list[Any], dict[str, set[str]]]:
    """What this task still has to do: examples without a committed row run; examples committed ok
    but missing some scores (a worker died before its batched scorers ran) are scored from the
    stored output. Examples committed as errors in this execution stay as they are."""
    wanted = set(ids)
    status = {e: v for e, v in repo.example_statuses(store, run_id).items() if e in wanted}
    have: dict[str, set[str]] = {}
    for e, s, result_status in repo.result_statuses(store, run_id):
        if e in wanted and result_status != "error":
            have.setdefault(e, set()).add(s)
    names = {s.name for s in ev.scorers}
    todo = []
    rescore: dict[str, set[str]] = {}
    for ex_id in ids:
        st = status.get(ex_id)
        if st is None:
            todo.append(ev.dataset[ex_id])
        elif st == "ok":
            missing = names - have.get(ex_id, set())
            if missing:
                rescore[ex_id] = missing
    return todo, rescore


_ENGINE: list[type] = []


def _engine_class() -> type:
    """The harness engine, reporting to the run's tally and writing each trace before its commit."""
    if _ENGINE:
        return _ENGINE[0]
    from ragtrail.evals._engine import _details_cost, _Engine

    class _RayEngine(_Engine):
        tally: Any = None

        def _report(self, calls: int, spent: float) -> None:
            if self.tally is None:
                return
            try:
                import ray

                ray.get(self.tally.add.remote(calls, spent), timeout=60)
            except Exception as exc:  # the driver then counts from the task reports
                logger.warning("ragtrail: could not report to the run's tally actor: %s", exc)
                self.tally = None

        def _count_call(self) -> None:
            super()._count_call()
            self._report(1, 0.0)

        # every cost the engine adds (``_add_cost``) follows a commit of exactly that cost: it is told to
        # the tally just before the commit, so that a worker dying right after still counted it

        def _commit(self, ex_id: str, row: Any, results: Any, trace_id: str | None,
                    replace_example: bool = False) -> None:  # fmt: skip
            from ragtrail.tracing import flush

            if row is not None and trace_id and not flush(30.0):
                raise EvalError(
                    f"the spans of example {ex_id!r} could not be written out before committing its results "
                    "(see ragtrail.stats()); the example stays uncommitted: resume the run to run it again"
                )
            cost = (float(row[-1] or 0.0) if row is not None else 0.0) + sum(_details_cost(sc) for _n, sc in results)
            if cost:
                self._report(0, cost)
            super()._commit(ex_id, row, results, trace_id, replace_example)

        def _commit_batch(self, rows: Any) -> None:
            cost = sum(_details_cost(sc) for _e, _n, sc, _t in rows)
            if cost:
                self._report(0, cost)
            super()._commit_batch(rows)

    _ENGINE.append(_RayEngine)
    return _RayEngine


def _run_chunk(blob: bytes, spec: Mapping[str, Any], run_id: str, ids: Sequence[str], config: Mapping[str, Any],
               max_cost: float | None) -> dict[str, Any]:  # fmt: skip
    """One Ray task: run the examples ``ids`` of run ``run_id`` that are not committed yet."""
    from ragtrail.evals._runs import load_run
    from ragtrail.tracing import flush

    _task_started()
    try:
        store = _worker_setup(spec)
        ev = _evaluation(blob, store)
        ev._ensure_tracing(store)
        run = load_run(store, run_id)
        todo, rescore = _plan(ev, store, run_id, ids)
        engine = _engine_class()(ev, store, run, ev.scorers, max_cost, config)
        engine.tally = spec.get("tally")
        if todo or rescore:
            asyncio.run(ev._drive(engine, todo, set(), rescore, pool=_thread_pool(ev.max_concurrency + 1)))
        flush(30.0)
    finally:
        _task_ended(float(spec.get("idle_close_s", 2.0)))
    return {
        "pipeline_calls": engine.pipeline_calls,
        "spent": engine.spent,
        "stop_reason": engine.stop_reason,
        "backoffs": engine.limiter.n_backoffs,
        "skipped": len(ids) - len(todo) - len(rescore),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
