"""Quality gates on a run, and alias promotion that only happens when they pass.

A gate file (YAML) — or the same gates given as strings/flags::

    baseline: production            # an alias of the run's evaluation, or any run reference
    gates:
      - faithfulness >= 0.85        # absolute threshold on a metric's mean (over ok scores)
      - token_f1 >= production - 0.02   # non-inferiority: CI lower bound of (run − baseline) > −0.02
      - metric: recall@5
        non_inferior: 0.01          # the same, as a mapping (against the top-level baseline)
      - error_rate <= 0.05          # examples with a pipeline error or any scorer error
      - undefined_rate(ndcg@10) <= 0.2
      - cost_usd <= 2.50            # total cost of the run
      - p95_latency_ms <= 1500

Mapping forms: ``{metric, min|max|op+value}``, ``{metric, non_inferior: margin | {margin, against}}``,
``{max_error_rate[, metric]}``, ``{max_undefined_rate[, metric]}``, ``{max_cost_usd}``,
``{max_cost_per_example_usd}``, ``{max_p50|p95|p99_latency_ms}``; each may carry a ``name``.

Non-inferiority uses the two-sided CI of :func:`~ragtrail.evals._compare.compare` (95% by default),
i.e. a one-sided test at 2.5%: the run passes when even the pessimistic end of the CI is within the
margin. Metrics where lower is better (latency, cost…) check the CI's upper bound against +margin.

:func:`check_gates` returns a :class:`GateReport` (pass/fail per gate, JUnit XML, Markdown);
problems with the gates themselves (unknown metric, bad syntax, missing baseline) raise
:class:`~ragtrail.ConfigError` / :class:`~ragtrail.EvalError` — the CLI's exit status 2, distinct
from a failed gate's 1. :func:`promote` moves an alias only when the gates pass, with a
compare-and-swap so that concurrent promotions never lose an update.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ragtrail.evals import _needs_numpy  # noqa: F401  (numpy + scipy, or a one-line install hint)

# isort: split
import numpy as np

from ragtrail._exceptions import AliasConflictError, ConfigError, EvalError, RagtrailWarning
from ragtrail.evals._compare import (
    OPERATIONAL,
    Comparison,
    RunInfo,
    compare,
    higher_is_better,
    load_examples,
    load_scores,
    resolve_run,
)
from ragtrail.evals._gate_spec import _OPS, Gate, GateSpec, load_gates, parse_gate
from ragtrail.evals._report import error_junit_xml, gates_junit_xml, gates_markdown, gates_table, print_gates
from ragtrail.store import Store, _aliases

GateStatus = Literal["pass", "fail", "skipped"]


@dataclass
class GateResult:
    gate: Gate
    status: GateStatus
    observed: float | None
    detail: str

    @property
    def passed(self) -> bool:
        return self.status != "fail"


@dataclass
class GateReport:
    """The outcome of :func:`check_gates`: ``passed``, ``exit_code`` (0/1), ``results``, outputs."""

    run: RunInfo
    results: list[GateResult]
    baseline: RunInfo | None = None
    baseline_ref: str | None = None
    comparison: Comparison | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def raise_for_failure(self) -> None:
        """Raise ``AssertionError`` listing the failed gates (what the pytest plugin uses)."""
        if not self.passed:
            lines = [f"{len(self.failed)} of {len(self.results)} gates failed for {self.run.ref}:"]
            lines += [f"  ✗ {r.gate.text}: {r.detail}" for r in self.failed]
            raise AssertionError("\n".join(lines))

    # ---------------------------------------------------------------- outputs (rendered by _report)
    def to_junit_xml(self) -> str:
        """JUnit XML: one test case per gate (failure/skipped elements), for CI test reporters."""
        return gates_junit_xml(self)

    def to_markdown(self) -> str:
        """A Markdown summary (GitHub's job summary, a PR comment)."""
        return gates_markdown(self)

    def table(self) -> Any:
        return gates_table(self)

    def print(self, console: Any = None) -> None:
        print_gates(self, console)


# ----------------------------------------------------------------------------------- evaluation
def _baseline_ref(run: RunInfo, ref: str) -> str:
    return ref if ":" in ref or ref.startswith("run_") else f"{run.name}:{ref}"


def check_gates(
    store: Store,
    run: Any,
    gates: Any = None,
    *,
    extra: Iterable[Any] = (),
    baseline: str | None = None,
    **options: Any,
) -> GateReport:
    """Evaluate gates on ``run``. ``gates``: a YAML path, mapping, list or :class:`GateSpec`.

    Raises ConfigError/EvalError when the gates cannot be evaluated (unknown metric, no gates,
    missing baseline…); a failed gate is a result, not an exception.
    """
    spec = load_gates(gates, extra=extra, baseline=baseline, **options)
    if not spec.gates:
        raise ConfigError(
            "no gates given: pass a gate file (--gates gates.yaml) or gates such as 'faithfulness >= 0.85'"
        )
    info = resolve_run(store, run)
    scores = load_scores(store, info.run_id)
    examples = load_examples(store, info.run_id)
    metric_names = sorted(scores)
    valid = set(metric_names) | set(OPERATIONAL)
    for g in spec.gates:
        if g.metric is not None and g.metric not in valid:
            raise ConfigError(
                f"{g.where} ({g.text}): unknown metric {g.metric!r}; run {info.ref} has the metrics "
                f"{', '.join(metric_names) or 'none'} (and latency_ms, cost_usd, input_tokens, output_tokens)"
            )
    report = GateReport(info, [])
    ni = [g for g in spec.gates if g.kind == "non_inferiority"]
    comparisons: dict[str, Comparison | None] = {}
    for ref in dict.fromkeys(_baseline_ref(info, g.against or spec.baseline or "") for g in ni):
        if ref.endswith(":"):
            raise ConfigError(
                f"{spec.source}: a non-inferiority gate needs a baseline: set 'baseline: production' in the gate file, "
                "'against:' on the gate, or pass --baseline"
            )
        try:
            base = resolve_run(store, ref)
        except EvalError as exc:
            if not spec.allow_missing_baseline:
                raise EvalError(
                    f"{spec.source}: the baseline {ref!r} of the non-inferiority gates cannot be found ({exc}). "
                    "Set the alias first, or pass --allow-missing-baseline to skip these gates (e.g. the first promotion)."
                ) from exc
            comparisons[ref] = None
            report.notes.append(f"baseline {ref} not found: non-inferiority gates against it skipped")
            continue
        metrics = [g.metric for g in ni if _baseline_ref(info, g.against or spec.baseline or "") == ref]
        with warnings.catch_warnings():  # pairing warnings become notes of the report
            warnings.simplefilter("ignore", RagtrailWarning)
            cmp = compare(
                store, base, info, metrics=[m for m in dict.fromkeys(metrics) if m], confidence=spec.confidence,
                seed=spec.seed, n_resamples=spec.n_resamples,
            )  # fmt: skip
        comparisons[ref] = cmp
        report.notes.extend(f"vs {ref}: {w}" for w in cmp.warnings)
        if report.baseline is None:
            report.baseline, report.baseline_ref, report.comparison = base, ref, comparisons[ref]
    for g in spec.gates:
        report.results.append(_evaluate(g, spec, info, scores, examples, comparisons))
    return report


def _evaluate(
    g: Gate,
    spec: GateSpec,
    run: RunInfo,
    scores: Mapping[str, Mapping[str, Any]],
    examples: Mapping[str, Mapping[str, Any]],
    comparisons: Mapping[str, Comparison | None],
) -> GateResult:
    def verdict(observed: float, detail: str) -> GateResult:
        ok = _OPS[g.op](observed, g.value)
        return GateResult(g, "pass" if ok else "fail", observed, detail)

    if g.kind == "threshold":
        assert g.metric is not None
        if g.metric in scores:
            vals = [c.score for c in scores[g.metric].values() if c.status == "ok"]
            n_all = len(scores[g.metric])
        else:
            vals = [float(r[g.metric]) for r in examples.values() if r.get(g.metric) is not None]
            n_all = len(examples)
        if not vals:
            return GateResult(g, "fail", None, f"no ok scores for {g.metric} ({n_all} results, none ok)")
        mean = float(np.mean(vals))
        return verdict(mean, f"mean of {len(vals)} ok scores (of {n_all})")
    if g.kind in ("error_rate", "undefined_rate"):
        status = "error" if g.kind == "error_rate" else "undefined"
        if g.metric is not None:
            cells = scores.get(g.metric, {})
            if not cells:
                return GateResult(g, "fail", None, f"no results for {g.metric}")
            k = sum(1 for c in cells.values() if c.status == status)
            return verdict(k / len(cells), f"{k} of {len(cells)} {g.metric} results are {status}")
        ids = set(examples) | {e for per in scores.values() for e in per}
        if not ids:
            return GateResult(g, "fail", None, "the run has no examples")
        bad = {e for per in scores.values() for e, c in per.items() if c.status == status}
        if status == "error":
            bad |= {e for e, r in examples.items() if r.get("status") == "error"}
            what = "examples with a pipeline or scorer error"
        else:
            what = "examples with an undefined score"
        return verdict(len(bad) / len(ids), f"{len(bad)} of {len(ids)} {what}")
    if g.kind in ("cost", "cost_per_example"):
        known = [float(r["cost_usd"]) for r in examples.values() if r.get("cost_usd") is not None]
        unknown = len(examples) - len(known)
        if not known:
            return GateResult(g, "fail", None, "no cost recorded for this run (unknown prices give no cost, never 0)")
        total = float(sum(known))
        observed = total if g.kind == "cost" else total / len(known)
        res = verdict(observed, f"total ${total:.4f} over {len(known)} examples" if g.kind == "cost"
                      else f"mean ${observed:.6f} per example over {len(known)}")  # fmt: skip
        if unknown and not spec.allow_unknown_cost:
            return GateResult(g, "fail", observed,
                              f"cost unknown for {unknown} of {len(examples)} examples (a lower bound: {res.detail}); "
                              "set allow_unknown_cost: true to gate on the known part")  # fmt: skip
        if unknown:
            res.detail += f"; cost unknown for {unknown} examples"
        return res
    if g.kind == "latency":
        lat = [float(r["latency_ms"]) for r in examples.values() if r.get("latency_ms") is not None]
        if not lat:
            return GateResult(g, "fail", None, "no latency recorded for this run")
        p = float(np.percentile(lat, g.quantile))
        return verdict(p, f"p{g.quantile:g} of {len(lat)} example latencies")
    # non-inferiority
    assert g.metric is not None
    ref = _baseline_ref(run, g.against or spec.baseline or "")
    cmp = comparisons.get(ref)
    if cmp is None:
        return GateResult(g, "skipped", None, f"baseline {ref} not found")
    m = cmp[g.metric]
    if m.n_pairs < 2 or m.ci_low is None or math.isnan(m.ci_low):
        return GateResult(g, "fail", None, f"only {m.n_pairs} paired examples with {cmp.a.ref}; no CI")
    hib = higher_is_better(g.metric)
    pct = round(cmp.confidence * 100)
    if hib:
        ok = m.ci_low > -g.value
        detail = (f"observed = the CI's lower bound; delta {m.delta:+.4f} vs {cmp.a.ref}, {pct}% CI "
                  f"[{m.ci_low:+.4f}, {m.ci_high:+.4f}]; lower bound must be > {-g.value:+.4f}")  # fmt: skip
        return GateResult(g, "pass" if ok else "fail", m.ci_low, detail)
    ok = m.ci_high < g.value  # type: ignore[operator]
    detail = (f"observed = the CI's upper bound; delta {m.delta:+.4f} vs {cmp.a.ref}, {pct}% CI "
              f"[{m.ci_low:+.4f}, {m.ci_high:+.4f}]; upper bound must be < {g.value:+.4f} (lower is better)")  # fmt: skip
    return GateResult(g, "pass" if ok else "fail", m.ci_high, detail)


# ------------------------------------------------------------------------------------ aliases
_ANY: Any = _aliases.UNSET


def current_alias(store: Store, name: str, alias: str) -> str | None:
    """The run id ``name:alias`` points at (None when unset)."""
    return _aliases.alias_target(store, name, alias)


def move_alias(store: Store, run: Any, alias: str, *, by: str | None = None, expected: Any = _ANY) -> str | None:
    """Point ``alias`` of the run's evaluation at ``run`` atomically; returns the previous run id.

    :func:`ragtrail.store._aliases.move_alias` for a run reference: with ``expected`` (a run id or
    None for "unset") the move happens only if the alias still points there, else
    :class:`~ragtrail.AliasConflictError` (compare-and-swap).
    """
    _aliases.validate_alias(alias)
    info = resolve_run(store, run)
    return _aliases.move_alias(store, info.name, alias, info.run_id, by=by, expected=expected, label=info.ref)


@dataclass
class PromotionResult:
    """What :func:`promote` did: ``moved``, the gate ``report`` (None without gates), the run the
    alias pointed at before (``previous_run_id``) and how many times a concurrent move forced a re-check."""

    run: RunInfo
    alias: str
    moved: bool
    report: GateReport | None
    previous_run_id: str | None
    retries: int = 0


def promote(
    store: Store,
    run: Any,
    alias: str = "production",
    gates: Any = None,
    *,
    extra: Iterable[Any] = (),
    baseline: str | None = None,
    by: str | None = None,
    max_retries: int = 10,
    **options: Any,
) -> PromotionResult:
    """Move ``alias`` to ``run`` only if the gates pass (no gates: move unconditionally).

    Non-inferiority gates without a baseline compare against the alias's current holder, and the move is a compare-and-swap on
    it: when another process promotes in between, the gates are checked again against the new
    holder, so two concurrent promotions never leave a lost update or a half-moved alias.
    """
    info = resolve_run(store, run)
    spec = None
    if gates is not None or extra:
        spec = load_gates(gates, extra=extra, baseline=baseline, **options)
        if spec.baseline is None:
            spec.baseline = alias  # non-inferiority against the run the alias points at now
    for attempt in range(max_retries + 1):
        holder = current_alias(store, info.name, alias)
        report = None
        if spec is not None:
            report = check_gates(store, info, spec)
            if not report.passed:
                return PromotionResult(info, alias, False, report, holder, attempt)
        if holder == info.run_id:
            return PromotionResult(info, alias, False, report, holder, attempt)
        try:
            previous = move_alias(store, info, alias, by=by, expected=holder)
        except AliasConflictError:
            time.sleep(0.005 * (attempt + 1))
            continue
        return PromotionResult(info, alias, True, report, previous, attempt)
    raise EvalError(f"{info.name}:{alias} kept moving while promoting {info.ref} ({max_retries} retries); try again")


__all__ = [
    "AliasConflictError",
    "Gate",
    "GateReport",
    "GateResult",
    "GateSpec",
    "PromotionResult",
    "check_gates",
    "current_alias",
    "error_junit_xml",
    "load_gates",
    "move_alias",
    "parse_gate",
    "promote",
]
