"""The sweep file: W&B's sweep-configuration format, validated with errors that name the field.

Everything here follows W&B's sweep reference (and its reference sampler where the docs are silent):
``metric.goal`` defaults to minimize; a ``q_*`` value is ``round(x / q) * q``, an int when ``q`` is an
int (``q`` defaults to the float 1.0); a grid enumerates ``int_uniform`` as ``min..max`` and
``q_uniform`` as ``numpy.arange(min, max, q)`` (``max`` left out), with duplicate values removed and
the parameters in sorted-name order; ``run_cap`` caps the number of runs. The sampling itself (Optuna,
or W&B's inverse-CDF where Optuna has no such distribution) lives in ``_sweep_optuna``.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ragtrail._exceptions import ConfigError
from ragtrail._log import logger

METHODS = ("grid", "random", "bayes")
# distribution -> the keys it takes besides ``distribution`` (W&B's, plus ragtrail's int_log_uniform_values)
DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "categorical": ("values", "probabilities"),
    "categorical_w_probabilities": ("values", "probabilities"),
    "int_uniform": ("min", "max"),
    "uniform": ("min", "max"),
    "q_uniform": ("min", "max", "q"),
    "log_uniform": ("min", "max"),
    "log_uniform_values": ("min", "max"),
    "int_log_uniform_values": ("min", "max"),
    "q_log_uniform": ("min", "max", "q"),
    "q_log_uniform_values": ("min", "max", "q"),
    "inv_log_uniform": ("min", "max"),
    "inv_log_uniform_values": ("min", "max"),
    "normal": ("mu", "sigma"),
    "q_normal": ("mu", "sigma", "q"),
    "log_normal": ("mu", "sigma"),
    "q_log_normal": ("mu", "sigma", "q"),
    "beta": ("a", "b"),
    "q_beta": ("a", "b", "q"),
}
SUPPORTED = tuple(DISTRIBUTIONS)
# the distributions Optuna's samplers draw natively; the others are drawn through W&B's inverse CDF
OPTUNA_NATIVE = ("categorical", "int_uniform", "uniform", "log_uniform", "log_uniform_values", "int_log_uniform_values")
GRID_OK = ("constant", "categorical", "int_uniform", "q_uniform")
_PARAM_KEYS = sorted({k for ks in DISTRIBUTIONS.values() for k in ks} | {"distribution", "parameters", "upstream"})
_DEFAULTS = {"mu": 0.0, "sigma": 1.0, "a": 1.0, "b": 1.0, "q": 1.0}  # W&B's schema defaults
_RAGTRAIL_KEYS = ("eval", "function", "count", "seed", "upstream", "config")
_WANDB_KEYS = ("method", "metric", "parameters", "run_cap", "early_terminate", "name", "program", "command",
               "project", "entity", "description", "controller", "apiVersion", "kind", "job", "image_uri",
               "scheduler", "metrics")  # fmt: skip
_IGNORED_KEYS = ("project", "entity", "description", "controller", "apiVersion", "kind", "job", "image_uri",
                 "scheduler", "metrics")  # fmt: skip
_GRID_MAX = 100_000


def did_you_mean(key: str, choices: Any) -> str:
    """``; did you mean 'values'?`` when a choice is close to ``key``, else ``; use one of …``."""
    close = difflib.get_close_matches(str(key), list(choices), n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; use one of {', '.join(choices)}"


def _canon(v: Any) -> str:
    """W&B's identity of a grid value: integer floats equal their int (3.0 == 3)."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return json.dumps(v, sort_keys=True, default=str)


@dataclass(frozen=True)
class Param:
    """One swept parameter (``name`` is dotted for nested parameters); fields as in the sweep file
    (``low``/``high`` are its min/max, exponents for ``log_uniform``)."""

    name: str
    distribution: str
    values: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    q: float | int | None = None
    upstream: bool = False
    probabilities: tuple[float, ...] | None = None
    mu: float = 0.0
    sigma: float = 1.0
    a: float = 1.0
    b: float = 1.0

    @property
    def native(self) -> bool:
        """Whether Optuna has this distribution (else it is drawn through W&B's inverse CDF)."""
        return self.distribution in OPTUNA_NATIVE and self.probabilities is None

    def grid_values(self, where: str) -> list[Any]:
        """The values a grid takes, as W&B builds them (duplicates removed)."""
        if self.distribution in ("constant", "categorical") and self.probabilities is None:
            vals = list(self.values)
        elif self.distribution == "int_uniform":
            assert self.low is not None and self.high is not None
            vals = list(range(int(self.low), int(self.high) + 1))
        elif self.distribution == "q_uniform":
            import numpy as np

            vals = np.arange(self._num(self.low), self._num(self.high), self.q).tolist()
        else:
            what = "weighted values (probabilities)" if self.probabilities is not None else self.distribution
            raise ConfigError(
                f"{where}: grid search needs discrete values, but this parameter has {what}; give values: [...] "
                "(or int_uniform / q_uniform), or use method random or bayes"
            )
        # W&B keeps the first position of a repeated value (and its last spelling: [3, 3.0] gives 3.0)
        last = {_canon(v): v for v in vals}
        return [last[k] for k in dict.fromkeys(_canon(v) for v in vals)]

    @staticmethod
    def _num(v: float | None) -> Any:
        assert v is not None
        return int(v) if float(v).is_integer() else v

    # ------------------------------------------------------------------ W&B's inverse CDFs
    def ppf(self, u: float) -> Any:
        """The value at quantile ``u`` in [0, 1] (W&B's definition of each distribution)."""
        from scipy import stats

        d = self.distribution
        if self.probabilities is not None:
            import numpy as np

            cdf = np.cumsum(self.probabilities)
            above = u < cdf
            return self.values[int(np.argmax(above)) if above.any() else len(self.values) - 1]
        if d in ("categorical", "constant"):
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        lo, hi = self.low, self.high
        if d == "int_uniform":
            assert lo is not None and hi is not None
            return int(stats.randint.ppf(u, int(lo), int(hi) + 1))
        if d in ("uniform", "q_uniform"):
            assert lo is not None and hi is not None
            r = float(stats.uniform.ppf(u, lo, hi - lo))
        elif d in ("log_uniform", "q_log_uniform"):
            assert lo is not None and hi is not None
            r = math.exp(float(stats.uniform.ppf(u, lo, hi - lo)))
        elif d in ("log_uniform_values", "q_log_uniform_values", "int_log_uniform_values"):
            assert lo is not None and hi is not None
            r = math.exp(float(stats.uniform.ppf(u, math.log(lo), math.log(hi) - math.log(lo))))
            if d == "int_log_uniform_values":
                return min(max(round(r), int(lo)), int(hi))
        elif d == "inv_log_uniform":
            assert lo is not None and hi is not None
            r = math.exp(-float(stats.uniform.ppf(1 - u, lo, hi - lo)))
        elif d == "inv_log_uniform_values":
            assert lo is not None and hi is not None
            a, b = -math.log(hi), -math.log(lo)
            r = math.exp(-float(stats.uniform.ppf(1 - u, a, b - a)))
        elif d in ("normal", "q_normal"):
            r = float(stats.norm.ppf(u, loc=self.mu, scale=self.sigma))
        elif d in ("log_normal", "q_log_normal"):
            r = float(stats.lognorm.ppf(u, s=self.sigma, scale=math.exp(self.mu)))
        elif d in ("beta", "q_beta"):
            r = float(stats.beta.ppf(u, a=self.a, b=self.b))
        else:  # pragma: no cover - parsing refuses other names
            raise ConfigError(f"parameters.{self.name}: unknown distribution {d!r}")
        if d.startswith("q_"):
            return quantize(r, self.q if self.q is not None else 1.0)
        return r


def quantize(x: float, q: float | int) -> Any:
    """W&B's ``round(x / q) * q`` (numpy's round: halves to even), an int when ``q`` is an int."""
    import numpy as np

    v = float(np.round(x / q) * q)
    return int(v) if isinstance(q, int) and not isinstance(q, bool) else v


@dataclass(frozen=True)
class EarlyTerminate:
    """``early_terminate: {type: hyperband, min_iter | max_iter + s, eta, strict}``; one step is one
    scored example. ``min_resource`` is the first band, ``last_band`` the last (None: no last)."""

    min_resource: int
    eta: int
    last_band: int | None
    spec: Mapping[str, Any] = field(default_factory=dict)

    def bands(self, n: int) -> list[int]:
        """The bands (steps where a trial may be stopped) up to ``n`` steps."""
        out, b = [], self.min_resource
        while b <= n and (self.last_band is None or b <= self.last_band):
            out.append(b)
            b *= self.eta
        return out


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
    run_cap: int | None = None
    early_terminate: EarlyTerminate | None = None
    program: str | None = None

    def grid(self) -> list[dict[str, Any]]:
        """Every grid point as flat ``{dotted name: value}``, in W&B's order (parameters sorted by name,
        the last varying fastest; constants added), duplicates removed."""
        order = sorted((p for p in self.params if p.distribution != "constant"), key=lambda p: p.name.split("."))
        lists = [p.grid_values(f"{self.source}: parameters.{p.name}") for p in order]
        for p in self.params:
            if p.distribution == "constant":
                p.grid_values(f"{self.source}: parameters.{p.name}")
        size = math.prod(len(v) for v in lists)
        if size > _GRID_MAX:
            raise ConfigError(f"{self.source}: the grid has {size} points (more than {_GRID_MAX}); use random or bayes")
        consts = {p.name: p.values[0] for p in self.params if p.distribution == "constant"}
        out = []
        for combo in itertools.product(*lists):
            flat = {**consts, **{p.name: v for p, v in zip(order, combo, strict=True)}}
            out.append({p.name: flat[p.name] for p in self.params})
        return out

    @property
    def total(self) -> int:
        """How many trials the sweep runs in all: grid points (or count), capped by run_cap."""
        n = len(self.grid()) if self.method == "grid" else None
        for cap in (self.count, self.run_cap):
            if cap is not None:
                n = cap if n is None else min(n, cap)
        assert n is not None
        return n

    def require_target(self) -> None:
        """Refuse a sweep that says nothing ragtrail can run (``program:`` alone is W&B's script)."""
        if self.eval_path and self.function:
            raise ConfigError(f"{self.source}: give either eval (an eval config) or function, not both")
        if self.eval_path or self.function:
            return
        if self.program:
            raise ConfigError(
                f"{self.source}: program: {self.program!r} is the script a W&B agent starts for each run; ragtrail "
                "runs each trial in-process instead: add eval: eval.yaml (a ragtrail eval config whose pipeline reads "
                "its config) or function: module:evaluate (evaluate(config) -> Run)"
            )
        raise ConfigError(
            f"{self.source}: say what each trial runs: eval: eval.yaml (a ragtrail eval config) or "
            "function: module:evaluate"
        )


def _num(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where}: must be a number, not {v!r}")
    if not math.isfinite(float(v)):
        raise ConfigError(f"{where}: must be finite, not {v!r}")
    return float(v)


def _check_keys(d: Mapping[str, Any], dist: str | None, where: str) -> None:
    for k in d:
        if k in ("distribution", "upstream", "parameters"):
            continue
        if k not in _PARAM_KEYS:
            raise ConfigError(f"{where}.{k}: unknown key{did_you_mean(k, _PARAM_KEYS)}")
        if dist is not None and dist in DISTRIBUTIONS and k not in DISTRIBUTIONS[dist]:
            owners = [n for n, ks in DISTRIBUTIONS.items() if k in ks]
            takes = ", ".join(DISTRIBUTIONS[dist])
            raise ConfigError(
                f"{where}.{k}: distribution {dist} takes {takes}, not {k} ({k} belongs to {', '.join(owners)})"
            )


def _infer(d: Mapping[str, Any], where: str) -> str:
    if "values" in d:
        return "categorical"
    if "value" in d:
        return "constant"
    if "min" in d and "max" in d:
        both_int = all(isinstance(d[k], int) and not isinstance(d[k], bool) for k in ("min", "max"))
        return "int_uniform" if both_int else "uniform"
    for k in ("mu", "sigma", "a", "b", "q"):
        if k in d:
            owners = [n for n, ks in DISTRIBUTIONS.items() if k in ks]
            raise ConfigError(
                f"{where}.{k}: {k} needs a distribution ({', '.join(owners)}); add e.g. distribution: {owners[0]}"
            )
    raise ConfigError(f"{where}: give values: [...], value: x, or min and max (with an optional distribution)")


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
    dist = d.get("distribution")
    if dist is not None and not isinstance(dist, str):
        raise ConfigError(f"{where}.distribution: must be a string, not {dist!r}")
    if dist is not None and dist not in DISTRIBUTIONS:
        raise ConfigError(f"{where}.distribution: unknown distribution {dist!r}{did_you_mean(dist, SUPPORTED)}")
    _check_keys(d, dist, where)
    upstream = bool(d.pop("upstream", False))
    d.pop("distribution", None)
    if dist is None:
        dist = _infer(d, where)
    if dist in ("categorical", "categorical_w_probabilities"):
        vals = d.pop("values", None)
        if not isinstance(vals, list) or not vals:
            raise ConfigError(f"{where}.values: must be a non-empty list, not {vals!r}")
        probs = d.pop("probabilities", None)
        if dist == "categorical_w_probabilities" and probs is None:
            raise ConfigError(f"{where}.probabilities: categorical_w_probabilities needs probabilities")
        if probs is not None:
            if not isinstance(probs, list) or len(probs) != len(vals):
                raise ConfigError(f"{where}.probabilities: must be a list of {len(vals)} numbers, one per value")
            ps = tuple(_num(p, f"{where}.probabilities") for p in probs)
            if any(p < 0 for p in ps) or not math.isclose(sum(ps), 1.0, rel_tol=0, abs_tol=1e-8):
                raise ConfigError(f"{where}.probabilities: must be >= 0 and sum to 1, not {probs!r}")
            out.append(Param(name, "categorical", tuple(vals), upstream=upstream, probabilities=ps))
            return
        out.append(Param(name, "categorical", tuple(vals), upstream=upstream))
        return
    if dist == "constant":
        if "value" not in d:
            raise ConfigError(f"{where}.value: a constant parameter needs value")
        out.append(Param(name, dist, (d.pop("value"),), upstream=upstream))
        return
    kw: dict[str, Any] = {}
    keys = DISTRIBUTIONS[dist]
    for k in ("mu", "sigma", "a", "b"):
        if k in keys:
            kw[k] = _num(d.get(k, _DEFAULTS[k]), f"{where}.{k}")
    for k in ("sigma", "a", "b"):
        if k in kw and kw[k] <= 0:
            raise ConfigError(f"{where}.{k}: must be > 0, not {kw[k]:g}")
    if "q" in keys:
        q = d.get("q", 1.0)
        _num(q, f"{where}.q")
        if q <= 0:
            raise ConfigError(f"{where}.q: must be > 0, not {q:g}")
        kw["q"] = q
    lo = hi = None
    if "min" in keys:
        for k in ("min", "max"):
            if k not in d:
                raise ConfigError(f"{where}.{k}: distribution {dist} needs min and max")
        lo, hi = _num(d["min"], f"{where}.min"), _num(d["max"], f"{where}.max")
        if lo >= hi:  # W&B: min must be less than max
            raise ConfigError(f"{where}: min ({lo:g}) is not less than max ({hi:g}); use value: x for a constant")
        if dist in ("int_uniform", "int_log_uniform_values"):
            for k, v in (("min", lo), ("max", hi)):
                if v != int(v):
                    raise ConfigError(f"{where}.{k}: {dist} needs integers, not {v:g}")
        if dist.endswith("_values") and lo <= 0:
            raise ConfigError(f"{where}.min: {dist} needs min > 0 (the values themselves), not {lo:g}")
    out.append(Param(name, dist, (), lo, hi, upstream=upstream, **kw))


def _positive_int(v: Any, where: str) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{where} must be a positive integer, not {v!r}")
    return v


def _early_terminate(et: Any, label: str) -> EarlyTerminate | None:
    if et is None:
        return None
    where = f"{label}: early_terminate"
    if not isinstance(et, Mapping):
        raise ConfigError(f"{where}: a mapping {{type: hyperband, min_iter: N, eta: 3}}, not {et!r}")
    et = dict(et)
    keys = ("type", "min_iter", "max_iter", "s", "eta", "strict")
    for k in et:
        if k not in keys:
            raise ConfigError(f"{where}.{k}: unknown key{did_you_mean(k, keys)}")
    if et.get("type") != "hyperband":
        raise ConfigError(f"{where}.type: {et.get('type')!r} is not supported; W&B's one type is hyperband")
    eta = et.get("eta", 3)
    if isinstance(eta, float) and eta.is_integer():
        eta = int(eta)
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        raise ConfigError(f"{where}.eta: must be an integer >= 2 (Optuna's successive halving), not {eta!r}")
    if et.get("strict", True) is not True:
        raise ConfigError(
            f"{where}.strict: only strict: true (W&B's default) is supported: a trial is compared by its value at "
            "each band, as Optuna's successive-halving pruner does"
        )
    if "min_iter" in et:
        mi = _positive_int(et["min_iter"], f"{where}.min_iter")
        assert mi is not None
        return EarlyTerminate(mi, eta, None, et)
    if "max_iter" in et and "s" in et:
        mx = _positive_int(et["max_iter"], f"{where}.max_iter")
        s = _positive_int(et["s"], f"{where}.s")
        assert mx is not None and s is not None
        bands = sorted(int(mx / eta**i) for i in range(1, s + 1) if mx / eta**i >= 1)  # W&B's bands
        if not bands:
            raise ConfigError(f"{where}: max_iter {mx} / eta {eta} leaves no band; raise max_iter or lower eta")
        return EarlyTerminate(bands[0], eta, bands[-1], et)
    raise ConfigError(f"{where}: give min_iter (the first band), or max_iter and s (W&B's two forms)")


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
    known = (*_WANDB_KEYS, *_RAGTRAIL_KEYS)
    for k in data:
        if k not in known:
            raise ConfigError(f"{label}: {k}: unknown key{did_you_mean(str(k), known)}")
    method = data.pop("method", None)
    if method not in METHODS:
        raise ConfigError(f"{label}: method must be one of {', '.join(METHODS)}, not {method!r}")
    metric = data.pop("metric", None)
    if not isinstance(metric, Mapping) or not isinstance(metric.get("name"), str) or not metric.get("name"):
        raise ConfigError(f"{label}: metric: give {{name: <metric>, goal: maximize|minimize}}, not {metric!r}")
    metric = dict(metric)
    for k in metric:
        if k not in ("name", "goal", "target", "impute", "impute_while_running"):
            raise ConfigError(f"{label}: metric.{k}: unknown key{did_you_mean(k, ('name', 'goal', 'target'))}")
    goal = metric.pop("goal", "minimize")  # W&B's default
    if goal not in ("maximize", "minimize"):
        raise ConfigError(f"{label}: metric.goal must be maximize or minimize, not {goal!r}")
    for k in ("impute", "impute_while_running"):
        if metric.pop(k, None) is not None:
            logger.info("ragtrail sweep %s: metric.%s is not used (a failed trial does not inform the sampler)",
                        label, k)  # fmt: skip
    mname = metric.pop("name")
    target = metric.pop("target", None)
    if target is not None:
        target = _num(target, f"{label}: metric.target")
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
    n = _positive_int(count if count is not None else data.pop("count", None), f"{label}: count")
    data.pop("count", None)
    cap = _positive_int(data.pop("run_cap", None), f"{label}: run_cap")
    if method != "grid" and n is None and cap is None:
        raise ConfigError(f"{label}: count (or run_cap): how many trials a {method} sweep runs")
    seed = data.pop("seed", None)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"{label}: seed must be an integer, not {seed!r}")
    eval_path, function = data.pop("eval", None), data.pop("function", None)
    config = data.pop("config", {}) or {}
    if not isinstance(config, Mapping):
        raise ConfigError(f"{label}: config must be a mapping")
    et = _early_terminate(data.pop("early_terminate", None), label)
    program = data.pop("program", None)
    command = data.pop("command", None)
    if (program is not None or command is not None) and (eval_path or function):
        logger.info("ragtrail sweep %s: program/command (how a W&B agent starts a run) are not used; each trial "
                    "runs %s in-process", label, eval_path or function)  # fmt: skip
    for k in _IGNORED_KEYS:
        if data.pop(k, None) is not None:
            logger.info("ragtrail sweep %s: W&B key %r is not used by ragtrail", label, k)
    name = data.pop("name", None)
    spec = SweepSpec(method, mname, goal, params, n, name, seed, target, eval_path, function, dict(config),
                     upstream, label, base_dir, cap, et, str(program) if program is not None else None)  # fmt: skip
    if method == "grid":
        spec.grid()  # validates that every parameter is discrete
    return spec
