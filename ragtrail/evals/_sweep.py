"""Sweeps: the W&B sweep file format, driven by Optuna, each trial a versioned run linked to the sweep.

::

    name: rag-qa-sweep
    eval: eval.yaml               # the evaluation each trial runs (ragtrail eval config), or
    # function: my_app.sweeps:evaluate   # evaluate(config: dict) -> Run
    method: bayes                 # grid | random | bayes (Optuna GridSampler / RandomSampler / TPESampler)
    metric: {name: ndcg@10, goal: maximize}
    count: 20                     # trials for random/bayes (W&B's run_cap works too); grid: all points
    seed: 0                       # sampler seed (reproducible sweeps)
    upstream: [chunk_size, embedding_model]   # parameters whose work is shared (see sweep_cache)
    parameters:
      chunk_size: {values: [256, 512]}
      embedding_model: {value: all-MiniLM-L6-v2}
      top_k: {min: 3, max: 10}                         # ints: int_uniform
      temperature: {distribution: uniform, min: 0.0, max: 1.0}
      lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-1}
      retriever:                                       # nested parameters → config["retriever"]["mmr"]
        parameters:
          mmr: {values: [true, false]}

Each trial's config is the eval file's ``config`` updated with the trial's parameters; the trial
runs as the next version of the evaluation, with ``runs.sweep_id`` set. The result names the best
config with the paired-bootstrap CI of its difference from the runner-up (on the same data the
sweep selected on, so read it as optimistic).

:func:`sweep_cache` memoizes the shared upstream work (an index built once per distinct
chunking/embedding config) across trials, thread-safe, keyed by the parameters marked upstream.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import itertools
import json
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ragtrail._deps import require
from ragtrail._exceptions import ConfigError, EvalError
from ragtrail._log import logger
from ragtrail.evals._compare import Comparison, compare, load_scores, resolve_run

if TYPE_CHECKING:
    import pandas as pd

    from ragtrail.store import Store

METHODS = ("grid", "random", "bayes")
SUPPORTED = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform", "log_uniform_values",
             "int_log_uniform_values")  # fmt: skip
# W&B distributions that Optuna's samplers cannot draw (no normal/beta priors, no quantised log scale)
UNSUPPORTED = ("q_log_uniform", "q_log_uniform_values", "inv_log_uniform", "inv_log_uniform_values", "normal",
               "q_normal", "log_normal", "q_log_normal", "beta", "q_beta")  # fmt: skip
_IGNORED_KEYS = ("program", "command", "project", "entity", "description", "early_terminate", "controller")
_GRID_MAX = 100_000


@dataclass(frozen=True)
class Param:
    """One swept parameter (``name`` is dotted for nested parameters)."""

    name: str
    distribution: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    q: float | None = None
    upstream: bool = False

    def grid_values(self, where: str) -> list[Any]:
        if self.distribution in ("constant", "categorical"):
            return list(self.values)
        if self.distribution == "int_uniform":
            assert self.low is not None and self.high is not None
            return list(range(int(self.low), int(self.high) + 1))
        if self.distribution == "q_uniform" and self.q:
            assert self.low is not None and self.high is not None
            n = math.floor((self.high - self.low) / self.q + 1e-9) + 1
            return [round(self.low + i * self.q, 12) for i in range(n)]
        raise ConfigError(
            f"{where}: grid search needs discrete values, but this parameter has distribution {self.distribution}; "
            "give values: [...] (or int_uniform / q_uniform), or use method random or bayes"
        )


@dataclass
class SweepSpec:
    """A validated sweep file."""

    method: Literal["grid", "random", "bayes"]
    metric: str
    goal: Literal["maximize", "minimize"]
    params: list[Param]
    count: int | None = None
    name: str | None = None
    seed: int | None = None
    target: float | None = None
    eval_path: str | None = None
    function: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    upstream: list[str] = field(default_factory=list)
    source: str = "sweep"
    base_dir: str | None = None

    def grid(self) -> list[dict[str, Any]]:
        """Every grid point as flat ``{dotted name: value}`` (grid method)."""
        names = [p.name for p in self.params]
        lists = [p.grid_values(f"{self.source}: parameters.{p.name}") for p in self.params]
        size = math.prod(len(v) for v in lists)
        if size > _GRID_MAX:
            raise ConfigError(f"{self.source}: the grid has {size} points (more than {_GRID_MAX}); use random or bayes")
        return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*lists)]


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where}: must be a number, not {v!r}")
    if not math.isfinite(float(v)):
        raise ConfigError(f"{where}: must be finite, not {v!r}")
    return float(v)


def _parse_param(name: str, d: Any, where: str, out: list[Param]) -> None:
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where}: a parameter is a mapping with values, value, or distribution/min/max, not {d!r}")
    d = dict(d)
    if "parameters" in d:  # nested parameters (W&B): config[name][child]
        nested = d.pop("parameters")
        if d:
            raise ConfigError(f"{where}: a nested parameter has only 'parameters', not {', '.join(map(str, d))}")
        if not isinstance(nested, Mapping) or not nested:
            raise ConfigError(f"{where}.parameters: must be a non-empty mapping")
        for k, v in nested.items():
            _parse_param(f"{name}.{k}", v, f"{where}.parameters.{k}", out)
        return
    upstream = bool(d.pop("upstream", False))
    dist = d.pop("distribution", None)
    if "probabilities" in d:
        raise ConfigError(f"{where}.probabilities: weighted values are not supported by the Optuna samplers; remove it")
    if dist is None:
        if "values" in d:
            dist = "categorical"
        elif "value" in d:
            dist = "constant"
        elif "min" in d and "max" in d:
            both_int = all(isinstance(d[k], int) and not isinstance(d[k], bool) for k in ("min", "max"))
            dist = "int_uniform" if both_int else "uniform"
        else:
            raise ConfigError(f"{where}: give values: [...], value: x, or min and max (with an optional distribution)")
    if not isinstance(dist, str):
        raise ConfigError(f"{where}.distribution: must be a string, not {dist!r}")
    if dist in UNSUPPORTED:
        raise ConfigError(
            f"{where}.distribution: {dist!r} is a W&B distribution that Optuna's samplers cannot draw; "
            f"use one of {', '.join(SUPPORTED)}"
        )
    if dist not in SUPPORTED:
        raise ConfigError(f"{where}.distribution: unknown distribution {dist!r}; use one of {', '.join(SUPPORTED)}")
    if dist == "categorical":
        vals = d.pop("values", None)
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"{where}.values: must be a non-empty list, not {vals!r}")
        p = Param(name, dist, tuple(vals), upstream=upstream)
    elif dist == "constant":
        if "value" not in d:
            raise ConfigError(f"{where}.value: a constant parameter needs value")
        p = Param(name, dist, (d.pop("value"),), upstream=upstream)
    else:
        for k in ("min", "max"):
            if k not in d:
                raise ConfigError(f"{where}.{k}: distribution {dist} needs min and max")
        lo, hi = _num(d.pop("min"), f"{where}.min"), _num(d.pop("max"), f"{where}.max")
        if lo > hi:
            raise ConfigError(f"{where}: min ({lo:g}) is greater than max ({hi:g})")
        q = None
        if dist == "q_uniform":
            q = _num(d.pop("q", 1.0), f"{where}.q")
            if q <= 0:
                raise ConfigError(f"{where}.q: must be > 0, not {q:g}")
        if dist in ("int_uniform", "int_log_uniform_values"):
            for k, v in (("min", lo), ("max", hi)):
                if v != int(v):
                    raise ConfigError(f"{where}.{k}: {dist} needs integers, not {v:g}")
        if dist in ("log_uniform_values", "int_log_uniform_values") and lo <= 0:
            raise ConfigError(f"{where}.min: {dist} needs min > 0 (the values themselves), not {lo:g}")
        if dist == "log_uniform":  # W&B: min/max are natural-log exponents
            lo, hi = math.exp(lo), math.exp(hi)
        p = Param(name, dist, (), lo, hi, q, upstream)
    if d:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, d))} for distribution {dist}")
    out.append(p)


def load_sweep(source: str | os.PathLike[str] | Mapping[str, Any], *, count: int | None = None) -> SweepSpec:
    """Parse and validate a sweep (a YAML path or a mapping); errors name the field."""
    base_dir = None
    label = "sweep"
    if isinstance(source, Mapping):
        data: Any = dict(source)
    else:
        import yaml

        path = Path(source)
        label = str(source)
        base_dir = str(path.resolve().parent)
        if not path.is_file():
            raise ConfigError(f"sweep file {label!r} not found")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            loc = f":{mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{label}{loc}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"{label}: a sweep file is a mapping with method, metric and parameters")
        data = dict(data)
    method = data.pop("method", None)
    if method not in METHODS:
        raise ConfigError(f"{label}: method must be one of {', '.join(METHODS)}, not {method!r}")
    metric = data.pop("metric", None)
    if not isinstance(metric, Mapping) or not isinstance(metric.get("name"), str) or not metric.get("name"):
        raise ConfigError(f"{label}: metric: give {{name: <metric>, goal: maximize|minimize}}, not {metric!r}")
    metric = dict(metric)
    goal = metric.pop("goal", "maximize")
    if goal not in ("maximize", "minimize"):
        raise ConfigError(f"{label}: metric.goal must be maximize or minimize, not {goal!r}")
    mname = metric.pop("name")
    target = metric.pop("target", None)
    if target is not None:
        target = _num(target, f"{label}: metric.target")
    if metric:
        raise ConfigError(f"{label}: metric: unknown key(s) {', '.join(map(str, metric))}; use name, goal, target")
    params_raw = data.pop("parameters", None)
    if not isinstance(params_raw, Mapping) or not params_raw:
        raise ConfigError(
            f"{label}: parameters must be a non-empty mapping of parameter name to its values/distribution"
        )
    params: list[Param] = []
    for k, v in params_raw.items():
        _parse_param(str(k), v, f"{label}: parameters.{k}", params)
    upstream = data.pop("upstream", []) or []
    if not isinstance(upstream, list) or not all(isinstance(u, str) for u in upstream):
        raise ConfigError(f"{label}: upstream must be a list of parameter names")
    names = {p.name for p in params}
    for u in upstream:
        if u not in names:
            raise ConfigError(f"{label}: upstream: {u!r} is not a parameter (parameters: {', '.join(sorted(names))})")
    upstream = list(dict.fromkeys([*upstream, *(p.name for p in params if p.upstream)]))
    n = data.pop("count", None)
    cap = data.pop("run_cap", None)
    n = count if count is not None else (n if n is not None else cap)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"{label}: count must be a positive integer, not {n!r}")
    if method != "grid" and n is None:
        raise ConfigError(f"{label}: count (or run_cap): how many trials a {method} sweep runs")
    seed = data.pop("seed", None)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"{label}: seed must be an integer, not {seed!r}")
    eval_path, function = data.pop("eval", None), data.pop("function", None)
    config = data.pop("config", {}) or {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"{label}: config must be a mapping")
    name = data.pop("name", None)
    for k in _IGNORED_KEYS:
        if k in data:
            data.pop(k)
            logger.info("ragtrail sweep %s: W&B key %r is not used by ragtrail", label, k)
    if data:
        raise ConfigError(
            f"{label}: unknown key(s) {', '.join(map(str, data))}; a sweep has method, metric, parameters, count, "
            "seed, upstream, eval or function, config, name"
        )
    spec = SweepSpec(method, mname, goal, params, n, name, seed, target, eval_path, function, dict(config),
                     upstream, label, base_dir)  # fmt: skip
    if method == "grid":
        spec.grid()  # validates that every parameter is discrete
    return spec


# ------------------------------------------------------------------------------- trial context
@dataclass(frozen=True)
class TrialInfo:
    """The trial running now (``current_trial()``): its number, flat params, the sweep's id and
    its upstream parameter values (the key of shared work)."""

    sweep_id: str
    number: int
    params: Mapping[str, Any]
    upstream: Mapping[str, Any]


_CURRENT: contextvars.ContextVar[TrialInfo | None] = contextvars.ContextVar("ragtrail_sweep_trial", default=None)
_CURRENT_GLOBAL: list[TrialInfo | None] = [None]  # visible from the harness's worker threads too


def current_trial() -> TrialInfo | None:
    """The sweep trial running now, or None outside a sweep."""
    return _CURRENT.get() or _CURRENT_GLOBAL[0]


def _freeze(v: Any) -> Any:
    try:
        hash(v)
        return v
    except TypeError:
        return json.dumps(v, sort_keys=True, default=str)


def _dig(config: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = config
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


class _Cached:
    """A memoized callable (what :func:`sweep_cache` returns)."""

    def __init__(self, fn: Callable[..., Any], keys: Sequence[str] | None) -> None:
        functools.update_wrapper(self, fn)
        self._fn = fn
        self._keys = list(keys) if keys is not None else None
        self._sig = inspect.signature(fn)
        self._values: dict[Any, Any] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        bound = self._sig.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        single = next(iter(arguments.values())) if len(arguments) == 1 else None
        keys = self._keys
        if keys is None:
            trial = current_trial()
            if isinstance(single, Mapping) and trial is not None and trial.upstream:
                keys = list(trial.upstream)  # f(config): the sweep's upstream parameters
            else:
                return tuple((k, _freeze(v)) for k, v in arguments.items())
        out = []
        for k in keys:
            if k in arguments:
                out.append((k, _freeze(arguments[k])))
            elif isinstance(single, Mapping):
                try:
                    out.append((k, _freeze(_dig(single, k))))
                except KeyError:
                    raise ConfigError(
                        f"sweep_cache({self._fn.__qualname__}): the config has no upstream key {k!r}"
                    ) from None
            else:
                raise ConfigError(
                    f"sweep_cache({self._fn.__qualname__}): {k!r} is neither an argument nor a config key"
                )
        return tuple(out)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        key = self._key(args, kwargs)
        with self._lock:
            if key in self._values:
                self.hits += 1
                return self._values[key]
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one build per key, even when trials' examples call it concurrently
            with self._lock:
                if key in self._values:
                    self.hits += 1
                    return self._values[key]
            value = self._fn(*args, **kwargs)
            with self._lock:
                self._values[key] = value
                self.misses += 1
            return value

    def cache_info(self) -> dict[str, int]:
        """``{"hits", "builds", "size"}``."""
        with self._lock:
            return {"hits": self.hits, "builds": self.misses, "size": len(self._values)}

    def cache_clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._locks.clear()
            self.hits = self.misses = 0


def sweep_cache(fn: Callable[..., Any] | None = None, *, keys: Sequence[str] | None = None) -> Any:
    """Memoize shared upstream work across sweep trials (and across a trial's examples).

    ``keys`` names the upstream parameters: arguments of ``fn`` or (dotted) keys of its single
    config argument. Without ``keys``, a function of one config mapping is keyed by the sweep
    file's ``upstream`` parameters; any other function by all its arguments::

        @sweep_cache(keys=["chunk_size", "embedding_model"])
        def build_index(chunk_size, embedding_model): ...   # built once per distinct pair

        @sweep_cache                      # upstream: [chunk_size, embedding_model] in sweep.yaml
        def index_for(config): ...

    The wrapper has ``cache_info()`` (hits, builds, size) and ``cache_clear()``; builds of one key
    are serialised, so concurrent examples never build the same index twice.
    """
    if fn is None:
        return lambda f: _Cached(f, keys)
    return _Cached(fn, keys)


# ------------------------------------------------------------------------------------ running
@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    config: dict[str, Any]
    state: Literal["complete", "failed"]
    value: float | None = None
    run_id: str | None = None
    run_ref: str | None = None
    error: str | None = None
    seconds: float = 0.0


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
        require("pandas", extra="analysis", feature="SweepResult.to_df()")
        import pandas as pd

        rows = []
        for t in self.trials:
            rows.append({"number": t.number, "state": t.state, self.spec.metric: t.value, "run": t.run_ref,
                         "run_id": t.run_id, "seconds": t.seconds, "error": t.error, **t.params})  # fmt: skip
        return pd.DataFrame(rows)

    def summary(self) -> str:
        """What the sweep found, in words."""
        done = [t for t in self.trials if t.state == "complete"]
        lines = [f"sweep {self.sweep_id}: {len(done)} of {len(self.trials)} trials completed ({self.spec.method}, "
                 f"{self.spec.goal} {self.spec.metric})"]  # fmt: skip
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
            key=lambda x: (x.value is None, -(x.value or 0) if self.spec.goal == "maximize" else (x.value or 0)),
        )
        for tr in order:
            mark = " ★" if self.best is not None and tr.number == self.best.number else ""
            t.add_row(str(tr.number), *[json.dumps(tr.params.get(n), default=str) for n in names],
                      "—" if tr.value is None else f"{tr.value:.4f}{mark}", tr.run_ref or "—",
                      tr.state if tr.state == "complete" else f"[red]failed[/red]: {tr.error or ''}"[:80])  # fmt: skip
        console.print(t)
        console.print(self.summary())


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


def _is_primitive(vals: Sequence[Any]) -> bool:
    return all(v is None or isinstance(v, (bool, int, float, str)) for v in vals)


def _distributions(spec: SweepSpec) -> tuple[dict[str, Any], dict[str, Callable[[Any], Any]]]:
    """Optuna distributions for the non-constant parameters, and decoders back to values."""
    require("optuna", extra="evals", feature="sweeps")
    import optuna.distributions as od

    dists: dict[str, Any] = {}
    decode: dict[str, Callable[[Any], Any]] = {}
    for p in spec.params:
        if p.distribution == "constant":
            continue
        if p.distribution == "categorical" or (spec.method == "grid"):
            vals = p.grid_values(f"{spec.source}: parameters.{p.name}") if spec.method == "grid" else list(p.values)
            if _is_primitive(vals):
                dists[p.name] = od.CategoricalDistribution(vals)
                decode[p.name] = lambda v: v
            else:
                dists[p.name] = od.CategoricalDistribution(list(range(len(vals))))
                decode[p.name] = lambda i, vals=vals: vals[int(i)]  # type: ignore[misc]
            continue
        assert p.low is not None and p.high is not None
        if p.distribution == "int_uniform":
            dists[p.name] = od.IntDistribution(int(p.low), int(p.high))
            decode[p.name] = int
        elif p.distribution == "int_log_uniform_values":
            dists[p.name] = od.IntDistribution(int(p.low), int(p.high), log=True)
            decode[p.name] = int
        elif p.distribution == "uniform":
            dists[p.name] = od.FloatDistribution(p.low, p.high)
            decode[p.name] = float
        elif p.distribution == "q_uniform":
            high = p.low + math.floor((p.high - p.low) / (p.q or 1.0) + 1e-9) * (p.q or 1.0)
            dists[p.name] = od.FloatDistribution(p.low, high, step=p.q)
            decode[p.name] = float
        else:  # log_uniform (exponents converted) / log_uniform_values
            dists[p.name] = od.FloatDistribution(p.low, p.high, log=True)
            decode[p.name] = float
    return dists, decode


def _sampler(spec: SweepSpec, dists: Mapping[str, Any]) -> Any:
    require("optuna", extra="evals", feature="sweeps")
    import optuna

    if spec.method == "grid":
        space = {k: list(d.choices) for k, d in dists.items()}
        return (
            optuna.samplers.GridSampler(space, seed=spec.seed)
            if space
            else optuna.samplers.RandomSampler(seed=spec.seed)
        )
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=spec.seed)
    return optuna.samplers.TPESampler(seed=spec.seed, n_startup_trials=min(10, max(2, (spec.count or 10) // 3)))


class _TrialFailed(Exception):
    """A trial that produced no value (recorded in the result; Optuna marks it failed)."""


def _suggest(trial: Any, name: str, dist: Any) -> Any:
    require("optuna", extra="evals", feature="sweeps")
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, od.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)


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

    ``resume="sweep_…"`` continues an interrupted sweep: its finished trials are replayed into the
    optimiser from the store (not run again) and count towards ``count``; a trial whose run was cut
    short is continued with the harness's own resume when the sweep runs an ``eval`` file (only its
    missing examples run), else run again; the remaining trials run as usual. ``sweep_id`` names a
    new sweep (default: a fresh id).

    Raises ConfigError for an invalid sweep, when the metric is not produced by the runs, or when a
    resumed sweep's trials no longer fit the sweep file. A trial whose evaluation raises is recorded
    as failed and the sweep goes on.
    """
    require("optuna", extra="evals", feature="sweeps")
    import optuna

    if not isinstance(spec, SweepSpec):
        spec = load_sweep(spec, count=count)
    elif count is not None:
        spec.count = count
    st, evaluate = _evaluator(spec, evaluate, store)
    sweep_id = resume or sweep_id or new_sweep_id()
    dists, decode = _distributions(spec)
    constants = {p.name: p.values[0] for p in spec.params if p.distribution == "constant"}
    n_trials = len(spec.grid()) if spec.method == "grid" else int(spec.count or 0)
    if spec.method == "grid" and spec.count is not None:
        n_trials = min(n_trials, spec.count)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported by ragtrail
    direction: Literal["maximize", "minimize"] = "maximize" if spec.goal == "maximize" else "minimize"
    study = optuna.create_study(direction=direction, sampler=_sampler(spec, dists), study_name=sweep_id)
    trials: list[Trial] = []
    unfinished: dict[str, str] = {}  # config key -> ref of a run that was cut short
    if resume:
        n_done = _replay(st, spec, resume, dists, decode, study, trials, unfinished)
        n_trials = max(0, n_trials - n_done)

    def objective(ot: Any) -> float:
        raw = {k: _suggest(ot, k, d) for k, d in dists.items()}
        params = {**constants, **{k: decode[k](v) for k, v in raw.items()}}
        params = {p.name: params[p.name] for p in spec.params}  # file order
        config = _unflatten(params, spec.config)
        upstream = {u: params[u] for u in spec.upstream}
        info = TrialInfo(sweep_id, ot.number, dict(params), upstream)
        token = _CURRENT.set(info)
        _CURRENT_GLOBAL[0] = info
        t0 = time.perf_counter()
        trial = Trial(ot.number, params, config, "failed")
        trials.append(trial)
        try:
            again = unfinished.pop(_config_key(config), None)
            if again is not None and getattr(evaluate, "resumable", False):
                result = evaluate(config, resume=again)  # type: ignore[call-arg]
            else:
                result = evaluate(config)
            run = resolve_run(st, result)
            st.execute("UPDATE runs SET sweep_id = ? WHERE run_id = ? AND sweep_id IS NULL", (sweep_id, run.run_id))
            trial.run_id, trial.run_ref = run.run_id, run.ref
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
            if on_trial is not None:
                on_trial(trial)
        if trial.value is None:
            raise _TrialFailed(trial.error or "failed")
        if spec.target is not None and (
            (spec.goal == "maximize" and trial.value >= spec.target)
            or (spec.goal == "minimize" and trial.value <= spec.target)
        ):
            ot.study.stop()
        return trial.value

    if n_trials:
        study.optimize(objective, n_trials=n_trials, catch=(_TrialFailed,), gc_after_trial=False,
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


def _evaluator(
    spec: SweepSpec, evaluate: Callable[[dict[str, Any]], Any] | None, store: Any
) -> tuple[Store, Callable[[dict[str, Any]], Any]]:
    from ragtrail.store import Store, open_store

    if evaluate is not None:
        st = store if isinstance(store, Store) else open_store(store)
        return st, evaluate
    if spec.eval_path and spec.function:
        raise ConfigError(f"{spec.source}: give either eval (an eval config) or function, not both")
    if spec.function:
        from ragtrail.evals._config import import_object

        fn = import_object(spec.function, spec.base_dir, "function")
        st = store if isinstance(store, Store) else open_store(store)
        return st, fn
    if not spec.eval_path:
        raise ConfigError(
            f"{spec.source}: say what each trial runs: eval: eval.yaml (a ragtrail eval config) or function: module:evaluate"
        )
    from ragtrail.evals._config import build, load_spec

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


def _config_key(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def _replay(
    st: Store,
    spec: SweepSpec,
    sweep_id: str,
    dists: Mapping[str, Any],
    decode: Mapping[str, Callable[[Any], Any]],
    study: Any,
    trials: list[Trial],
    unfinished: dict[str, str],
) -> int:
    """Put the finished trials of ``sweep_id`` back into ``study`` and ``trials``; note the runs that
    were cut short in ``unfinished``. Returns how many trials count as done."""
    require("optuna", extra="evals", feature="sweeps")
    import optuna

    rows = st.query(
        "SELECT run_id, name, version, config, status FROM runs WHERE sweep_id = ? ORDER BY version", (sweep_id,)
    )
    if not rows:
        raise EvalError(
            f"cannot resume sweep {sweep_id!r}: the store {st.url} has no runs of it (the id is printed when a "
            "sweep starts, and `ragtrail runs list` shows it)"
        )
    done = 0
    for run_id, name, version, cfg_json, status in rows:
        ref = f"{name}:v{version}"
        config = json.loads(cfg_json or "{}")
        params: dict[str, Any] = {}
        raw: dict[str, Any] = {}
        for p in spec.params:
            try:
                value = _dig(config, p.name)
            except KeyError:
                raise ConfigError(
                    f"{spec.source}: cannot resume {sweep_id}: its trial run {ref} has no parameter {p.name!r}; "
                    "the sweep file changed since, so start a new sweep"
                ) from None
            params[p.name] = value
            if p.name in dists:
                raw[p.name] = _encode(dists[p.name], decode[p.name], value)
                if raw[p.name] is _NOT_IN:
                    raise ConfigError(
                        f"{spec.source}: cannot resume {sweep_id}: its trial run {ref} has {p.name}={value!r}, "
                        "which parameters." + p.name + " no longer allows; start a new sweep"
                    )
        if status != "finished":  # running (killed), interrupted, stopped: continue that run
            unfinished[_config_key(config)] = ref
            continue
        value, why = _metric_value(st, run_id, spec.metric, spec.source)
        trial = Trial(len(trials), params, config, "failed", run_id=run_id, run_ref=ref)
        if value is None:
            trial.error = f"no ok {spec.metric} score in {ref}" + (f" (e.g. {why})" if why else "")
            trials.append(trial)
            continue  # not replayed: the optimiser may try it again
        trial.value, trial.state = value, "complete"
        trials.append(trial)
        study.add_trial(optuna.trial.create_trial(params=raw, distributions={k: dists[k] for k in raw}, value=value))
        done += 1
    return done


_NOT_IN = object()


def _encode(dist: Any, decode: Callable[[Any], Any], value: Any) -> Any:
    """A parameter's value in Optuna's terms for ``dist`` (the inverse of ``decode``), or _NOT_IN."""
    require("optuna", extra="evals", feature="sweeps")
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        want = json.dumps(value, sort_keys=True, default=str)
        for choice in dist.choices:
            if json.dumps(decode(choice), sort_keys=True, default=str) == want:
                return choice
        return _NOT_IN
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _NOT_IN
    if not (dist.low - 1e-12 <= value <= dist.high + 1e-12):
        return _NOT_IN
    return int(value) if isinstance(dist, od.IntDistribution) else float(value)


def _deep_merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), Mapping) and isinstance(v, Mapping) else v
    return out


def sweep_runs_df(store: Store, sweep_id: str) -> pd.DataFrame:
    """The runs of a sweep (oldest first): run, run_id, config, then one column per metric mean."""
    require("pandas", extra="analysis", feature="sweep_runs_df()")
    import pandas as pd

    rows = store.query(
        "SELECT run_id, name, version, config FROM runs WHERE sweep_id = ? ORDER BY version", (sweep_id,)
    )
    if not rows:
        raise EvalError(f"no runs for sweep {sweep_id!r} in the store {store.url}")
    out = []
    for rid, name, version, cfg in rows:
        rec: dict[str, Any] = {"run": f"{name}:v{version}", "run_id": rid, "config": json.loads(cfg or "{}")}
        for m, cells in load_scores(store, rid).items():
            vals = [c.score for c in cells.values() if c.status == "ok" and c.score is not None]
            rec[m] = sum(vals) / len(vals) if vals else None
        out.append(rec)
    return pd.DataFrame(out)


def iter_grid(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    """The configs a grid sweep will run (for ``--dry-run``)."""
    for flat in spec.grid():
        yield _unflatten(flat, spec.config)


__all__ = [
    "Param",
    "SweepResult",
    "SweepSpec",
    "Trial",
    "TrialInfo",
    "current_trial",
    "iter_grid",
    "load_sweep",
    "new_sweep_id",
    "run_sweep",
    "sweep_cache",
    "sweep_runs_df",
]
