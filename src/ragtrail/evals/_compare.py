"""Paired comparison of two runs: ``compare(store, a, b)`` → :class:`Comparison`.

Examples are paired by dataset example id. For each metric (each scorer of the runs, plus latency,
cost and tokens with ``operational=True``) the pairs are the examples scored ``ok`` in both runs;
the comparison reports both means over those pairs, ``delta = mean_b − mean_a``, a seeded paired
bootstrap 95% CI of the delta, a paired test's p-value (see :mod:`ragtrail.evals._stats` for why
the paired t-test is the default), Holm-adjusted p-values across the metrics, and the examples that
regressed, with their trace ids.

A difference is flagged *significant* only when the Holm-adjusted p-value is below ``alpha`` **and**
the CI excludes 0: a conservative rule, so a change is never promoted on noise.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ragtrail.evals import _needs_numpy  # noqa: F401  (numpy + scipy, or a one-line install hint)

# isort: split
import numpy as np

from ragtrail._deps import require
from ragtrail._exceptions import ConfigError, EvalError, RagtrailWarning
from ragtrail._text import escape_markup
from ragtrail.evals._runs import Run, load_run
from ragtrail.evals._stats import TESTS, bootstrap_ci_many, holm, paired_p_value
from ragtrail.store import _evals as repo

if TYPE_CHECKING:
    import pandas as pd

    from ragtrail.store import Store

COLUMNS: tuple[str, ...] = (
    "metric", "mean_a", "mean_b", "delta", "ci_low", "ci_high", "p_value", "p_adjusted", "n_pairs",
)  # fmt: skip
"""The leading columns of :meth:`Comparison.to_df`, in this order (extras follow)."""

EXTRA_COLUMNS: tuple[str, ...] = (
    "significant", "higher_is_better", "n_ok_a", "n_ok_b", "n_undefined_a", "n_undefined_b",
    "n_error_a", "n_error_b", "n_regressed", "n_improved", "test",
)  # fmt: skip

OPERATIONAL: tuple[str, ...] = ("latency_ms", "cost_usd", "input_tokens", "output_tokens")
"""Per-example columns of ``run_examples`` compared with ``operational=True`` (lower is better)."""

_LOWER_IS_BETTER = re.compile(r"(latency|cost|tokens|_ms$|_s$|duration|error|toxicity|hallucination)", re.I)


# ------------------------------------------------------------------------------------------ runs
RunInfo = Run
"""The run type of a comparison: the one :class:`~ragtrail.evals._runs.Run` (kept as a name for callers)."""


def resolve_run(store: Store, ref: Any) -> Run:
    """The :class:`Run` of a reference (``name:vN``, ``name:latest``, ``name:<alias>``, a run id) or
    of a ``Run``; resolved by the store's one resolver, so every place that names a run agrees."""
    if isinstance(ref, Run):
        return ref
    return load_run(store, ref)


# --------------------------------------------------------------------------------- per-example data
@dataclass
class _Cell:
    score: float | None
    status: str
    reason: str | None
    trace_id: str | None


def load_scores(store: Store, run_id: str) -> dict[str, dict[str, _Cell]]:
    """``{metric: {example_id: cell}}`` from ``run_results``."""
    out: dict[str, dict[str, _Cell]] = {}
    for r in repo.result_rows(store, run_id):
        ex, scorer, val, status, reason, trace_id = (
            r["example_id"],
            r["scorer"],
            r["score"],
            r["status"],
            r["reason"],
            r["trace_id"],
        )
        if status == "ok" and (val is None or not math.isfinite(val)):
            status, reason = "undefined", reason or "non-finite score stored"
        out.setdefault(scorer, {})[ex] = _Cell(val if status == "ok" else None, status, reason, trace_id)
    return out


def load_examples(store: Store, run_id: str) -> dict[str, dict[str, Any]]:
    """``{example_id: {status, error, trace_id, latency_ms, cost_usd, input_tokens, output_tokens}}``."""
    keys = ("status", "error", "trace_id", "latency_ms", "cost_usd", "input_tokens", "output_tokens")
    return {r["example_id"]: {k: r[k] for k in keys} for r in repo.example_rows(store, run_id)}


def _operational_cells(examples: Mapping[str, Mapping[str, Any]], col: str) -> dict[str, _Cell]:
    out = {}
    for ex, row in examples.items():
        v = row.get(col)
        if row.get("status") == "error":
            out[ex] = _Cell(None, "error", row.get("error") or "pipeline error", row.get("trace_id"))
        elif v is None:
            out[ex] = _Cell(None, "undefined", f"no {col} recorded", row.get("trace_id"))
        else:
            out[ex] = _Cell(float(v), "ok", None, row.get("trace_id"))
    return out


def higher_is_better(metric: str, directions: Mapping[str, str] | None = None) -> bool:
    """Whether larger values of ``metric`` are better (``directions`` overrides: "higher"/"lower")."""
    if directions and metric in directions:
        d = str(directions[metric]).lower()
        if d not in ("higher", "lower", "maximize", "minimize"):
            raise ConfigError(f"directions[{metric!r}] must be 'higher' or 'lower', not {directions[metric]!r}")
        return d in ("higher", "maximize")
    return not _LOWER_IS_BETTER.search(metric)


# ------------------------------------------------------------------------------------ the result
@dataclass
class MetricComparison:
    """One metric's row of a :class:`Comparison`."""

    metric: str
    mean_a: float | None
    mean_b: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_adjusted: float | None
    n_pairs: int
    significant: bool
    higher_is_better: bool
    n_ok_a: int
    n_ok_b: int
    n_undefined_a: int
    n_undefined_b: int
    n_error_a: int
    n_error_b: int
    n_regressed: int
    n_improved: int
    test: str

    @property
    def verdict(self) -> str:
        """``better`` / ``worse`` (significant, in the metric's direction) or ``no significant change``."""
        if not self.significant or self.delta is None:
            return "no significant change"
        good = (self.delta > 0) == self.higher_is_better
        return "better" if good else "worse"


@dataclass
class Comparison:
    """The paired comparison of run ``b`` against run ``a`` (deltas are ``b − a``)."""

    a: RunInfo
    b: RunInfo
    metrics: list[MetricComparison]
    regressions: list[dict[str, Any]]
    improvements: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    confidence: float = 0.95
    alpha: float = 0.05
    n_resamples: int = 10_000
    seed: int | None = 0
    test: str = "t"
    pairs: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict, repr=False)

    def __getitem__(self, metric: str) -> MetricComparison:
        for m in self.metrics:
            if m.metric == metric:
                return m
        raise KeyError(f"no metric {metric!r} in this comparison; it has {', '.join(self.metric_names) or 'none'}")

    def __contains__(self, metric: object) -> bool:
        return any(m.metric == metric for m in self.metrics)

    @property
    def metric_names(self) -> list[str]:
        return [m.metric for m in self.metrics]

    @property
    def any_significant(self) -> bool:
        return any(m.significant for m in self.metrics)

    def to_df(self) -> pd.DataFrame:
        """One row per metric: ``metric, mean_a, mean_b, delta, ci_low, ci_high, p_value, p_adjusted,
        n_pairs`` then ``significant, higher_is_better``, status counts, regression counts, ``test``."""
        require("pandas", extra="analysis", feature="Comparison.to_df()")
        import pandas as pd

        cols = list(COLUMNS) + list(EXTRA_COLUMNS)
        rows = [[getattr(m, c) for c in cols] for m in self.metrics]
        df = pd.DataFrame(rows, columns=cols)
        for c in ("mean_a", "mean_b", "delta", "ci_low", "ci_high", "p_value", "p_adjusted"):
            df[c] = df[c].astype("float64")
        return df

    def regressions_df(self, metric: str | None = None) -> pd.DataFrame:
        """Examples that got worse: example_id, metric, score_a, score_b, delta, status_a, status_b,
        reason_b, trace_id_a, trace_id_b — worst first."""
        require("pandas", extra="analysis", feature="Comparison.regressions_df()")
        import pandas as pd

        cols = ["example_id", "metric", "score_a", "score_b", "delta", "status_a", "status_b", "reason_b",
                "trace_id_a", "trace_id_b"]  # fmt: skip
        rows = [r for r in self.regressions if metric is None or r["metric"] == metric]
        return pd.DataFrame([[r.get(c) for c in cols] for r in rows], columns=cols)

    def improvements_df(self, metric: str | None = None) -> pd.DataFrame:
        """Examples that got better, best first (same columns as :meth:`regressions_df`)."""
        require("pandas", extra="analysis", feature="Comparison.improvements_df()")
        import pandas as pd

        cols = ["example_id", "metric", "score_a", "score_b", "delta", "status_a", "status_b", "reason_b",
                "trace_id_a", "trace_id_b"]  # fmt: skip
        rows = [r for r in self.improvements if metric is None or r["metric"] == metric]
        return pd.DataFrame([[r.get(c) for c in cols] for r in rows], columns=cols)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN written as null)."""

        def clean(v: Any) -> Any:
            if isinstance(v, float) and not math.isfinite(v):
                return None
            return v

        return {
            "a": {"run_id": self.a.run_id, "ref": self.a.ref, "dataset": self.a.dataset_name,
                  "dataset_version": self.a.dataset_version},
            "b": {"run_id": self.b.run_id, "ref": self.b.ref, "dataset": self.b.dataset_name,
                  "dataset_version": self.b.dataset_version},
            "confidence": self.confidence, "alpha": self.alpha, "n_resamples": self.n_resamples,
            "seed": self.seed, "test": self.test, "warnings": list(self.warnings),
            "metrics": [{k: clean(v) for k, v in m.__dict__.items()} | {"verdict": m.verdict} for m in self.metrics],
            "regressions": [{k: clean(v) for k, v in r.items()} for r in self.regressions],
            "improvements": [{k: clean(v) for k, v in r.items()} for r in self.improvements],
        }  # fmt: skip

    def table(self) -> Any:
        """A ``rich`` table of the comparison."""
        from rich.table import Table

        pct = round(self.confidence * 100)
        refs = f"{escape_markup(self.b.ref)} vs {escape_markup(self.a.ref)}"
        t = Table(title=f"{refs}  (delta = b − a, {pct}% paired bootstrap CI, Holm-adjusted)")
        for col, just in (("metric", "left"), ("a", "right"), ("b", "right"), ("delta", "right"),
                          (f"{pct}% CI", "right"), ("p", "right"), ("p adj", "right"), ("pairs", "right"),
                          ("verdict", "left")):  # fmt: skip
            t.add_column(col, justify=just)  # type: ignore[arg-type]
        for m in self.metrics:
            verdict = m.verdict
            style = {"better": "green", "worse": "red"}.get(verdict, "")
            t.add_row(
                escape_markup(m.metric), _fmt(m.mean_a), _fmt(m.mean_b), _fmt(m.delta, signed=True),
                "—" if m.ci_low is None or _nan(m.ci_low) else f"[{_fmt(m.ci_low, signed=True)}, {_fmt(m.ci_high, signed=True)}]",
                _fmt_p(m.p_value), _fmt_p(m.p_adjusted), str(m.n_pairs),
                f"[{style}]{verdict}[/{style}]" if style else f"[dim]{verdict}[/dim]",
            )  # fmt: skip
        return t

    def __rich__(self) -> Any:
        return self.table()

    def render(self, *, regressions: int = 10) -> str:
        """The table (and the worst regressions) as plain text."""
        import io

        from rich.console import Console

        buf = io.StringIO()
        console = Console(file=buf, width=140, force_terminal=False, color_system=None)
        self.print(console, regressions=regressions)
        return buf.getvalue()

    def print(self, console: Any = None, *, regressions: int = 10) -> None:
        """Print the table, warnings and the worst regressions to a rich console."""
        from rich.console import Console
        from rich.table import Table

        console = console or Console()
        for w in self.warnings:
            console.print(f"[yellow]warning:[/yellow] {escape_markup(w)}")
        console.print(self.table())
        if regressions and self.regressions:
            t = Table(
                title=f"Regressed examples (worst {min(regressions, len(self.regressions))} of {len(self.regressions)})"
            )
            for c in ("example", "metric", "a", "b", "delta", "trace (b)"):
                t.add_column(c)
            for r in self.regressions[:regressions]:
                b = _fmt(r["score_b"]) if r["status_b"] == "ok" else f"{r['status_b']}"
                t.add_row(escape_markup(r["example_id"]), escape_markup(r["metric"]), _fmt(r["score_a"]), b,
                          _fmt(r["delta"], signed=True), escape_markup(r["trace_id_b"] or "—"))  # fmt: skip
            console.print(t)

    def __repr__(self) -> str:
        verdicts = [m.verdict for m in self.metrics]
        better, worse = verdicts.count("better"), verdicts.count("worse")
        named = ", ".join(f"{m.metric} {m.delta:+.3g}" for m in self.metrics if m.significant and m.delta is not None)
        return (f"<Comparison {self.b.ref} vs {self.a.ref}: {len(self.metrics)} metrics, {better} better, "
                f"{worse} worse at {self.confidence:.0%}" + (f" ({named})" if named else "") + ">")  # fmt: skip

    def _repr_html_(self) -> str:
        try:
            from ragtrail.analysis import comparison_html

            return comparison_html(self.to_df(), title=f"{self.b.ref} vs {self.a.ref} (b − a)")
        except ImportError:  # no pandas: the text table
            import html

            return f"<pre>{html.escape(self.render())}</pre>"

    def __str__(self) -> str:
        return self.render()


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt(v: Any, *, signed: bool = False) -> str:
    if _nan(v):
        return "—"
    if v and abs(v) < 1e-3:  # tiny figures (per-example cost in USD) keep their digits
        return f"{v:+.3g}" if signed else f"{v:.3g}"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def _fmt_p(v: Any) -> str:
    if _nan(v):
        return "—"
    return "<0.0001" if v < 1e-4 else f"{v:.4f}"


# ---------------------------------------------------------------------------------- the function
def compare(
    store: Store,
    a: Any,
    b: Any,
    *,
    metrics: Iterable[str] | None = None,
    operational: bool = False,
    confidence: float = 0.95,
    alpha: float = 0.05,
    n_resamples: int = 10_000,
    seed: int | None = 0,
    test: str = "t",
    directions: Mapping[str, str] | None = None,
    allow_different: bool = False,
    tolerance: float = 0.0,
) -> Comparison:
    """Compare run ``b`` with run ``a`` (deltas are ``b − a``), pairing examples by dataset id.

    Args:
        a, b: run references (``rag-qa:v3``, ``rag-qa:production``, a run id) or Run objects.
        metrics: the metrics (scorer names) to compare; default: every scorer both runs have.
        operational: also compare per-example latency_ms, cost_usd, input_tokens and output_tokens.
        confidence: the bootstrap CI's level. alpha: the significance level for the adjusted p-values.
        n_resamples, seed: the paired bootstrap's resamples and seed (same seed → same CI).
        test: the paired test, ``"t"`` (default; tests the mean difference the CI is about) or
            ``"wilcoxon"`` (signed-rank).
        directions: ``{metric: "higher" | "lower"}``, which way is better (default: higher, except
            names with latency/cost/tokens/error…).
        allow_different: compare runs of different evaluations or datasets (an error otherwise).
        tolerance: an example counts as regressed when it is worse by more than this.

    Raises:
        EvalError: a run cannot be found (unknown alias, version or id), or the runs belong to
            different evaluations/datasets and ``allow_different`` is not set.
        ConfigError: a requested metric is not in both runs, or bad options.
    """
    if test not in TESTS:
        raise ConfigError(f"test must be one of {', '.join(TESTS)}, not {test!r}")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be between 0 and 1 (e.g. 0.95), not {confidence!r}")
    ra, rb = resolve_run(store, a), resolve_run(store, b)
    notes: list[str] = []
    if ra.name != rb.name:
        msg = (f"{ra.ref} and {rb.ref} are runs of different evaluations ({ra.name!r} vs {rb.name!r}); "
               "examples are paired by dataset id, which is only meaningful on the same dataset")  # fmt: skip
        if not allow_different:
            raise EvalError(msg + ". Pass allow_different=True (CLI: --allow-different) to compare them anyway.")
        notes.append(msg)
    if ra.dataset_name != rb.dataset_name:
        msg = f"{ra.ref} ran on dataset {ra.dataset_name!r} but {rb.ref} on {rb.dataset_name!r}"
        if not allow_different:
            raise EvalError(msg + "; pass allow_different=True (CLI: --allow-different) to pair their ids anyway.")
        notes.append(msg)
    scores_a, scores_b = load_scores(store, ra.run_id), load_scores(store, rb.run_id)
    ex_a, ex_b = load_examples(store, ra.run_id), load_examples(store, rb.run_id)
    ids_a = set(ex_a) | {e for cells in scores_a.values() for e in cells}
    ids_b = set(ex_b) | {e for cells in scores_b.values() for e in cells}
    shared = ids_a & ids_b
    if ra.dataset_version != rb.dataset_version and ra.dataset_name == rb.dataset_name:
        notes.append(
            f"dataset versions differ ({ra.dataset_name} {ra.dataset_version} in {ra.ref}, {rb.dataset_version} "
            f"in {rb.ref}): only the {len(shared)} example ids present in both runs are paired "
            f"({len(ids_a - shared)} only in a, {len(ids_b - shared)} only in b)"
        )
    elif ids_a != ids_b:
        notes.append(
            f"the runs scored different examples: pairing the {len(shared)} shared ids "
            f"({len(ids_a - shared)} only in {ra.ref}, {len(ids_b - shared)} only in {rb.ref})"
        )
    for note in notes:
        warnings.warn(note, RagtrailWarning, stacklevel=2)

    if metrics is None:
        names = sorted(set(scores_a) & set(scores_b))
        for only, run in ((set(scores_a) - set(scores_b), ra), (set(scores_b) - set(scores_a), rb)):
            if only:
                notes.append(f"metrics only in {run.ref} are not compared: {', '.join(sorted(only))}")
    else:
        names = list(dict.fromkeys(metrics))
        for m in names:
            missing = [r.ref for r, s in ((ra, scores_a), (rb, scores_b)) if m not in s]
            if missing and m not in OPERATIONAL:
                have = sorted(set(scores_a) & set(scores_b))
                raise ConfigError(
                    f"metric {m!r} is not in run {' and '.join(missing)}; metrics in both runs: "
                    f"{', '.join(have) or 'none'}"
                )
    cells: dict[str, tuple[dict[str, _Cell], dict[str, _Cell]]] = {
        m: (scores_a.get(m, {}), scores_b.get(m, {})) for m in names
    }
    if operational:
        for col in OPERATIONAL:
            if col in cells:
                continue
            ca, cb = _operational_cells(ex_a, col), _operational_cells(ex_b, col)
            if any(c.status == "ok" for c in ca.values()) or any(c.status == "ok" for c in cb.values()):
                cells[col] = (ca, cb)
    elif metrics is not None:
        for col in names:
            if col in OPERATIONAL and col not in scores_a:
                cells[col] = (_operational_cells(ex_a, col), _operational_cells(ex_b, col))

    rows: list[MetricComparison] = []
    regressions: list[dict[str, Any]] = []
    improvements: list[dict[str, Any]] = []
    pairs_out: dict[str, list[tuple[str, float, float]]] = {}
    for metric, (ca, cb) in cells.items():
        ids = sorted(shared & set(ca) & set(cb))
        pairs_out[metric] = [
            (e, float(ca[e].score), float(cb[e].score))  # type: ignore[arg-type]
            for e in ids
            if ca[e].status == "ok" and cb[e].status == "ok" and ca[e].score is not None and cb[e].score is not None
        ]
    # Metrics paired on the same examples share one bootstrap (the same resamples for all of them):
    # one pass instead of one per metric, and a joint resampling of the examples.
    groups: dict[tuple[str, ...], list[str]] = {}
    for metric, pf in pairs_out.items():
        if pf:
            groups.setdefault(tuple(p[0] for p in pf), []).append(metric)
    cis: dict[str, tuple[float, float]] = {}
    for members in groups.values():
        stacked = np.array([[p[2] - p[1] for p in pairs_out[m]] for m in members])
        lows, highs = bootstrap_ci_many(stacked, confidence=confidence, n_resamples=n_resamples, seed=seed)
        cis.update({m: (float(lo_), float(hi_)) for m, lo_, hi_ in zip(members, lows, highs, strict=True)})
    for metric, (ca, cb) in cells.items():
        hib = higher_is_better(metric, directions)
        ids = sorted(shared & set(ca) & set(cb))
        pairs_f = pairs_out[metric]
        va = np.array([p[1] for p in pairs_f])
        vb = np.array([p[2] for p in pairs_f])
        d = vb - va
        n = int(d.size)
        if n:
            lo, hi = cis[metric]
            mean_a, mean_b, delta = float(va.mean()), float(vb.mean()), float(d.mean())
        else:
            lo = hi = mean_a = mean_b = delta = float("nan")
        p = paired_p_value(d, test) if n >= 2 else float("nan")
        if n == 0:
            notes.append(f"{metric}: no example was scored ok in both runs; nothing to compare")
        elif n < 2:
            notes.append(f"{metric}: only {n} pair; no CI or p-value")
        n_reg = n_imp = 0
        for e in ids:
            xa, xb = ca[e], cb[e]
            rec = {"example_id": e, "metric": metric, "score_a": xa.score, "score_b": xb.score,
                   "status_a": xa.status, "status_b": xb.status, "reason_b": xb.reason,
                   "trace_id_a": xa.trace_id, "trace_id_b": xb.trace_id}  # fmt: skip
            if xa.status == "ok" and xb.status == "ok":
                diff = float(xb.score) - float(xa.score)  # type: ignore[arg-type]
                gain = diff if hib else -diff
                rec["delta"] = diff
                if gain < -tolerance:
                    regressions.append(rec)
                    n_reg += 1
                elif gain > tolerance:
                    improvements.append(rec)
                    n_imp += 1
            elif xa.status == "ok" and xb.status == "error":
                rec["delta"] = None  # it was scored, now it fails: a regression with no number
                regressions.append(rec)
                n_reg += 1
        rows.append(
            MetricComparison(
                metric=metric, mean_a=mean_a, mean_b=mean_b, delta=delta, ci_low=lo, ci_high=hi,
                p_value=p, p_adjusted=float("nan"), n_pairs=n, significant=False, higher_is_better=hib,
                n_ok_a=sum(c.status == "ok" for c in ca.values()), n_ok_b=sum(c.status == "ok" for c in cb.values()),
                n_undefined_a=sum(c.status == "undefined" for c in ca.values()),
                n_undefined_b=sum(c.status == "undefined" for c in cb.values()),
                n_error_a=sum(c.status == "error" for c in ca.values()),
                n_error_b=sum(c.status == "error" for c in cb.values()),
                n_regressed=n_reg, n_improved=n_imp, test=test,
            )
        )  # fmt: skip
    # Holm within two families: the quality metrics, and the operational ones (latency, cost, tokens), so
    # that comparing operational figures too never weakens the adjustment of the quality metrics
    for family in ([r for r in rows if r.metric not in OPERATIONAL], [r for r in rows if r.metric in OPERATIONAL]):
        adj = holm([r.p_value if r.p_value is not None else float("nan") for r in family])
        for r, pa in zip(family, adj, strict=True):
            r.p_adjusted = float(pa)
            excl0 = not _nan(r.ci_low) and (r.ci_low > 0 or r.ci_high < 0)  # type: ignore[operator]
            r.significant = bool(not math.isnan(pa) and pa < alpha and excl0)

    def worst_first(rec: dict[str, Any]) -> tuple[int, int, float]:
        # quality metrics before latency/cost/tokens (different scales), errors first, then the largest drop
        op = int(rec["metric"] in OPERATIONAL)
        d = rec.get("delta")
        if d is None:
            return (op, 0, 0.0)
        return (op, 1, d if higher_is_better(rec["metric"], directions) else -d)

    def best_first(rec: dict[str, Any]) -> tuple[int, float]:
        gain = rec["delta"] if higher_is_better(rec["metric"], directions) else -rec["delta"]
        return (int(rec["metric"] in OPERATIONAL), -gain)

    for rec in regressions:
        rec["change"] = "regressed"
    for rec in improvements:
        rec["change"] = "improved"
    regressions.sort(key=worst_first)
    improvements.sort(key=best_first)
    return Comparison(
        a=ra, b=rb, metrics=rows, regressions=regressions, improvements=improvements, warnings=notes,
        confidence=confidence, alpha=alpha, n_resamples=n_resamples, seed=seed, test=test, pairs=pairs_out,
    )  # fmt: skip


__all__ = [
    "COLUMNS",
    "OPERATIONAL",
    "Comparison",
    "MetricComparison",
    "RunInfo",
    "compare",
    "higher_is_better",
    "load_examples",
    "load_scores",
    "resolve_run",
]
