"""Notebook analysis: DataFrame summaries and matplotlib plots over traces and runs.

Everything takes the DataFrames the :class:`ragtrail.Client` returns (``spans_df``, ``traces_df``,
``run.results_df()``, ``comparison.to_df()``), so it works the same on live and stored data::

    from ragtrail import analysis
    spans = client.spans_df(project="support-bot")
    analysis.latency_by_kind(spans)          # where the time goes, by span kind (self time)
    analysis.cost_by_model(spans)            # calls, tokens and cost per model
    analysis.plot_latency_by_kind(spans)     # a labelled bar chart

pandas and matplotlib are imported when a function is called, never by ``import ragtrail``.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from ragtrail.tracing._model import KIND_COLORS as _KIND_COLORS
from ragtrail.tracing._model import trace_html

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

    from ragtrail.tracing._model import Trace

__all__ = [
    "comparison_html",
    "cost_by_model",
    "cost_by_trace",
    "error_traces",
    "latency_by_kind",
    "plot_latency_by_kind",
    "plot_run_vs_run",
    "plot_score_distributions",
    "plot_trace_waterfall",
    "run_html",
    "score_distributions",
    "self_time",
    "slowest_traces",
    "trace_html",
]


def _pd() -> Any:
    from ragtrail._deps import require

    return require("pandas", extra="analysis")


def _plt() -> Any:
    from ragtrail._deps import require

    require("matplotlib", extra="analysis")
    import matplotlib.pyplot as plt

    return plt


def self_time(spans: pd.DataFrame) -> pd.Series:
    """Each span's self time in ms: its duration minus the time covered by its direct children
    (clamped at 0; overlapping parallel children are not double-counted beyond the parent)."""
    pd = _pd()
    child = spans.dropna(subset=["parent_span_id"]).groupby(["trace_id", "parent_span_id"])["duration_ms"].sum()
    key = pd.MultiIndex.from_arrays([spans["trace_id"], spans["span_id"]])
    covered = child.reindex(key).fillna(0.0).to_numpy()
    return (spans["duration_ms"] - covered).clip(lower=0.0).rename("self_ms")


def latency_by_kind(spans: pd.DataFrame) -> pd.DataFrame:
    """Latency breakdown by span kind: spans, total/mean/p50/p95 duration (ms), self time (ms) and
    its share of all self time. Self time attributes each millisecond to exactly one span."""
    pd = _pd()
    if spans.empty:
        return pd.DataFrame(
            columns=["kind", "spans", "total_ms", "mean_ms", "p50_ms", "p95_ms", "self_ms", "self_share"]
        )
    df = spans.assign(self_ms=self_time(spans).to_numpy(), kind=spans["kind"].fillna("UNKNOWN"))
    g = df.groupby("kind")
    out = pd.DataFrame(
        {
            "spans": g.size(),
            "total_ms": g["duration_ms"].sum(),
            "mean_ms": g["duration_ms"].mean(),
            "p50_ms": g["duration_ms"].quantile(0.5),
            "p95_ms": g["duration_ms"].quantile(0.95),
            "self_ms": g["self_ms"].sum(),
        }
    )
    total = out["self_ms"].sum()
    out["self_share"] = out["self_ms"] / total if total else 0.0
    return out.sort_values("self_ms", ascending=False).reset_index()


def cost_by_model(spans: pd.DataFrame) -> pd.DataFrame:
    """Per model: calls, input/output tokens, cost (USD; NaN when no price is known), mean latency."""
    pd = _pd()
    df = spans[spans["model"].notna()]
    if df.empty:
        return pd.DataFrame(columns=["model", "calls", "input_tokens", "output_tokens", "cost_usd", "mean_ms"])
    g = df.groupby("model")
    out = pd.DataFrame(
        {
            "calls": g.size(),
            "input_tokens": g["input_tokens"].sum(min_count=1),
            "output_tokens": g["output_tokens"].sum(min_count=1),
            "cost_usd": g["cost_usd"].sum(min_count=1),
            "mean_ms": g["duration_ms"].mean(),
        }
    )
    return out.sort_values("calls", ascending=False).reset_index()


def cost_by_trace(spans: pd.DataFrame) -> pd.DataFrame:
    """Per trace: root span name, duration (ms), LLM calls, tokens and cost (USD)."""
    pd = _pd()
    if spans.empty:
        return pd.DataFrame(
            columns=["trace_id", "root", "duration_ms", "llm_calls", "input_tokens", "output_tokens", "cost_usd"]
        )
    g = spans.groupby("trace_id")
    roots = spans[spans["parent_span_id"].isna()].drop_duplicates("trace_id").set_index("trace_id")["name"]
    out = pd.DataFrame(
        {
            "root": roots.reindex(g.size().index),
            "duration_ms": (g["end_time"].max() - g["start_time"].min()).dt.total_seconds() * 1000.0,
            "llm_calls": g["kind"].apply(lambda k: int((k == "LLM").sum())),
            "input_tokens": g["input_tokens"].sum(min_count=1),
            "output_tokens": g["output_tokens"].sum(min_count=1),
            "cost_usd": g["cost_usd"].sum(min_count=1),
        }
    )
    return out.sort_values("duration_ms", ascending=False).reset_index()


def slowest_traces(spans: pd.DataFrame, n: int = 10) -> pd.DataFrame:
    """The ``n`` slowest traces with their slowest span (the usual culprit)."""
    per = cost_by_trace(spans).head(n)
    if per.empty:
        return per
    nonroot = spans[spans["parent_span_id"].notna()]
    worst = nonroot.sort_values("duration_ms", ascending=False).drop_duplicates("trace_id").set_index("trace_id")
    per["slowest_span"] = per["trace_id"].map(worst["name"])
    per["slowest_span_ms"] = per["trace_id"].map(worst["duration_ms"])
    return per


def error_traces(spans: pd.DataFrame) -> pd.DataFrame:
    """Traces with at least one failed span: the failing span, its kind and the error message."""
    pd = _pd()
    errs = spans[spans["status"] == "ERROR"]
    if errs.empty:
        return pd.DataFrame(columns=["trace_id", "span", "kind", "error", "start_time"])
    first = errs.sort_values("start_time").drop_duplicates("trace_id")
    msgs = [(a or {}).get("error.type", "") if isinstance(a, dict) else "" for a in first["attributes"]]
    return pd.DataFrame(
        {
            "trace_id": first["trace_id"].to_numpy(),
            "span": first["name"].to_numpy(),
            "kind": first["kind"].to_numpy(),
            "error": msgs,
            "start_time": first["start_time"].to_numpy(),
        }
    )


def score_distributions(results: pd.DataFrame) -> pd.DataFrame:
    """Per scorer: ok/undefined/error counts and the mean, std, min, quartiles and max of ok scores."""
    pd = _pd()
    rows = []
    for scorer, g in results.groupby("scorer"):
        ok = g.loc[g["status"] == "ok", "score"].astype(float)
        rows.append(
            {
                "scorer": scorer,
                "n_ok": int((g["status"] == "ok").sum()),
                "n_undefined": int((g["status"] == "undefined").sum()),
                "n_error": int((g["status"] == "error").sum()),
                "mean": ok.mean() if len(ok) else None,
                "std": ok.std() if len(ok) > 1 else None,
                "min": ok.min() if len(ok) else None,
                "p25": ok.quantile(0.25) if len(ok) else None,
                "median": ok.median() if len(ok) else None,
                "p75": ok.quantile(0.75) if len(ok) else None,
                "max": ok.max() if len(ok) else None,
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------- plots
def plot_latency_by_kind(spans: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Horizontal bars of self time (ms) per span kind."""
    plt = _plt()
    data = latency_by_kind(spans)
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(data))))
    ax.barh(data["kind"], data["self_ms"], color="#4C72B0")
    for y, (v, share) in enumerate(zip(data["self_ms"], data["self_share"], strict=False)):
        ax.text(v, y, f" {v:,.0f} ms ({share:.0%})", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("self time (ms, summed over spans)")
    ax.set_title("Where the time goes, by span kind")
    return ax


def plot_score_distributions(results: pd.DataFrame, ax: Axes | None = None, bins: int = 10) -> Axes:
    """Histograms of ok scores, one per scorer, overlaid (scores are expected in [0, 1])."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for scorer, g in results[results["status"] == "ok"].groupby("scorer"):
        ax.hist(g["score"].astype(float), bins=bins, range=(0, 1), alpha=0.45, label=str(scorer))
    ax.set_xlabel("score (ok scores only)")
    ax.set_ylabel("examples")
    ax.set_title("Score distributions")
    ax.legend(fontsize=8)
    return ax


def plot_run_vs_run(comparison: Any, ax: Axes | None = None) -> Axes:
    """Forest plot of per-metric deltas (run b − run a) with their 95% CIs; a dashed line at 0.

    Accepts a Comparison or its ``to_df()``.
    """
    plt = _plt()
    df = comparison.to_df() if hasattr(comparison, "to_df") else comparison
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.6 + 0.45 * max(1, len(df))))
    y = list(range(len(df)))
    err_lo = (df["delta"] - df["ci_low"]).clip(lower=0)
    err_hi = (df["ci_high"] - df["delta"]).clip(lower=0)
    colors = [
        "#2a9d4b" if lo > 0 else "#c0392b" if hi < 0 else "#777777"
        for lo, hi in zip(df["ci_low"], df["ci_high"], strict=False)
    ]
    for yi, d, lo, hi, c in zip(y, df["delta"], err_lo, err_hi, colors, strict=False):
        ax.errorbar([d], [yi], xerr=[[lo], [hi]], fmt="none", ecolor=c, capsize=3)
    ax.scatter(df["delta"], y, c=colors, zorder=3)
    ax.axvline(0, ls="--", color="black", lw=0.8)
    ax.set_yticks(y, [str(m) for m in df["metric"]])
    ax.invert_yaxis()
    ax.set_xlabel("delta (b − a) with 95% bootstrap CI")
    ax.set_title("Run vs run: green = better, red = worse, grey = not distinguishable")
    return ax


def plot_trace_waterfall(trace: Trace, ax: Axes | None = None) -> Axes:
    """A waterfall of a trace's spans (bars from start to end, indented by depth)."""
    plt = _plt()
    rows = list(trace.walk())
    if ax is None:
        _, ax = plt.subplots(figsize=(8, 0.5 + 0.35 * max(1, len(rows))))
    t0 = min((s.start_time_ns for _, s in rows), default=0)
    for i, (depth, s) in enumerate(rows):
        ax.barh(i, s.duration_ms, left=(s.start_time_ns - t0) / 1e6, color=_KIND_COLORS.get(s.kind or "", "#999999"))
        ax.text(0, i, "  " * depth + s.name, va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_yticks([])
    ax.set_xlabel("ms since trace start")
    ax.set_title(f"Trace {trace.trace_id[:12]}…")
    return ax


# -------------------------------------------------------------------------------------------- HTML
def run_html(name: str, summary: dict[str, Any]) -> str:
    """HTML table of a run's summary metrics (used by ``Run._repr_html_``)."""
    metrics = summary.get("metrics", summary)
    rows = []
    for metric, m in metrics.items():
        if not isinstance(m, dict):
            continue
        mean = m.get("mean")
        rows.append(
            f"<tr><td>{html.escape(str(metric))}</td><td>{'—' if mean is None else f'{mean:.4f}'}</td>"
            f"<td>{m.get('n_ok', m.get('ok', ''))}</td><td>{m.get('n_undefined', m.get('undefined', ''))}</td>"
            f"<td>{m.get('n_error', m.get('error', ''))}</td></tr>"
        )
    return (
        f"<div style='font-family:sans-serif;font-size:12px'><b>{html.escape(name)}</b>"
        "<table><tr><th>metric</th><th>mean</th><th>ok</th><th>undefined</th><th>error</th></tr>"
        + "".join(rows)
        + "</table></div>"
    )


def comparison_html(df: pd.DataFrame, title: str = "Comparison (b − a)") -> str:
    """HTML table of a comparison with CIs, significant deltas coloured (used by ``Comparison._repr_html_``)."""
    rows = []
    for r in df.itertuples():
        sig = r.ci_low > 0 or r.ci_high < 0
        color = ("#2a9d4b" if r.delta > 0 else "#c0392b") if sig else "#555"
        rows.append(
            f"<tr><td>{html.escape(str(r.metric))}</td><td>{r.mean_a:.4f}</td><td>{r.mean_b:.4f}</td>"
            f"<td style='color:{color};font-weight:bold'>{r.delta:+.4f}</td>"
            f"<td>[{r.ci_low:+.4f}, {r.ci_high:+.4f}]</td><td>{r.p_value:.3g}</td><td>{r.p_adjusted:.3g}</td>"
            f"<td>{r.n_pairs}</td></tr>"
        )
    return (
        f"<div style='font-family:sans-serif;font-size:12px'><b>{html.escape(title)}</b><table>"
        "<tr><th>metric</th><th>mean a</th><th>mean b</th><th>delta</th><th>95% CI</th><th>p</th>"
        "<th>p (Holm)</th><th>pairs</th></tr>" + "".join(rows) + "</table></div>"
    )
