"""Ray backend for batch evaluations: ``Evaluation(...).run(backend="ray")``.

The driver creates (or resumes) the run exactly as the local backend does, then hands the examples
to Ray tasks in small chunks (``ray.wait`` over at most ``max_in_flight`` tasks: Ray schedules them,
ragtrail only submits). Each task runs its chunk through the same harness engine as the local
backend, inside a Ray worker process that calls ``ragtrail.init`` into the same store and project,
and commits every example's results as it finishes. Before running anything a task looks at what the
run has already committed for its examples, so a task that Ray retries after its worker died only
runs the examples it had not finished.

Constraints:

* the pipeline and the scorers are sent to the workers with cloudpickle: functions defined in
  ``__main__`` or a notebook travel by value; functions from modules travel by reference, so those
  modules must be importable on the workers (the driver's ``sys.path`` entries that exist on a worker
  are added there; on a multi-machine cluster ship them with ``runtime_env={"working_dir": ...}`` or
  ``py_modules``). Objects holding open connections, locks or loaded GPU models must be created
  lazily inside the pipeline/scorer (most LangChain runnables and ragtrail's scorers already are);
* every worker writes into the store itself: use PostgreSQL (or a SQLite file when every worker
  runs on the driver's machine; ragtrail refuses a SQLite store on a multi-node cluster). Spans can
  go to an OTLP receiver (``ragtrail serve``) instead of the store with
  ``RayBackend(otlp_endpoint=..., trace_to_store=False)``;
* the ragtrail connectors instrumented in the driver (``ragtrail.connectors.langchain.instrument()``…)
  are instrumented in every worker too (with default options);
* ``max_cost`` is checked by each task and by the driver between tasks: spending can overshoot by
  at most the examples in flight. Pipeline calls and spending are counted by a small actor of the
  run (on the driver's node) as they happen, so the work of a task whose worker died still counts;
* the store URL the tasks get has no password: when ragtrail starts Ray, the password goes into the
  job's ``runtime_env`` as ``PGPASSWORD`` (libpq reads it); when you started Ray, ragtrail hands it over
  in Ray's object store unless your job's ``runtime_env`` already sets ``PGPASSWORD``. A ``PGPASSFILE``
  (``~/.pgpass``) on every node works too, with a URL without a password;
* each Ray worker process keeps one store and one thread pool (``max_concurrency + 1`` threads) for
  all the tasks it runs, and closes its store connections ``idle_close_s`` after its last task;
* an example's spans are written out before its results are committed, so a committed example
  always has its trace (when they cannot be written, the task fails and resume runs the example).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlparse

from ragtrail._deps import require
from ragtrail._exceptions import ConfigError, EvalError
from ragtrail._log import logger
from ragtrail.evals._ray_worker import _run_chunk, _with_password  # noqa: F401  (_with_password: re-exported)
from ragtrail.store import _evals as repo

if TYPE_CHECKING:
    from ragtrail.evals._harness import Evaluation
    from ragtrail.evals._runs import Run
    from ragtrail.store import Store

__all__ = ["RayBackend", "run_on_ray"]


@dataclass(frozen=True)
class RayBackend:
    """Options of the Ray backend; ``backend="ray"`` is ``RayBackend()``.

    Args:
        address: the cluster to connect to (``ray://head:10001`` or ``auto``); default
            ``$RAY_ADDRESS``, else a Ray already initialised in this process, else a local Ray
            started for this process. Ignored when Ray is already initialised.
        chunk_size: examples per Ray task (default: about four tasks per CPU, at most 64 each).
        max_in_flight: tasks submitted at once (default: twice the cluster's CPUs).
        max_retries: how often Ray re-runs a task whose worker died (only its unfinished
            examples run again).
        num_cpus: CPUs each task reserves (``num_gpus`` likewise, for GPU pipelines/scorers).
        runtime_env: the job's ``runtime_env`` when ragtrail starts or connects to Ray; when Ray is
            already initialised, set on every task instead (``working_dir``, ``py_modules``, ``pip``,
            ``env_vars``…).
        otlp_endpoint: workers also export their spans to this OTLP endpoint (``ragtrail serve``).
        trace_to_store: workers write their spans into the store (False: OTLP only).
        init_kwargs: more keyword arguments for ``ray.init``.
        idle_close_s: a worker process closes its store connections this many seconds after its
            last task of a run.
    """

    address: str | None = None
    chunk_size: int | None = None
    max_in_flight: int | None = None
    max_retries: int = 3
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    runtime_env: Mapping[str, Any] | None = None
    otlp_endpoint: str | None = None
    trace_to_store: bool = True
    init_kwargs: Mapping[str, Any] = field(default_factory=dict)
    idle_close_s: float = 2.0

    name = "ray"

    def __post_init__(self) -> None:
        for what, v, low in (("chunk_size", self.chunk_size, 1), ("max_in_flight", self.max_in_flight, 1),
                             ("max_retries", self.max_retries, 0)):  # fmt: skip
            if v is not None and (not isinstance(v, int) or v < low):
                raise ConfigError(f"RayBackend({what}={v!r}): must be an integer >= {low}")
        if self.idle_close_s < 0:
            raise ConfigError(f"RayBackend(idle_close_s={self.idle_close_s!r}) must not be negative")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise ConfigError("RayBackend(num_cpus=..., num_gpus=...) must not be negative")


def _coerce(backend: Any) -> RayBackend:
    if isinstance(backend, RayBackend):
        return backend
    if backend == "ray":
        return RayBackend()
    raise ConfigError(f"backend must be 'local', 'ray' or a RayBackend(...), not {backend!r}")


def _store_dsn(store: Store) -> str:
    """The URL a worker opens: PostgreSQL keeps its unredacted DSN privately."""
    return str(getattr(store, "_dsn", None) or store.url)


def _split_password(url: str) -> tuple[str, str | None]:
    """``postgresql://u:pw@h/db`` -> (``postgresql://u@h/db``, ``pw``); a ``password=`` query parameter too."""
    p = urlparse(url)
    if not p.scheme.startswith("postgres"):
        return url, None
    secret = unquote(p.password) if p.password else None
    netloc = p.netloc
    if p.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
    query, qs = p.query, parse_qsl(p.query, keep_blank_values=True)
    kept = [(k, v) for k, v in qs if k != "password"]
    if len(kept) != len(qs):  # rebuilt only then: libpq wants every "=" inside a value percent-encoded
        secret = secret or next(v for k, v in qs if k == "password")
        query = urlencode(kept, safe="", quote_via=quote)
    return p._replace(netloc=netloc, query=query).geturl(), secret


_LOOPBACK = ("localhost", "127.", "::1")


def _is_loopback(url: str) -> bool:
    """A PostgreSQL URL (or an OTLP endpoint) that every node would resolve to itself."""
    p = urlparse(url)
    if p.scheme.startswith("postgres"):
        hosts = [h for k, v in parse_qsl(p.query) if k == "host" for h in v.split(",")] or [p.hostname or ""]
    else:
        hosts = [p.hostname or ""]
    return any(not h or h.startswith("/") or h.lower().startswith(_LOOPBACK) for h in hosts)


def _is_sqlite(store: Store) -> bool:
    return type(store).__name__ == "SQLiteStore"


def _ray_module() -> Any:
    return require("ray", extra="ray", package="Ray")


def _connect(ray: Any, opts: RayBackend, secret: str | None) -> bool:
    """Start or join Ray unless this process already did; True when ragtrail initialised it here
    (its job-level ``runtime_env`` then carries ``opts.runtime_env`` and ``PGPASSWORD``)."""
    if ray.is_initialized():
        return False
    kw: dict[str, Any] = dict(opts.init_kwargs)
    if opts.address or os.environ.get("RAY_ADDRESS"):
        kw.setdefault("address", opts.address or os.environ["RAY_ADDRESS"])
    env = {**dict(opts.runtime_env or {}), **dict(kw.get("runtime_env") or {})}
    if secret is not None:
        env["env_vars"] = {"PGPASSWORD": secret, **dict(env.get("env_vars") or {})}
    if env:
        kw["runtime_env"] = env
    kw.setdefault("log_to_driver", True)
    where = kw.get("address") or "a new local instance"
    logger.info("ragtrail: connecting to Ray (%s)", where)
    try:
        ray.init(**kw)
    except Exception as exc:
        text = str(exc)
        if type(exc).__name__ == "AuthenticationError" or any(
            w in text.lower() for w in ("unauthenticated", "authentication", "auth token")
        ):
            raise EvalError(
                f"Ray at {where} refused this driver: authentication failed ({text.strip()[:300]}). Give this "
                "process the cluster's Ray auth token: RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, or the file "
                "~/.ray/auth_token) as the nodes have it, then run again."
            ) from exc
        hint = ""
        has_token = any(os.environ.get(v) for v in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")) or os.path.exists(
            os.path.expanduser("~/.ray/auth_token")
        )
        if kw.get("address") and not has_token:
            hint = (
                " This process has no Ray auth token: if the cluster uses token authentication, a driver without "
                "it is refused this way; set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token."
            )
        raise EvalError(
            f"could not start or reach Ray ({where}): {exc}. Check RAY_ADDRESS / "
            f"RayBackend(address=...), or call ray.init(...) yourself before running the evaluation.{hint}"
        ) from exc
    return True


class _Tally:
    """A Ray actor per run execution: pipeline calls and spending as the workers report them (so a
    task whose worker died still counts what it ran)."""

    def __init__(self) -> None:
        self.calls = 0
        self.spent = 0.0

    def add(self, calls: int, spent: float) -> None:
        self.calls += int(calls)
        self.spent += float(spent)

    def totals(self) -> tuple[int, float]:
        return self.calls, self.spent


def _start_tally(ray: Any) -> Any:
    """The run's tally actor, on the driver's node (it outlives any worker node); None if Ray cannot start it."""
    try:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = ray.get_runtime_context().get_node_id()
        actor = ray.remote(num_cpus=0, max_restarts=0)(_Tally).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=True)
        ).remote()  # fmt: skip
        ray.get(actor.totals.remote(), timeout=120)
        return actor
    except Exception as exc:  # counts then come from the tasks' own reports (a dead worker's work is missed)
        logger.warning("ragtrail: could not start the run's tally actor on Ray (%s); counting per task", exc)
        return None


# ------------------------------------------------------------------------------------- driver
def run_on_ray(
    ev: Evaluation,
    config: Mapping[str, Any] | None = None,
    *,
    resume: Any = None,
    force: bool = False,
    max_cost: float | None = None,
    backend: Any = "ray",
) -> Run:
    """Run ``ev`` with its examples spread over Ray tasks; returns the logged run (see the module doc)."""
    from ragtrail.evals._runs import create_run, finish_run, load_run

    opts = _coerce(backend)
    if ev._sync_fn is None and ev._async_fn is None:
        raise ConfigError(f"Evaluation({ev.name!r}) has no pipeline; use evaluate_traces() to score recorded traces")
    ray = _ray_module()
    cloudpickle = require("cloudpickle", extra="ray")
    cfg = dict(config or {})
    store = ev._store()
    ev.dataset.push(store)

    # the work, in one blob that every task shares (the pipeline and scorers by cloudpickle)
    try:
        blob = cloudpickle.dumps({
            "name": ev.name, "dataset": ev.dataset, "pipeline": ev.pipeline, "scorers": list(ev.scorers),
            "max_concurrency": ev.max_concurrency, "timeout_s": ev.timeout_s, "batch_size": ev.batch_size,
            "project": ev.project,
        })  # fmt: skip
    except Exception as exc:
        raise ConfigError(
            f"backend='ray': the pipeline or a scorer of Evaluation({ev.name!r}) cannot be pickled for the Ray "
            f"workers ({type(exc).__name__}: {exc}). Create clients, locks and models lazily inside the "
            "pipeline/scorer, or define the pipeline in an importable module."
        ) from exc

    # the tasks get the store URL without its password (see the module doc)
    url, secret = _split_password(_store_dsn(store))
    if secret is None and url.startswith("postgres"):
        secret = os.environ.get("PGPASSWORD") or None  # what libpq used here; the workers need it too
    ours = _connect(ray, opts, secret)
    secret_ref = None
    if secret is not None and not ours:
        job_env = dict((ray.get_runtime_context().runtime_env or {}).get("env_vars") or {})
        if job_env.get("PGPASSWORD") != secret:
            secret_ref = ray.put(secret)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if _is_sqlite(store) and len(nodes) > 1:
        raise ConfigError(
            f"backend='ray' on a cluster of {len(nodes)} nodes cannot share the SQLite store {store.url}: use a "
            "PostgreSQL store (store='postgresql://…') that every worker can reach"
        )
    if len(nodes) > 1:
        for what, where in (("store", url), ("OTLP endpoint", opts.otlp_endpoint)):
            if where and _is_loopback(where):
                logger.warning(
                    "ragtrail: the %s %s is a loopback address, but the Ray cluster has %d nodes: a worker on "
                    "another machine reaches its own machine there. Use an address every node can reach.",
                    what, _split_password(where)[0], len(nodes),
                )  # fmt: skip
    from ragtrail.tracing import get_config

    tcfg = get_config()
    spec = {
        "store": url,
        "secret": secret_ref,
        "idle_close_s": opts.idle_close_s,
        "project": (tcfg.project if tcfg is not None else None) or ev.project or ev.name,
        "capture_content": bool(tcfg.capture_content) if tcfg is not None else True,
        "max_attribute_bytes": tcfg.max_attribute_bytes if tcfg is not None else None,
        "otlp_endpoint": opts.otlp_endpoint,
        "trace_to_store": opts.trace_to_store,
        "sys_path": [p for p in sys.path if p and os.path.isdir(p)],
        "connectors": _instrumented_connectors(),
    }

    # create or resume the run, as the local backend does
    if resume is not None:
        run = load_run(store, resume)
        ev._check_resume(run, cfg, force)
        todo, rerun, rescore = ev._resume_plan(store, run)
        lineage = ev._resume_lineage(run, force, backend="ray")
        # examples that failed before run again from scratch: clear their old rows now, so that a
        # task retried after a worker died can tell "committed in this execution" by presence alone
        repo.reopen_run(store, run.run_id, lineage, clear_examples=rerun)
        want = {e.id for e in todo} | set(rescore)
    else:
        lin = ev._lineage(cfg, {"backend": "ray"})
        run = create_run(store, ev.name, dataset_name=ev.dataset.name, dataset_version=ev.dataset.version,
                         config=cfg, lineage=lin)  # fmt: skip
        want = {e.id for e in ev.dataset.examples}
    ids = [e.id for e in ev.dataset.examples if e.id in want]

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    chunk = opts.chunk_size or max(1, min(64, math.ceil(len(ids) / (4 * cpus))))
    chunks = [ids[i : i + chunk] for i in range(0, len(ids), chunk)]
    in_flight_max = max(1, opts.max_in_flight or 2 * cpus)
    max_cost = max_cost if max_cost is not None else ev.max_cost

    task_opts: dict[str, Any] = {"max_retries": opts.max_retries, "num_cpus": opts.num_cpus,
                                 "num_gpus": opts.num_gpus or None, "name": f"ragtrail-eval:{run.ref}"}  # fmt: skip
    task = ray.remote(_run_chunk).options(**task_opts)
    if opts.runtime_env and not ours:  # Ray was initialised before: the runtime_env goes on every task
        try:
            task = ray.remote(_run_chunk).options(**task_opts, runtime_env=dict(opts.runtime_env))
        except Exception as exc:
            logger.warning(
                "ragtrail: RayBackend(runtime_env=...) cannot apply to the tasks (%s); the workers run in the job's "
                "environment. Pass runtime_env to ray.init(...) instead.", exc,
            )  # fmt: skip
    tally = _start_tally(ray)
    spec["tally"] = tally
    blob_ref = ray.put(blob)
    bar = _bar(ev, run, len(ids))
    pending: dict[Any, list[str]] = {}
    totals = {"pipeline_calls": 0, "backoffs": 0}
    spent = 0.0
    stop_reason: str | None = None
    failure: BaseException | None = None
    status = "finished"
    nxt = 0
    try:
        while nxt < len(chunks) or pending:
            while nxt < len(chunks) and len(pending) < in_flight_max and stop_reason is None and failure is None:
                left = None if max_cost is None else max(0.0, max_cost - spent)
                ref = task.remote(blob_ref, spec, run.run_id, chunks[nxt], cfg, left)
                pending[ref] = chunks[nxt]
                nxt += 1
            if not pending:
                break
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                part = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except Exception as exc:  # the task failed for good (retries exhausted, or a store error)
                    logger.error("ragtrail: a Ray task of %s failed for examples %s…: %s", run.ref, part[:3], exc)
                    failure = failure or exc
                    continue
                totals["pipeline_calls"] += int(res["pipeline_calls"])
                totals["backoffs"] += int(res["backoffs"])
                spent += float(res["spent"])
                if tally is not None:  # what ran, including the work of attempts whose worker died
                    with contextlib.suppress(Exception):
                        totals["pipeline_calls"], spent = ray.get(tally.totals.remote(), timeout=60)
                if res.get("stop_reason") and stop_reason is None:
                    stop_reason = str(res["stop_reason"])
                if max_cost is not None and spent >= max_cost and stop_reason is None:
                    stop_reason = f"max_cost ${max_cost:g} reached (spent ${spent:.4f})"
                if bar is not None:
                    bar.update(len(part))
            if failure is not None or stop_reason is not None:
                nxt = len(chunks)  # submit nothing more; let the tasks in flight commit what they run
        if failure is not None:
            raise EvalError(
                f"backend='ray': a task of {run.ref} failed: {failure}. The examples it committed are kept; "
                f"continue with resume={run.ref!r}."
            ) from failure
        if stop_reason:
            status = "stopped"
            logger.warning("ragtrail: %s; stopped (resume to continue)", stop_reason)
    except BaseException as exc:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        with contextlib.suppress(Exception):
            reason = str(exc) if isinstance(exc, EvalError) else "interrupted"
            finish_run(store, run.run_id, "interrupted", {"stopped_reason": reason, "backend": "ray"})
        raise
    finally:
        if bar is not None:
            bar.close()
        if tally is not None:
            with contextlib.suppress(Exception):
                ray.kill(tally)
    extra: dict[str, Any] = {"pipeline_calls": totals["pipeline_calls"], "backend": "ray", "ray_tasks": len(chunks)}
    if stop_reason:
        extra["stopped_reason"] = stop_reason
    if totals["backoffs"]:
        extra["backoffs"] = totals["backoffs"]
    finish_run(store, run.run_id, status, extra)
    return load_run(store, run.run_id)


def _instrumented_connectors() -> list[tuple[str, str]]:
    """The ragtrail connectors instrumented in this process, so that the workers instrument them too."""
    from ragtrail.tracing import instrumented_connectors

    return instrumented_connectors()


def _bar(ev: Evaluation, run: Run, total: int) -> Any:
    if not ev.progress or not total:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc=f"{run.ref} (ray)", unit="ex", leave=True)
