"""``ragtrail report RUN [RUN…] -o report.html``: one self-contained HTML file.

The file works offline and makes no request (a Content-Security-Policy forbids any): the data is
embedded as JSON, the charts are drawn as inline SVG by embedded JavaScript, and the trace trees of
the examples shown are embedded too (each anchored as ``#trace-<trace_id>``).

Contents: a summary of every run (lineage, metric means with counts, latency, tokens, cost), and
for every run after the first its paired comparison with the first (forest plot of deltas with
CIs, table with Holm-adjusted p-values), per-metric means with CIs, latency ECDFs, a per-example
scatter (a vs b), and the per-example differences (worst regressions first) linking to the traces.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
import os
import re
import time
import warnings
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragtrail.evals import _needs_numpy  # noqa: F401  (numpy + scipy, or a one-line install hint)

# isort: split
import numpy as np

from ragtrail import semconv
from ragtrail._exceptions import ConfigError, RagtrailWarning
from ragtrail._text import escape_markup
from ragtrail.evals._compare import OPERATIONAL, Comparison, RunInfo, compare, load_examples, load_scores, resolve_run
from ragtrail.store import Store
from ragtrail.store import _evals as repo
from ragtrail.tracing import mask_value, message_text

if TYPE_CHECKING:
    from ragtrail.evals._gates import GateReport

_MAX_TEXT = 2000  # characters kept per embedded input/output


def _clean(v: Any) -> Any:
    """JSON-safe: NaN/inf → None, numpy scalars → Python."""
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def _short(v: Any, limit: int = _MAX_TEXT) -> str | None:
    if v is None:
        return None
    s = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return s if len(s) <= limit else s[:limit] + f"… [{len(s) - limit} more characters]"


def _mean_ci(vals: Sequence[float]) -> tuple[float | None, float | None, float | None, str | None]:
    """Mean and 95% interval inside the scores' range: Wilson for 0/1 scores, bootstrap percentile otherwise."""
    from ragtrail.evals._stats import mean_interval

    return mean_interval(list(vals), 0.95, seed=0)


def _run_block(store: Store, run: RunInfo) -> dict[str, Any]:
    scores = load_scores(store, run.run_id)
    examples = load_examples(store, run.run_id)
    metrics = []
    for name in sorted(scores):
        cells = scores[name].values()
        vals = [float(c.score) for c in cells if c.status == "ok" and c.score is not None]
        m, lo, hi, method = _mean_ci(vals)
        metrics.append({
            "metric": name, "mean": m, "ci_low": lo, "ci_high": hi, "ci_method": method, "n_ok": len(vals),
            "n_undefined": sum(c.status == "undefined" for c in cells), "n_error": sum(c.status == "error" for c in cells),
        })  # fmt: skip
    lat = sorted(float(r["latency_ms"]) for r in examples.values() if r.get("latency_ms") is not None)
    costs = [float(r["cost_usd"]) for r in examples.values() if r.get("cost_usd") is not None]
    return {
        "run_id": run.run_id, "ref": run.ref, "name": run.name, "version": run.version, "status": run.status,
        "created": dt.datetime.fromtimestamp(run.created_at, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "dataset": run.dataset_name, "dataset_version": run.dataset_version, "config": run.config,
        "config_hash": run.config_hash, "sweep_id": run.sweep_id, "metrics": metrics,
        "n_examples": len(examples) or len({e for per in scores.values() for e in per}),
        "n_pipeline_errors": sum(1 for r in examples.values() if r.get("status") == "error"),
        "latency": lat,
        "latency_p50": float(np.percentile(lat, 50)) if lat else None,
        "latency_p95": float(np.percentile(lat, 95)) if lat else None,
        "cost_usd": sum(costs) if costs else None, "cost_known": len(costs),
        "input_tokens": sum(int(r.get("input_tokens") or 0) for r in examples.values()),
        "output_tokens": sum(int(r.get("output_tokens") or 0) for r in examples.values()),
    }  # fmt: skip


def _comparison_block(cmp: Comparison, max_examples: int) -> dict[str, Any]:
    rows = []
    for m in cmp.metrics:
        rows.append({k: getattr(m, k) for k in ("metric", "mean_a", "mean_b", "delta", "ci_low", "ci_high", "p_value",
                                                "p_adjusted", "n_pairs", "significant", "higher_is_better",
                                                "n_regressed", "n_improved")} | {"verdict": m.verdict,
                     "operational": m.metric in OPERATIONAL})  # fmt: skip
    # per-example differences of the quality metrics (latency/cost/tokens are in the charts and tables)
    diffs = [d for d in cmp.regressions + cmp.improvements if d["metric"] not in OPERATIONAL][: max(0, max_examples)]
    scatter = {m: [[e, x, y] for e, x, y in pairs] for m, pairs in cmp.pairs.items() if m not in OPERATIONAL}
    return {
        "a": cmp.a.ref, "b": cmp.b.ref, "a_id": cmp.a.run_id, "b_id": cmp.b.run_id, "confidence": cmp.confidence,
        "test": cmp.test, "n_resamples": cmp.n_resamples, "seed": cmp.seed, "warnings": cmp.warnings,
        "metrics": rows, "diffs": diffs,
        "n_regressions": sum(1 for d in cmp.regressions if d["metric"] not in OPERATIONAL),
        "n_improvements": sum(1 for d in cmp.improvements if d["metric"] not in OPERATIONAL),
        "scatter": scatter,
    }  # fmt: skip


def _example_context(store: Store, runs: Sequence[RunInfo], example_ids: set[str]) -> dict[str, Any]:
    """Input/reference per example (from the dataset snapshot) and each run's output."""
    out: dict[str, Any] = {e: {"outputs": {}} for e in example_ids}
    if not example_ids:
        return out
    ids = sorted(example_ids)
    for run in runs:
        if run.dataset_name and run.dataset_version:
            for ex, data in repo.dataset_example_data(store, run.dataset_name, run.dataset_version, ids):
                if "input" in out[ex]:
                    continue
                try:
                    d = json.loads(data)
                except (TypeError, ValueError):
                    d = {}
                out[ex]["input"] = _short(d.get("input"))
                out[ex]["reference"] = _short(d.get("reference"))
        for r in repo.example_rows(store, run.run_id, ids):
            ex, output, error = r["example_id"], r["output"], r["error"]
            val: Any = output
            try:
                val = json.loads(output) if output else None
            except (TypeError, ValueError):
                pass
            out[ex]["outputs"][run.ref] = {"output": _short(val), "error": _short(error, 500)}
    return out


def _chat_text(msgs: list[dict[str, Any]]) -> str | None:
    """Chat messages (GenAI parts schema) as ``role: text`` lines, for a span without a plain input/output."""
    lines = [f"{m['role']}: {t}" for m in msgs if (t := message_text(m)) is not None]
    return "\n".join(lines) or None


def _traces(store: Store, trace_ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    from ragtrail.tracing._model import SpanRecord

    out: dict[str, list[dict[str, Any]]] = {}
    for row in repo.trace_span_rows(store, sorted({t for t in trace_ids if t})):
        s = SpanRecord.from_row(row)
        a = s.attributes
        out.setdefault(s.trace_id, []).append({
            "id": s.span_id, "parent": s.parent_span_id, "name": s.name, "kind": s.kind,
            "start_ns": s.start_time_ns, "ms": round(s.duration_ms, 3), "status": s.status,
            "status_message": s.status_message, "model": s.model, "in_tokens": s.input_tokens,
            "out_tokens": s.output_tokens, "cost": a.get(semconv.COST_USD),
            "input": _short(a.get(semconv.INPUT_VALUE) or _chat_text(s.input_messages()), 1000),
            "output": _short(a.get(semconv.OUTPUT_VALUE) or _chat_text(s.output_messages()), 1000),
            "docs": [{"id": d.get("id"), "score": d.get("score")} for d in s.documents()[:20]],
        })  # fmt: skip
    return out


def build_report(
    store: Store,
    runs: Sequence[Any],
    *,
    title: str | None = None,
    max_examples: int = 200,
    operational: bool = True,
    allow_different: bool = False,
    confidence: float = 0.95,
    seed: int | None = 0,
    n_resamples: int = 10_000,
) -> str:
    """The report's HTML text for ``runs`` (the first is the baseline every other run is compared with)."""
    if not runs:
        raise ConfigError(
            "a report needs at least one run: ragtrail report rag-qa:production rag-qa:latest -o report.html"
        )
    infos = [resolve_run(store, r) for r in runs]
    comparisons = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RagtrailWarning)  # kept in the comparison's warnings, shown in the report
        for other in infos[1:]:
            comparisons.append(compare(store, infos[0], other, operational=operational, allow_different=allow_different,
                                       confidence=confidence, seed=seed, n_resamples=n_resamples))  # fmt: skip
    comp_blocks = [_comparison_block(c, max_examples) for c in comparisons]
    shown = {d["example_id"] for c in comp_blocks for d in c["diffs"]}
    trace_ids = [d.get(k) for c in comp_blocks for d in c["diffs"] for k in ("trace_id_a", "trace_id_b")]
    if len(infos) == 1:  # a single run: its errored/undefined examples are the ones worth reading
        scores = load_scores(store, infos[0].run_id)
        bad = [(e, m, c) for m, per in scores.items() for e, c in per.items() if c.status != "ok"][:max_examples]
        shown |= {e for e, _, _ in bad}
        trace_ids += [c.trace_id for _, _, c in bad]
    labels: dict[str, str] = {}
    for c in comp_blocks:
        for d in c["diffs"]:
            for side, ref in (("trace_id_a", c["a"]), ("trace_id_b", c["b"])):
                if d.get(side):
                    labels.setdefault(d[side], f"{ref} · example {d['example_id']}")
    data = {
        "trace_labels": labels,
        "title": title or ("ragtrail report: " + " vs ".join(i.ref for i in infos)),
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "store": store.url,
        "runs": [_run_block(store, r) for r in infos],
        "comparisons": comp_blocks,
        "examples": _example_context(store, infos, shown),
        "traces": _traces(store, [t for t in trace_ids if t]),
        "version": _version(),
    }
    return render_html(_clean(data))


def _version() -> str:
    from ragtrail._version import __version__

    return str(__version__)


def _asset(name: str) -> str:
    return (resources.files("ragtrail.data") / "report" / name).read_text(encoding="utf-8")


_PLACEHOLDER = re.compile(r"\{\{title\}\}|/\*\{\{css\}\}\*/|/\*\{\{js\}\}\*/|\{\{data\}\}")


def render_html(data: dict[str, Any]) -> str:
    """The HTML page for the report data (JSON embedded safely in a script element).

    The data goes through the masking step (secrets, the ``mask`` hook) first, and the template's
    placeholders are substituted in one pass that never re-reads inserted text (a run named
    ``{{data}}`` stays a name)."""
    data = mask_value(data)
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    payload = payload.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    payload = payload.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    parts = {
        "{{title}}": html.escape(str(data.get("title", "ragtrail report"))),
        "/*{{css}}*/": _asset("report.css"),
        "/*{{js}}*/": _asset("report.js"),
        "{{data}}": payload,
    }
    return _PLACEHOLDER.sub(lambda m: parts[m.group(0)], _asset("report.html"))


def write_report(store: Store, runs: Sequence[Any], path: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Write :func:`build_report`'s HTML to ``path``; returns the path."""
    p = Path(path)
    text = build_report(store, runs, **kwargs)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p


__all__ = ["build_report", "render_html", "write_report"]


# ------------------------------------------------------------------------------------------ gates
def gates_junit_xml(report: GateReport) -> str:
    """JUnit XML: one test case per gate (failure/skipped elements), for CI test reporters."""
    return _junit(
        f"ragtrail gates: {report.run.ref}",
        [(r.gate.text, r.status, r.detail, r.observed) for r in report.results],
        {
            "run_id": report.run.run_id,
            "run": report.run.ref,
            "baseline": report.baseline.ref if report.baseline else "",
        },
    )


def gates_markdown(report: GateReport) -> str:
    """A Markdown summary (GitHub's job summary, a PR comment)."""
    icon = {"pass": "✅", "fail": "❌", "skipped": "⏭️"}
    head = "✅ passed" if report.passed else f"❌ {len(report.failed)} failed"
    base = f" vs `{report.baseline_ref}` (= `{report.baseline.ref}`)" if report.baseline else ""
    out = [f"## ragtrail gates: {head} — `{report.run.ref}`{base}", "",
           "| | gate | observed | detail |", "|---|---|---|---|"]  # fmt: skip
    for r in report.results:
        obs = "—" if r.observed is None else f"{r.observed:.4g}"
        out.append(f"| {icon[r.status]} | `{_md(r.gate.text)}` | {obs} | {_md(r.detail)} |")
    if report.comparison is not None and report.comparison.metrics:
        c = report.comparison
        pct = round(c.confidence * 100)
        out += ["", f"### `{c.b.ref}` vs `{c.a.ref}` (paired by example, delta = run − baseline)", "",
                f"| metric | baseline | run | delta | {pct}% CI | p (Holm) | pairs |", "|---|---|---|---|---|---|---|"]  # fmt: skip
        for m in c.metrics:
            out.append(
                f"| {_md(m.metric)} | {_num(m.mean_a)} | {_num(m.mean_b)} | {_num(m.delta, True)} | "
                f"[{_num(m.ci_low, True)}, {_num(m.ci_high, True)}] | {_num(m.p_adjusted)} | {m.n_pairs} |"
            )
    for n in report.notes:
        out += ["", f"> {_md(n)}"]
    return "\n".join(out) + "\n"


def gates_table(report: GateReport) -> Any:
    from rich.table import Table

    t = Table(
        title=f"Gates for {escape_markup(report.run.ref)}"
        + (f" (baseline {escape_markup(report.baseline.ref)})" if report.baseline else "")
    )
    for c in ("", "gate", "observed", "detail"):
        t.add_column(c)
    style = {"pass": "[green]PASS[/green]", "fail": "[red]FAIL[/red]", "skipped": "[dim]SKIP[/dim]"}
    for r in report.results:
        t.add_row(style[r.status], escape_markup(r.gate.text),
                  "—" if r.observed is None else f"{r.observed:.4g}", escape_markup(r.detail))  # fmt: skip
    return t


def print_gates(report: GateReport, console: Any = None) -> None:
    from rich.console import Console

    console = console or Console()
    for n in report.notes:
        console.print(f"[yellow]note:[/yellow] {escape_markup(n)}")
    console.print(gates_table(report))
    if report.comparison is not None and report.comparison.metrics:
        console.print(report.comparison.table())
    console.print(
        "[green]all gates passed[/green]" if report.passed else f"[red]{len(report.failed)} gate(s) failed[/red]"
    )


def _md(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _num(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:+.4f}" if signed else f"{v:.4f}"


def _junit(suite: str, cases: Sequence[tuple[str, str, str, float | None]], props: Mapping[str, str]) -> str:
    import xml.etree.ElementTree as ET

    failures = sum(1 for c in cases if c[1] == "fail")
    errors = sum(1 for c in cases if c[1] == "error")
    skipped = sum(1 for c in cases if c[1] == "skipped")
    root = ET.Element("testsuites", tests=str(len(cases)), failures=str(failures), errors=str(errors))
    ts = ET.SubElement(root, "testsuite", name=suite, tests=str(len(cases)), failures=str(failures),
                       errors=str(errors), skipped=str(skipped), timestamp=time.strftime("%Y-%m-%dT%H:%M:%S"))  # fmt: skip
    pe = ET.SubElement(ts, "properties")
    for k, v in props.items():
        ET.SubElement(pe, "property", name=k, value=str(v))
    for name, status, detail, observed in cases:
        tc = ET.SubElement(ts, "testcase", classname="ragtrail.gates", name=name, time="0")
        if status == "fail":
            ET.SubElement(tc, "failure", message=detail, type="GateFailed").text = detail
        elif status == "error":
            ET.SubElement(tc, "error", message=detail, type="GateError").text = detail
        elif status == "skipped":
            ET.SubElement(tc, "skipped", message=detail)
        if observed is not None:
            ET.SubElement(tc, "system-out").text = f"observed: {observed}"
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def error_junit_xml(message: str, suite: str = "ragtrail gates") -> str:
    """JUnit XML with one errored test case: written when the gates could not be evaluated."""
    return _junit(suite, [("gates", "error", message, None)], {})
