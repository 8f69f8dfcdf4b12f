"""Sweeps: the W&B sweep file format, driven by Optuna, each trial a versioned run linked to the sweep.

::

    name: rag-qa-sweep
    eval: eval.yaml               # the evaluation each trial runs (ragtrail eval config), or
    # function: my_app.sweeps:evaluate   # evaluate(config: dict) -> Run
    method: bayes                 # grid | random | bayes
    metric: {name: ndcg@10, goal: maximize}   # goal defaults to minimize, as in W&B
    run_cap: 20                   # at most this many trials (count: N works too; the smaller wins)
    seed: 0                       # sampler seed (default: derived from the sweep id)
    early_terminate: {type: hyperband, min_iter: 4, eta: 3}   # stop hopeless trials partway
    upstream: [chunk_size, embedding_model]   # parameters whose work is shared (see sweep_cache)
    parameters:
      chunk_size: {values: [256, 512]}
      embedding_model: {value: all-MiniLM-L6-v2}
      top_k: {min: 3, max: 10}                         # ints: int_uniform
      temperature: {distribution: normal, mu: 0.5, sigma: 0.1}
      lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-1}
      retriever:                                       # nested parameters → config["retriever"]["mmr"]
        parameters:
          mmr: {values: [true, false]}

Each trial's config is the eval file's ``config`` updated with the trial's parameters; the trial
runs as the next version of the evaluation, with ``runs.sweep_id`` set and the trial's record
(number, Optuna's raw params, reported values) in its lineage under ``sweep``. The result names the
best config with the paired-bootstrap CI of its difference from the runner-up (on the same data the
sweep selected on, so read it as optimistic). The file format is in ``_sweep_space``; sampling and
pruning in ``_sweep_optuna``.

:func:`sweep_cache` memoizes the shared upstream work (an index built once per distinct
chunking/embedding config) across trials, thread-safe, keyed by the parameters marked upstream.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragtrail._exceptions import ConfigError, EvalError
from ragtrail._log import logger
from ragtrail.evals._compare import Comparison, compare, load_scores, resolve_run
from ragtrail.evals._sweep_space import SUPPORTED, Param, SweepSpec, load_sweep
from ragtrail.evals._sweep_trial import _CURRENT, _CURRENT_GLOBAL, TrialInfo, _dig, current_trial, sweep_cache
from ragtrail.store import _sweeps as repo

if TYPE_CHECKING:
    import pandas as pd

    from ragtrail.store import Store


# ------------------------------------------------------------------------------------ running
@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    config: dict[str, Any]
    state: Literal["complete", "failed", "pruned"]
    value: float | None = None  # a pruned trial: its running metric when it was stopped
    run_id: str | None = None
    run_ref: str | None = None
    error: str | None = None
    seconds: float = 0.0
    examples: int | None = None  # examples scored (a pruned trial stops short of the dataset)


@dataclass
class SweepResult:
    """A finished sweep: ``trials``, ``best``, ``runner_up`` and their paired ``comparison``."""

    sweep_id: str
    spec: SweepSpec
    trials: list[Trial]
    best: Trial | None
    runner_up: Trial | None
    comparison: Comparison | None

    def to_df(self) -> pd.DataFrame:
        """One row per trial: number, state, value, run, then one column per parameter."""
        import pandas as pd

        rows = []
        for t in self.trials:
            rows.append({"number": t.number, "state": t.state, self.spec.metric: t.value, "run": t.run_ref,
                         "run_id": t.run_id, "examples": t.examples, "seconds": t.seconds, "error": t.error,
                         **t.params})  # fmt: skip
        return pd.DataFrame(rows)

    def summary(self) -> str:
        """What the sweep found, in words."""
        done = [t for t in self.trials if t.state == "complete"]
        pruned = sum(t.state == "pruned" for t in self.trials)
        lines = [f"sweep {self.sweep_id}: {len(done)} of {len(self.trials)} trials completed"
                 + (f", {pruned} pruned" if pruned else "") + f" ({self.spec.method}, {self.spec.goal} {self.spec.metric})"]  # fmt: skip
        if self.best is None:
            return "\n".join([*lines, "no trial completed"])
        lines.append(
            f"best: {self.best.run_ref}  {self.spec.metric} = {self.best.value:.4f}  params {json.dumps(self.best.params, default=str)}"
        )
        if self.runner_up is not None and self.comparison is not None:
            m = self.comparison[self.spec.metric]
            pct = round(self.comparison.confidence * 100)
            lines.append(
                f"runner-up: {self.runner_up.run_ref}  {self.spec.metric} = {self.runner_up.value:.4f}  "
                f"params {json.dumps(self.runner_up.params, default=str)}"
            )
            ci = "—" if m.ci_low is None or math.isnan(m.ci_low) else f"[{m.ci_low:+.4f}, {m.ci_high:+.4f}]"
            verdict = ("the CI excludes 0" if m.ci_low is not None and not math.isnan(m.ci_low)
                       and (m.ci_low > 0 or m.ci_high < 0) else "the CI includes 0: the two are not distinguishable")  # type: ignore[operator]  # fmt: skip
            lines.append(
                f"best − runner-up: {m.delta:+.4f}, {pct}% paired bootstrap CI {ci} over {m.n_pairs} examples; {verdict} "
                "(selected on the same data, so optimistic)"
            )
        return "\n".join(lines)

    def print(self, console: Any = None) -> None:
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        names = [p.name for p in self.spec.params]
        t = Table(title=f"sweep {self.sweep_id} ({self.spec.method}) — {self.spec.goal} {self.spec.metric}")
        for c in ("#", *names, self.spec.metric, "run", "state"):
            t.add_column(c)
        order = sorted(
            self.trials,
            key=lambda x: (
                x.state != "complete",
                x.value is None,
                -(x.value or 0) if self.spec.goal == "maximize" else (x.value or 0),
            ),
        )
        for tr in order:
            mark = " ★" if self.best is not None and tr.number == self.best.number else ""
            t.add_row(str(tr.number), *[json.dumps(tr.params.get(n), default=str) for n in names],
                      "—" if tr.value is None else f"{tr.value:.4f}{mark}", tr.run_ref or "—",
                      _state_text(tr))  # fmt: skip
        console.print(t)
        console.print(self.summary())


def _state_text(t: Trial) -> str:
    if t.state == "complete":
        return "complete"
    if t.state == "pruned":
        return f"[yellow]pruned[/yellow] at {t.examples} examples"
    return f"[red]failed[/red]: {t.error or ''}"[:80]


def _unflatten(flat: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    out = json.loads(json.dumps(base, default=str)) if base else {}
    for k, v in flat.items():
        cur = out
        parts = k.split(".")
        for p in parts[:-1]:
            if not isinstance(cur.get(p), dict):
                cur[p] = {}
            cur = cur[p]
        cur[parts[-1]] = v
    return out


def _metric_value(store: Store, run_id: str, metric: str, source: str) -> tuple[float | None, str | None]:
    scores = load_scores(store, run_id)
    if metric not in scores:
        raise ConfigError(
            f"{source}: metric.name {metric!r} is not a metric of the trial's run; its metrics: "
            f"{', '.join(sorted(scores)) or 'none'}"
        )
    vals = [c.score for c in scores[metric].values() if c.status == "ok" and c.score is not None]
    if vals:
        return float(sum(vals) / len(vals)), None
    reasons = [c.reason for c in scores[metric].values() if c.reason]
    return None, (reasons[0] if reasons else None)


def new_sweep_id() -> str:
    """A fresh sweep id (``sweep_`` and 16 hex digits)."""
    return "sweep_" + uuid.uuid4().hex[:16]


def run_sweep(
    spec: SweepSpec | str | os.PathLike[str] | Mapping[str, Any],
    evaluate: Callable[[dict[str, Any]], Any] | None = None,
    *,
    store: Any = None,
    count: int | None = None,
    on_trial: Callable[[Trial], None] | None = None,
    resume: str | None = None,
    sweep_id: str | None = None,
) -> SweepResult:
    """Run a sweep. ``evaluate(config) -> Run`` runs one trial (default: the sweep's ``eval`` file
    or ``function``); each trial's run gets ``runs.sweep_id``.

    Trial ``n`` is drawn from the seed (the file's ``seed``, else one derived from the sweep id), ``n``
    and the trials before it, so ``resume="sweep_…"`` runs exactly the trials the uninterrupted sweep
    would have run: its trials are replayed into the optimiser from the store (not run again), a
    trial whose run was cut short is finished in place with the harness's resume (an ``eval`` file)
    or marked failed and run again (a ``function``), and the remaining trials run as usual.
    ``sweep_id`` names a new sweep (default: a fresh id).

    With ``early_terminate`` a trial reports the running mean of the metric as its examples are
    scored, and a trial that falls out of the top 1/eta at a band stops there: its run is stored as
    ``pruned`` with the examples it scored.

    Raises ConfigError for an invalid sweep, when the metric is not produced by the runs, or when a
    resumed sweep's trials no longer fit the sweep file. A trial whose evaluation raises is recorded
    as failed and the sweep goes on.
    """
    import optuna

    from ragtrail.evals import _sweep_optuna as so

    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec, count=count)
    elif count is not None:
        spec.count = count
    st, evaluate = _evaluator(spec, evaluate, store)
    sweep_id = resume or sweep_id or new_sweep_id()
    space = so.Space(spec)
    study = so.make_study(spec, sweep_id, _seed(spec, sweep_id))
    trials: list[Trial] = []
    cut: dict[int, tuple[str, str]] = {}  # trial number -> (run id, ref) of its run that was cut short
    if resume:
        cut = _replay(st, spec, resume, space, study, trials)
    remaining = max(0, spec.total - len(study.trials))
    if spec.target is not None and any(t.state == "complete" and _reached(spec, t.value) for t in trials):
        remaining = 0
    resumable = bool(getattr(evaluate, "resumable", False))

    def objective(ot: optuna.Trial) -> float:
        raw = {k: so.suggest(ot, k, d) for k, d in space.dists.items()}
        params = space.decode(raw)
        config = _unflatten(params, spec.config)
        record: dict[str, Any] = {"id": sweep_id, "trial": ot.number, "params": raw}
        reporter = so.Reporter(ot, spec.metric, prune=spec.early_terminate is not None)
        info = TrialInfo(sweep_id, ot.number, dict(params), {u: params[u] for u in spec.upstream},
                         {"sweep": record}, reporter)  # fmt: skip
        token = _CURRENT.set(info)
        _CURRENT_GLOBAL[0] = info
        t0 = time.perf_counter()
        trial = Trial(ot.number, params, config, "failed")
        trials.append(trial)
        try:
            prev = cut.pop(ot.number, None)
            if prev is not None and resumable:
                if _reseed(st, prev[0], spec.metric, reporter):  # it had already fallen out at a band
                    result: Any = prev[0]
                else:
                    result = evaluate(config, resume=prev[1])  # type: ignore[call-arg]
            else:
                if prev is not None:
                    _mark(st, prev[0], f"cut short; trial {ot.number} ran again as a new run", sweep_id, "superseded")
                result = evaluate(config)
            run = resolve_run(st, result)
            trial.run_id, trial.run_ref = run.run_id, run.ref
            trial.examples = _n_examples(st, run.run_id)
            if reporter.pruned_at is not None and run.status in ("stopped", "pruned"):
                trial.state, trial.value = "pruned", reporter.intermediate[reporter.pruned_at]
                trial.error = f"pruned by hyperband at {reporter.pruned_at} examples"
            else:
                value, why = _metric_value(st, run.run_id, spec.metric, spec.source)
                if value is None:
                    trial.error = f"no ok {spec.metric} score in {run.ref}" + (f" (e.g. {why})" if why else "")
                else:
                    trial.value, trial.state = value, "complete"
        except ConfigError:
            raise
        except Exception as exc:  # a failed trial is recorded; the sweep goes on
            trial.error = f"{type(exc).__name__}: {exc}"
            logger.warning("ragtrail sweep %s: trial %d failed: %s", sweep_id, ot.number, trial.error)
        finally:
            _CURRENT.reset(token)
            _CURRENT_GLOBAL[0] = None
            trial.seconds = time.perf_counter() - t0
        record.update(state=trial.state, intermediate=reporter.intermediate, rungs=so.rung_attrs(study, ot.number))
        _finish_trial(st, sweep_id, trial, record)
        if on_trial is not None:
            on_trial(trial)
        if trial.state == "pruned":
            raise optuna.TrialPruned(trial.error)
        if trial.value is None:
            raise _TrialFailed(trial.error or "failed")
        if _reached(spec, trial.value):
            ot.study.stop()
        return trial.value

    if remaining:
        study.optimize(objective, n_trials=remaining, catch=(_TrialFailed,), gc_after_trial=False,
                       show_progress_bar=False)  # fmt: skip
    done = sorted(
        (t for t in trials if t.state == "complete"), key=lambda t: t.value or 0.0, reverse=spec.goal == "maximize"
    )
    best = done[0] if done else None
    runner = next((t for t in done[1:] if t.run_id != best.run_id), None) if best else None
    comparison = None
    if best is not None and runner is not None:
        import warnings

        from ragtrail._exceptions import RagtrailWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RagtrailWarning)
            comparison = compare(st, runner.run_id, best.run_id, metrics=[spec.metric],
                                 directions={spec.metric: "higher" if spec.goal == "maximize" else "lower"})  # fmt: skip
    return SweepResult(sweep_id, spec, trials, best, runner, comparison)


class _TrialFailed(Exception):
    """A trial that produced no value (recorded in the result; Optuna marks it failed)."""


def _reached(spec: SweepSpec, value: float | None) -> bool:
    if spec.target is None or value is None:
        return False
    return value >= spec.target if spec.goal == "maximize" else value <= spec.target


def _seed(spec: SweepSpec, sweep_id: str) -> int:
    """The file's seed, else one derived from the sweep id (so a resumed unseeded sweep draws alike)."""
    import hashlib

    if spec.seed is not None:
        return int(spec.seed) & 0xFFFFFFFFFFFFFFFF
    return int(hashlib.sha256(sweep_id.encode()).hexdigest()[:16], 16)


def _evaluator(
    spec: SweepSpec, evaluate: Callable[[dict[str, Any]], Any] | None, store: Any
) -> tuple[Store, Callable[[dict[str, Any]], Any]]:
    from ragtrail.store import Store, open_store

    if evaluate is not None:
        st = store if isinstance(store, Store) else open_store(store)
        return st, evaluate
    spec.require_target()
    if spec.function:
        from ragtrail.evals._config import import_object

        fn = import_object(spec.function, spec.base_dir, "function")
        st = store if isinstance(store, Store) else open_store(store)
        return st, fn
    from ragtrail.evals._config import build, load_spec

    assert spec.eval_path is not None
    path = Path(spec.eval_path)
    if not path.is_absolute() and spec.base_dir:
        path = Path(spec.base_dir) / path
    es = load_spec(path)
    if store is not None:
        es.store = store.url if isinstance(store, Store) else str(store)
    ev = build(es, path.resolve().parent)
    ev.progress = False
    base_config = dict(es.config)
    spec.config = _deep_merge(base_config, spec.config)
    st = ev._store()

    def run_trial(config: dict[str, Any], resume: str | None = None) -> Any:
        return ev.run(config=config, resume=resume)

    run_trial.resumable = True  # type: ignore[attr-defined]
    return st, run_trial


# ----------------------------------------------------------------- trial records in the store
def _write_record(st: Store, run_id: str, sweep_id: str, record: Mapping[str, Any], status: str | None = None) -> None:
    lin = repo.run_lineage(st, run_id)
    lin["sweep"] = dict(record)
    repo.set_trial_record(st, run_id, sweep_id, lin, status)


def _mark(st: Store, run_id: str, reason: str, sweep_id: str, state: str) -> None:
    """Mark a trial's run ``failed`` (a failed trial, or one ``superseded`` by a new run of the same
    trial), so that no run of a sweep is left ``running``."""
    rec = dict(repo.run_lineage(st, run_id).get("sweep") or {})
    rec["state"] = state
    _write_record(st, run_id, sweep_id, rec, "failed")
    repo.add_stop_reason(st, run_id, reason)


def _finish_trial(st: Store, sweep_id: str, trial: Trial, record: dict[str, Any]) -> None:
    """Store the trial's final record with its run (pruned: status ``pruned``). A failed trial's run
    (found by its trial number when the evaluation raised) keeps its status if it finished, and is
    marked ``failed`` if the harness left it unfinished."""
    if trial.run_id is not None:
        _write_record(st, trial.run_id, sweep_id, record, "pruned" if trial.state == "pruned" else None)
        return
    for run_id, lin, status in repo.sweep_run_states(st, sweep_id):
        rec = lin.get("sweep") or {}
        if rec.get("trial") == trial.number and rec.get("state") is None:
            trial.run_id = run_id
            _write_record(st, run_id, sweep_id, record)
            if status in ("running", "interrupted"):
                _mark(st, run_id, trial.error or "failed", sweep_id, "failed")


def _n_examples(st: Store, run_id: str) -> int:
    return repo.count_examples(st, run_id)


def _reseed(st: Store, run_id: str, metric: str, reporter: Any) -> bool:
    """Report again the examples a cut-short run scored (in the order they were stored); True when
    the pruner stops it there, in which case the run is finished as ``pruned``."""
    from ragtrail.evals._runs import finish_run

    for ex_id, score, status in repo.scored_results(st, run_id, metric):
        why = reporter.add(ex_id, score if status == "ok" else None)
        if why:
            finish_run(st, run_id, "pruned", {"stopped_reason": why})
            return True
    return False


def _misfit(spec: SweepSpec, params: Mapping[str, Any], decoded: Mapping[str, Any] | None) -> Param:
    """The first parameter whose stored value the sweep file no longer produces."""
    from ragtrail.evals._sweep_space import _canon

    for p in spec.params:
        v = params.get(p.name)
        if p.distribution in ("constant", "categorical") or (spec.method == "grid"):
            allowed = p.values if spec.method != "grid" else p.grid_values(p.name)
            if _canon(v) not in {_canon(a) for a in allowed}:
                return p
        elif (p.distribution in ("int_uniform", "uniform", "log_uniform_values", "int_log_uniform_values")
              and isinstance(v, (int, float)) and not p.low <= v <= p.high):  # type: ignore[operator]  # fmt: skip
            return p
        if decoded is not None and _canon(decoded.get(p.name)) != _canon(v):
            return p
    return spec.params[0]


def _replay(st: Store, spec: SweepSpec, sweep_id: str, space: Any, study: Any, trials: list[Trial]) -> dict[int, tuple[str, str]]:  # fmt: skip
    """Put the trials of ``sweep_id`` back into ``study`` and ``trials``, in trial order; returns the
    run that was cut short (``{trial number: (run id, ref)}``), which the resumed sweep continues."""
    from ragtrail.evals import _sweep_optuna as so
    from ragtrail.evals._sweep_space import _canon

    rows = repo.sweep_trial_rows(st, sweep_id)
    if not rows:
        raise EvalError(
            f"cannot resume sweep {sweep_id!r}: the store {st.url} has no runs of it (the id is printed when a "
            "sweep starts, and `ragtrail runs list` shows it)"
        )
    by_number: dict[int, tuple[Any, ...]] = {}
    for run_id, name, version, config, status, lin in rows:
        ref = f"{name}:v{version}"
        rec: dict[str, Any] = lin["sweep"] if isinstance(lin.get("sweep"), dict) else {}
        if rec.get("state") == "superseded":
            continue
        params: dict[str, Any] = {}
        for p in spec.params:
            try:
                params[p.name] = _dig(config, p.name)
            except KeyError:
                raise ConfigError(
                    f"{spec.source}: cannot resume {sweep_id}: its trial run {ref} has no parameter {p.name!r}; "
                    "the sweep file changed since, so start a new sweep"
                ) from None
        raw = rec.get("params") if isinstance(rec.get("params"), dict) else space.encode(params)
        fits = raw is not None and all(k in raw for k in space.dists)
        if fits:
            try:
                fits = {k: _canon(v) for k, v in space.decode(raw).items()} == {k: _canon(v) for k, v in params.items()}
            except (IndexError, KeyError, TypeError, ValueError):
                fits = False
        if not fits:
            bad = _misfit(
                spec, params, space.decode(raw) if raw is not None and all(k in raw for k in space.dists) else None
            )
            raise ConfigError(
                f"{spec.source}: cannot resume {sweep_id}: its trial run {ref} has {bad.name}={params.get(bad.name)!r}, "
                f"which parameters.{bad.name} no longer allows (or draws differently); start a new sweep"
            )
        n = int(rec["trial"]) if isinstance(rec.get("trial"), int) else len(by_number)
        by_number[n] = (run_id, ref, status, rec, raw, params, config)
    last = max(by_number)
    cut: dict[int, tuple[str, str]] = {}
    for n in range(last + 1):
        if n not in by_number:  # a trial that failed before its run existed
            so.replay(study, space, {"__grid__": n} if spec.method == "grid" else None, "failed", None)
            trials.append(Trial(n, {}, {}, "failed", error="failed before its run was created"))
            continue
        run_id, ref, status, rec, raw, params, config = by_number[n]
        state = rec.get("state")
        if state is None:
            if status in ("running", "interrupted", "stopped") and n == last:
                cut[n] = (run_id, ref)  # finished in place (or run again) by the resumed sweep
                continue
            state = {"pruned": "pruned", "failed": "failed"}.get(status, "complete")
        trial = Trial(n, params, config, "failed", run_id=run_id, run_ref=ref, examples=_n_examples(st, run_id))
        inter = {int(k): float(v) for k, v in (rec.get("intermediate") or {}).items()}
        value = None
        if state == "complete":
            value, why = _metric_value(st, run_id, spec.metric, spec.source)
            if value is None:
                state, trial.error = "failed", f"no ok {spec.metric} score in {ref}" + (f" (e.g. {why})" if why else "")
        elif state == "pruned":
            trial.value = inter[max(inter)] if inter else None
        if state == "complete":
            trial.value, trial.state = value, "complete"
        elif state == "pruned":
            trial.state = "pruned"
        so.replay(study, space, raw, state, value, inter, rec.get("rungs"))
        trials.append(trial)
    return cut


def _deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), Mapping) and isinstance(v, Mapping) else v
    return out


def sweep_runs_df(store: Store, sweep_id: str) -> pd.DataFrame:
    """The runs of a sweep (oldest first): run, run_id, status (``pruned`` for a trial stopped at a
    band), config, then one column per metric mean."""
    import pandas as pd

    rows = repo.sweep_runs(store, sweep_id)
    if not rows:
        raise EvalError(f"no runs for sweep {sweep_id!r} in the store {store.url}")
    out = []
    for rid, name, version, cfg, status in rows:
        rec: dict[str, Any] = {"run": f"{name}:v{version}", "run_id": rid, "status": status, "config": cfg}
        for m, cells in load_scores(store, rid).items():
            vals = [c.score for c in cells.values() if c.status == "ok" and c.score is not None]
            rec[m] = sum(vals) / len(vals) if vals else None
        out.append(rec)
    return pd.DataFrame(out)


def iter_grid(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """The configs a grid sweep will run, in order (for ``--dry-run``)."""
    for flat in spec.grid()[: spec.total]:
        yield _unflatten(flat, spec.config)


def planned_configs(spec: SweepSpec, n: int, sweep_id: str | None = None) -> list[dict[str, Any]]:
    """The first ``n`` configs a grid or random sweep runs (they do not depend on results; a bayes
    sweep's do after its start-up trials). Unseeded, the draws depend on ``sweep_id``."""
    from ragtrail.evals import _sweep_optuna as so

    return [_unflatten(flat, spec.config) for flat in so.draw(spec, n, _seed(spec, sweep_id or "draw"))]


__all__ = [
    "SUPPORTED",
    "Param",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "TrialInfo",
    "current_trial",
    "iter_grid",
    "load_sweep",
    "new_sweep_id",
    "planned_configs",
    "run_sweep",
    "sweep_cache",
    "sweep_runs_df",
]
