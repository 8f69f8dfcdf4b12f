"""How a sweep samples and prunes, with Optuna (imported only when a sweep runs).

* Each parameter gets an Optuna distribution: its own where Optuna has one (categorical, int, float,
  log float); otherwise a uniform quantile ``u`` in [0, 1] that W&B's inverse CDF turns into the value
  (normal, beta, the ``q_*`` lattices, weighted categoricals…), so a random draw is exactly W&B's and
  TPE searches the quantile. A grid is a categorical over the points' indices, in W&B's order.
* :class:`SweepSampler` makes trial ``n`` a function of the seed, ``n`` and the trials before it
  only: a fresh Random/TPE sampler seeded from ``(seed, n)`` draws each trial. That is what lets a
  resumed sweep, whose finished trials are replayed into the study, run exactly the trials that the
  uninterrupted sweep would have run.
* :class:`Reporter` is the harness's per-example hook: it reports the running mean of the metric at
  step = examples scored and asks the successive-halving pruner (W&B's ``hyperband``) whether to stop.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import optuna
import optuna.distributions as od
from optuna.samplers import BaseSampler, RandomSampler, TPESampler

from ragtrail.evals._sweep_space import Param, SweepSpec, _canon

_U_EPS = 1e-12  # quantiles stay inside (0, 1): the normal's ppf is infinite at the ends


class Space:
    """The sweep's parameters as Optuna distributions, with the way back to values."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.params = [p for p in spec.params if p.distribution != "constant"]
        self.constants = {p.name: p.values[0] for p in spec.params if p.distribution == "constant"}
        self.points = spec.grid() if spec.method == "grid" else None
        self.dists: dict[str, od.BaseDistribution] = {}
        if self.points is not None:
            self.dists["__grid__"] = od.IntDistribution(0, max(0, len(self.points) - 1))
            return
        for p in self.params:
            self.dists[p.name] = _distribution(p)

    def decode(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """``{dotted name: value}`` in file order from Optuna's raw values."""
        if self.points is not None:
            return dict(self.points[int(raw["__grid__"])])
        vals = dict(self.constants)
        for p in self.params:
            vals[p.name] = _decode(p, raw[p.name])
        return {p.name: vals[p.name] for p in self.spec.params}

    def encode(self, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """Optuna's raw values for stored params (runs without a stored record), or None when a value
        no longer fits the sweep."""
        if self.points is not None:
            want = {k: _canon(v) for k, v in params.items()}
            for i, pt in enumerate(self.points):
                if all(want.get(k) == _canon(v) for k, v in pt.items()):
                    return {"__grid__": i}
            return None
        out: dict[str, Any] = {}
        for p in self.params:
            v = params.get(p.name)
            d = self.dists[p.name]
            if isinstance(d, od.CategoricalDistribution):
                idx = [i for i, c in enumerate(p.values) if _canon(c) == _canon(v)]
                if not idx:
                    return None
                out[p.name] = idx[0]
            elif not p.native or isinstance(v, bool) or not isinstance(v, (int, float)):
                return None  # a quantile cannot be recovered from a rounded value
            elif not (d.low - 1e-12 <= v <= d.high + 1e-12):  # type: ignore[attr-defined]
                return None
            else:
                out[p.name] = int(v) if isinstance(d, od.IntDistribution) else float(v)
        return out


def _distribution(p: Param) -> od.BaseDistribution:
    if p.distribution == "categorical" and p.probabilities is None:
        return od.CategoricalDistribution(list(range(len(p.values))))
    if not p.native:
        return od.FloatDistribution(0.0, 1.0)
    assert p.low is not None and p.high is not None
    if p.distribution == "int_uniform":
        return od.IntDistribution(int(p.low), int(p.high))
    if p.distribution == "int_log_uniform_values":
        return od.IntDistribution(int(p.low), int(p.high), log=True)
    if p.distribution == "uniform":
        return od.FloatDistribution(p.low, p.high)
    if p.distribution == "log_uniform":  # W&B: min/max are natural-log exponents
        return od.FloatDistribution(math.exp(p.low), math.exp(p.high), log=True)
    return od.FloatDistribution(p.low, p.high, log=True)  # log_uniform_values


def _decode(p: Param, raw: Any) -> Any:
    if p.distribution == "categorical" and p.probabilities is None:
        return p.values[int(raw)]
    if not p.native:
        return p.ppf(min(max(float(raw), _U_EPS), 1.0 - _U_EPS))
    if p.distribution in ("int_uniform", "int_log_uniform_values"):
        return int(raw)
    return float(raw)


def suggest(trial: optuna.Trial, name: str, dist: od.BaseDistribution) -> Any:
    if isinstance(dist, od.CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, od.IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log)
    assert isinstance(dist, od.FloatDistribution)
    return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s sampler (independent streams per trial)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, number]).generate_state(1)[0])


class SweepSampler(BaseSampler):
    """Draws trial ``n`` with a sampler seeded from ``(seed, n)``: grid → the n-th point, random →
    Optuna's RandomSampler, bayes → TPE over the trials before it."""

    def __init__(self, spec: SweepSpec, seed: int) -> None:
        self._method = spec.method
        self._seed = seed
        self._startup = min(10, max(2, spec.total // 3)) if spec.method == "bayes" else 0
        self._inner: dict[int, BaseSampler] = {}
        self._lock = threading.Lock()

    def _for(self, number: int) -> BaseSampler:
        with self._lock:
            s = self._inner.get(number)
            if s is None:
                seed = trial_seed(self._seed, number)
                s = (
                    TPESampler(seed=seed, n_startup_trials=self._startup)
                    if self._method == "bayes"
                    else RandomSampler(seed)
                )
                self._inner = {number: s}  # one trial at a time
            return s

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, od.BaseDistribution]:
        return self._for(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: Mapping[str, Any]) -> dict[str, Any]:
        return self._for(trial.number).sample_relative(study, trial, dict(search_space))

    def sample_independent(self, study: optuna.Study, trial: Any, name: str, dist: od.BaseDistribution) -> Any:
        if name == "__grid__":  # the first point not run yet: trial n's is the n-th, in W&B's order
            used = {t.params.get(name) for t in study.get_trials(deepcopy=False) if t.number != trial.number}
            return next(i for i in range(dist.high + 1) if i not in used)  # type: ignore[attr-defined]
        return self._for(trial.number).sample_independent(study, trial, name, dist)

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self._for(trial.number).before_trial(study, trial)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        self._for(trial.number).after_trial(study, trial, state, values)


class BandPruner(optuna.pruners.BasePruner):
    """W&B's hyperband as Optuna's successive-halving pruner: at each band (min_iter·eta^k examples)
    a trial goes on only if it is in the top 1/eta of the trials that reached that band."""

    def __init__(self, min_resource: int, eta: int, last_band: int | None) -> None:
        self._sh = optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource, reduction_factor=eta)
        self._last = last_band

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or (self._last is not None and step > self._last):
            return False
        return self._sh.prune(study, trial)


class Reporter:
    """The harness hook of one trial: the running mean of ``metric`` at step = examples scored."""

    def __init__(self, trial: optuna.Trial, metric: str, prune: bool) -> None:
        self.trial = trial
        self.metric = metric
        self.prune = prune
        self.seen: set[str] = set()
        self.total = 0.0
        self.n_ok = 0
        self.intermediate: dict[int, float] = {}
        self.pruned_at: int | None = None
        self._lock = threading.Lock()

    def __call__(self, example_id: str, scores: Mapping[str, Any]) -> str | None:
        sc = scores.get(self.metric)
        if sc is None:
            return None
        value = getattr(sc, "value", None) if getattr(sc, "status", "ok") == "ok" else None
        return self.add(example_id, value)

    def add(self, example_id: str, value: float | None) -> str | None:
        with self._lock:
            if example_id in self.seen or self.pruned_at is not None:
                return None
            self.seen.add(example_id)
            if value is not None and math.isfinite(float(value)):
                self.total += float(value)
                self.n_ok += 1
            if not self.n_ok:
                return None
            step, mean = len(self.seen), self.total / self.n_ok
            self.intermediate[step] = mean
            self.trial.report(mean, step)
            if self.prune and self.trial.should_prune():
                self.pruned_at = step
                return f"pruned by hyperband at {step} examples ({self.metric} = {mean:.4f})"
        return None


def make_study(spec: SweepSpec, sweep_id: str, seed: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failed trials are reported by ragtrail
    et = spec.early_terminate
    pruner: optuna.pruners.BasePruner = (
        BandPruner(et.min_resource, et.eta, et.last_band) if et is not None else optuna.pruners.NopPruner()
    )
    return optuna.create_study(direction=spec.goal, sampler=SweepSampler(spec, seed), pruner=pruner,
                               study_name=sweep_id)  # fmt: skip


def rung_attrs(study: optuna.Study, number: int) -> dict[str, float]:
    """The pruner's per-band values of trial ``number`` (kept so that a resumed sweep prunes alike)."""
    for t in study.get_trials(deepcopy=False):
        if t.number == number:
            return {k: float(v) for k, v in t.system_attrs.items() if k.startswith("completed_rung_")}
    return {}


def replay(study: optuna.Study, space: Space, raw: Mapping[str, Any] | None, state: str, value: float | None,
           intermediate: Mapping[int, float] | None = None, rungs: Mapping[str, float] | None = None) -> None:  # fmt: skip
    """Put one stored trial back into ``study`` (state complete | pruned | failed)."""
    from optuna.trial import TrialState, create_trial

    params = dict(raw or {})
    dists = {k: space.dists[k] for k in params if k in space.dists}
    st = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED}.get(state, TrialState.FAIL)
    study.add_trial(create_trial(
        state=st, value=value if st == TrialState.COMPLETE else None, params=params, distributions=dists,
        intermediate_values={int(k): float(v) for k, v in (intermediate or {}).items()},
        system_attrs=dict(rungs or {}),
    ))  # fmt: skip


def draw(spec: SweepSpec, n: int, seed: int, objective: Callable[[dict[str, Any]], float] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """The first ``n`` configs the sweep samples (flat), each told ``objective(params)`` (default 0)."""
    space = Space(spec)
    study = make_study(spec, "draw", seed)
    out = []
    for _ in range(n):
        t = study.ask()
        params = space.decode({k: suggest(t, k, d) for k, d in space.dists.items()})
        out.append(params)
        study.tell(t, objective(params) if objective is not None else 0.0)
    return out
