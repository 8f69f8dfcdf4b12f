"""Gate files and gate expressions: parsing them into :class:`Gate` values (no evaluation here).

The syntax is described in :mod:`ragtrail.evals._gates`, which evaluates the gates and promotes runs;
this module only turns strings, mappings and YAML files into a :class:`GateSpec`, with errors that say
where (``gates.yaml: gates[2]``) and what to write instead.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ragtrail._exceptions import ConfigError

GateKind = Literal[
    "threshold", "non_inferiority", "error_rate", "undefined_rate", "cost", "cost_per_example", "latency"
]
_OPS = {
    ">=": lambda x, y: x >= y,
    ">": lambda x, y: x > y,
    "<=": lambda x, y: x <= y,
    "<": lambda x, y: x < y,
    "==": lambda x, y: x == y,
}
_EXPR = re.compile(r"^\s*(?P<lhs>.+?)\s*(?P<op>>=|<=|==|>|<)\s*(?P<rhs>.+?)\s*$")
_FUNC = re.compile(r"^(?P<fn>error_rate|undefined_rate)\s*(?:\(\s*(?P<arg>[^)]*?)\s*\))?$")
_LATENCY = re.compile(r"^(?:p(?P<q>\d{1,2}(?:\.\d+)?)_latency_ms|latency_p(?P<q2>\d{1,2}(?:\.\d+)?)_ms)$")
_NI_RHS = re.compile(r"^(?P<ref>[A-Za-z_]\S*?)(?:\s*(?P<sign>[+-])\s*(?P<margin>\d[0-9.eE]*))?$")
_MAX_LATENCY = re.compile(r"^max_p(?P<q>\d{1,2}(?:\.\d+)?)_latency_ms$")


@dataclass(frozen=True)
class Gate:
    """One gate. ``where`` locates it (``gates.yaml: gates[2]``) for error messages."""

    kind: GateKind
    text: str
    op: str = ">="
    value: float = 0.0
    metric: str | None = None
    against: str | None = None
    quantile: float = 95.0
    where: str = ""


@dataclass
class GateSpec:
    """Parsed gates with their options."""

    gates: list[Gate]
    baseline: str | None = None
    confidence: float = 0.95
    seed: int | None = 0
    n_resamples: int = 10_000
    allow_missing_baseline: bool = False
    allow_unknown_cost: bool = False
    source: str = "gates"


def _number(v: Any, where: str, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ConfigError(f"{where}: {what} must be a number, not {v!r}")
    try:
        x = float(v)
    except ValueError as exc:
        raise ConfigError(f"{where}: {what} must be a number, not {v!r}") from exc
    if not math.isfinite(x):
        raise ConfigError(f"{where}: {what} must be finite, not {v!r}")
    return x


def parse_gate(item: Any, where: str = "gate", baseline: str | None = None) -> Gate:
    """One gate from a string (``"faithfulness >= 0.85"``) or a mapping (see the module docstring)."""
    if isinstance(item, str):
        return _parse_expr(item, where)
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: a gate is a string such as 'faithfulness >= 0.85' or a mapping, not {item!r}")
    d = dict(item)
    name = d.pop("name", None)
    metric = d.pop("metric", None)
    if metric is not None and (not isinstance(metric, str) or not metric.strip()):
        raise ConfigError(f"{where}.metric: must be a metric name, not {metric!r}")
    gate: Gate | None = None
    if "non_inferior" in d or "non_inferiority" in d:
        spec = d.pop("non_inferior", None) if "non_inferior" in d else d.pop("non_inferiority")
        against = baseline
        if isinstance(spec, Mapping):
            spec = dict(spec)
            against = spec.pop("against", against)
            margin = _number(spec.pop("margin", 0.0), where, "non_inferior.margin")
            if spec:
                raise ConfigError(
                    f"{where}.non_inferior: unknown key(s) {', '.join(map(str, spec))}; use margin, against"
                )
        else:
            margin = _number(spec, where, "non_inferior (the margin)")
        if metric is None:
            raise ConfigError(f"{where}: a non_inferior gate needs a metric")
        if margin < 0:
            raise ConfigError(f"{where}.non_inferior: the margin must be >= 0, not {margin}")
        gate = Gate("non_inferiority", name or f"{metric} non-inferior to {against or 'baseline'} (margin {margin:g})",
                    op=">=", value=margin, metric=metric, against=against, where=where)  # fmt: skip
    elif "min" in d or "max" in d or "value" in d:
        if metric is None:
            raise ConfigError(f"{where}: a threshold gate needs a metric")
        if "value" in d:
            op = str(d.pop("op", ">="))
            if op not in _OPS:
                raise ConfigError(f"{where}.op: {op!r} is not one of {', '.join(_OPS)}")
            value = _number(d.pop("value"), where, "value")
        elif "min" in d:
            op, value = ">=", _number(d.pop("min"), where, "min")
        else:
            op, value = "<=", _number(d.pop("max"), where, "max")
        if "min" in d or "max" in d:
            raise ConfigError(f"{where}: give one of min, max or op+value per gate (write two gates for a range)")
        gate = _gate_for_lhs(metric, op, value, where, name)
    else:
        for key in list(d):
            v = d[key]
            if key == "max_error_rate":
                gate = _gate_for_lhs(f"error_rate({metric})" if metric else "error_rate", "<=",
                                     _number(v, where, key), where, name)  # fmt: skip
            elif key == "max_undefined_rate":
                gate = _gate_for_lhs(f"undefined_rate({metric})" if metric else "undefined_rate", "<=",
                                     _number(v, where, key), where, name)  # fmt: skip
            elif key in ("max_cost_usd", "max_cost"):
                gate = _gate_for_lhs("cost_usd", "<=", _number(v, where, key), where, name)
            elif key == "max_cost_per_example_usd":
                gate = _gate_for_lhs("cost_per_example_usd", "<=", _number(v, where, key), where, name)
            elif m := _MAX_LATENCY.match(key):
                gate = _gate_for_lhs(f"p{m.group('q')}_latency_ms", "<=", _number(v, where, key), where, name)
            else:
                continue
            d.pop(key)
            break
    if gate is None:
        raise ConfigError(
            f"{where}: cannot tell what this gate checks ({item!r}); use min/max/op+value, non_inferior, "
            "max_error_rate, max_undefined_rate, max_cost_usd, max_cost_per_example_usd or max_p95_latency_ms"
        )
    if d:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(str, d))} in {item!r}")
    return gate


def _gate_for_lhs(
    lhs: str, op: str, value: float, where: str, name: str | None = None, text: str | None = None
) -> Gate:
    text = name or text or f"{lhs} {op} {value:g}"
    if m := _FUNC.match(lhs):
        kind: GateKind = "error_rate" if m.group("fn") == "error_rate" else "undefined_rate"
        if op not in ("<=", "<"):
            raise ConfigError(f"{where}: {m.group('fn')} gates are upper bounds; write {lhs} <= {value:g}")
        if not 0 <= value <= 1:
            raise ConfigError(f"{where}: a rate is between 0 and 1, not {value:g}")
        return Gate(kind, text, op, value, m.group("arg") or None, where=where)
    if lhs in ("cost_usd", "cost", "total_cost_usd"):
        return Gate("cost", text, op, value, where=where)
    if lhs in ("cost_per_example_usd", "mean_cost_usd"):
        return Gate("cost_per_example", text, op, value, where=where)
    if m2 := _LATENCY.match(lhs):
        q = float(m2.group("q") or m2.group("q2"))
        if not 0 < q <= 100:
            raise ConfigError(f"{where}: latency percentile must be in (0, 100], not {q:g}")
        return Gate("latency", text, op, value, quantile=q, where=where)
    return Gate("threshold", text, op, value, lhs, where=where)


def _parse_expr(text: str, where: str) -> Gate:
    m = _EXPR.match(text)
    if not m:
        raise ConfigError(
            f"{where}: cannot parse gate {text!r}; write '<metric> >= <number>' such as 'faithfulness >= 0.85'"
        )
    lhs, op, rhs = m.group("lhs"), m.group("op"), m.group("rhs")
    try:
        value: float | None = float(rhs)
    except ValueError:
        value = None
    if value is None:
        ni = _NI_RHS.match(rhs)
        if not ni:
            raise ConfigError(
                f"{where}: cannot parse the right-hand side {rhs!r} of {text!r}; give a number, or a baseline "
                "with a margin such as 'production - 0.02'"
            ) from None
        if op not in (">=", "<="):
            raise ConfigError(
                f"{where}: a non-inferiority gate uses >= (higher is better) or <= (lower is better): {text!r}"
            )
        margin = _number(ni.group("margin") or 0.0, where, "the margin")
        sign = ni.group("sign") or ("-" if op == ">=" else "+")
        if (op == ">=" and sign != "-") or (op == "<=" and sign != "+"):
            raise ConfigError(
                f"{where}: write 'metric >= baseline - margin' or 'metric <= baseline + margin', not {text!r}"
            )
        return Gate("non_inferiority", text, op, margin, lhs, against=ni.group("ref"), where=where)
    return _gate_for_lhs(lhs, op, value, where, text=text)


def load_gates(
    source: str | os.PathLike[str] | Mapping[str, Any] | Sequence[Any] | GateSpec | None = None,
    *,
    extra: Iterable[Any] = (),
    baseline: str | None = None,
    **options: Any,
) -> GateSpec:
    """A :class:`GateSpec` from a YAML file path, a parsed mapping/list, or None (only ``extra``).

    ``extra`` adds gates (strings/mappings, e.g. CLI flags); ``baseline`` and ``options``
    (``confidence``, ``seed``, ``n_resamples``, ``allow_missing_baseline``, ``allow_unknown_cost``)
    override the file's.
    """
    spec: GateSpec
    if isinstance(source, GateSpec):
        spec = source
    else:
        label = "gates"
        data: Any
        if source is None:
            data = {"gates": []}
        elif isinstance(source, (str, os.PathLike)) and not isinstance(source, Mapping):
            path = Path(source)
            label = str(source)
            if not path.is_file():
                raise ConfigError(f"gate file {str(path)!r} not found")
            import yaml

            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                loc = f":{mark.line + 1}" if mark is not None else ""
                raise ConfigError(f"{path}{loc}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
        else:
            data = source
        if data is None:
            data = {"gates": []}
        if isinstance(data, (list, tuple)):
            data = {"gates": list(data)}
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{label}: a gate file is a mapping with a 'gates' list (or a list of gates), not {type(data).__name__}"
            )
        data = dict(data)
        items = data.pop("gates", [])
        if not isinstance(items, list):
            raise ConfigError(f"{label}: 'gates' must be a list")
        base = data.pop("baseline", None)
        opts: dict[str, Any] = {}
        for k in ("confidence", "seed", "n_resamples", "allow_missing_baseline", "allow_unknown_cost"):
            if k in data:
                opts[k] = data.pop(k)
        if data:
            raise ConfigError(
                f"{label}: unknown key(s) {', '.join(map(str, data))}; a gate file has gates, baseline, confidence, "
                "seed, n_resamples, allow_missing_baseline, allow_unknown_cost"
            )
        gates = [parse_gate(g, f"{label}: gates[{i}]", base) for i, g in enumerate(items)]
        spec = GateSpec(gates, base, source=label, **opts)
    spec.gates = list(spec.gates) + [parse_gate(g, f"gate {g!r}", baseline or spec.baseline) for g in extra]
    if baseline is not None:
        spec.baseline = baseline
    for k, v in options.items():
        if v is not None:
            if not hasattr(spec, k):
                raise ConfigError(f"unknown gate option {k!r}")
            setattr(spec, k, v)
    if not 0 < float(spec.confidence) < 1:
        raise ConfigError(f"{spec.source}: confidence must be between 0 and 1, not {spec.confidence!r}")
    return spec


__all__ = ["Gate", "GateKind", "GateSpec", "load_gates", "parse_gate"]
