"""Small server-rendered SVG charts (no JavaScript, no inline styles: CSP-safe). Every text is escaped."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _markup(parts: Sequence[str]) -> Markup:
    """SVG built here: every stored text in it went through :func:`_e` (escaped) first."""
    return Markup("".join(parts))  # noqa: S704 - texts escaped by _e


def _num(v: float) -> str:
    return f"{v:.4g}"


def _ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def forest(rows: Sequence[dict[str, Any]], *, width: int = 640) -> Markup:
    """A forest plot: one line per metric, the delta as a dot with its CI, a zero line.

    rows: dicts with metric, delta, ci_low, ci_high, verdict.
    """
    rows = [r for r in rows if _ok(r.get("delta"))]
    if not rows:
        return _markup(['<p class="muted">No metric has a paired delta to plot.</p>'])
    lo = min(min(r["ci_low"] if _ok(r.get("ci_low")) else r["delta"], r["delta"], 0.0) for r in rows)
    hi = max(max(r["ci_high"] if _ok(r.get("ci_high")) else r["delta"], r["delta"], 0.0) for r in rows)
    if hi - lo < 1e-12:
        lo, hi = lo - 1, hi + 1
    pad = (hi - lo) * 0.05
    lo, hi = lo - pad, hi + pad
    label_w, row_h, top = 200, 24, 20
    plot_w = width - label_w - 20
    h = top + row_h * len(rows) + 20

    def x(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    parts = [
        f'<svg class="chart forest" role="img" aria-label="forest plot" viewBox="0 0 {width} {h}" '
        f'width="{width}" height="{h}" xmlns="http://www.w3.org/2000/svg">',
        f'<line class="zero" x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 10}" y2="{h - 15}"/>',
        f'<text class="axis" x="{label_w}" y="{h - 2}">{_num(lo)}</text>',
        f'<text class="axis" x="{width - 20}" y="{h - 2}" text-anchor="end">{_num(hi)}</text>',
    ]
    for i, r in enumerate(rows):
        y = top + i * row_h + row_h / 2
        cls = {"better": "better", "worse": "worse"}.get(str(r.get("verdict")), "same")
        parts.append(
            f'<text class="label" x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end">{_e(r["metric"])}</text>'
        )
        if _ok(r.get("ci_low")) and _ok(r.get("ci_high")):
            parts.append(
                f'<line class="ci {cls}" x1="{x(r["ci_low"]):.1f}" x2="{x(r["ci_high"]):.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'
            )
        parts.append(
            f'<circle class="pt {cls}" cx="{x(r["delta"]):.1f}" cy="{y:.1f}" r="5">'
            f"<title>{_e(r['metric'])}: {_num(r['delta'])}</title></circle>"
        )
    parts.append("</svg>")
    return _markup(parts)


def series(points: Sequence[dict[str, Any]], *, title: str, width: int = 300, height: int = 140) -> Markup:
    """A metric across versions: dots with CI whiskers, joined by a line. points: label, mean, ci_low, ci_high."""
    pts = [p for p in points if _ok(p.get("mean"))]
    if not pts:
        return Markup("")
    vals = [p["mean"] for p in pts] + [p[k] for p in pts for k in ("ci_low", "ci_high") if _ok(p.get(k))]
    lo, hi = min(vals), max(vals)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    left, right, top, bottom = 52, 10, 22, 22
    pw, ph = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (pw * (i + 0.5) / len(pts))

    def y(v: float) -> float:
        return top + ph - (v - lo) / (hi - lo) * ph

    parts = [
        f'<svg class="chart series" role="img" aria-label="{_e(title)}" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        f'<text class="title" x="{left}" y="14">{_e(title)}</text>',
        f'<text class="axis" x="{left - 4}" y="{y(hi) + 4:.1f}" text-anchor="end">{_num(hi)}</text>',
        f'<text class="axis" x="{left - 4}" y="{y(lo):.1f}" text-anchor="end">{_num(lo)}</text>',
    ]
    line = " ".join(f"{x(i):.1f},{y(p['mean']):.1f}" for i, p in enumerate(pts))
    parts.append(f'<polyline class="trend" points="{line}"/>')
    for i, p in enumerate(pts):
        if _ok(p.get("ci_low")) and _ok(p.get("ci_high")):
            parts.append(
                f'<line class="ci" x1="{x(i):.1f}" x2="{x(i):.1f}" y1="{y(p["ci_low"]):.1f}" y2="{y(p["ci_high"]):.1f}"/>'
            )
        parts.append(
            f'<circle class="pt" cx="{x(i):.1f}" cy="{y(p["mean"]):.1f}" r="3.5"><title>{_e(p["label"])}: '
            f"{_num(p['mean'])}</title></circle>"
        )
        parts.append(f'<text class="axis" x="{x(i):.1f}" y="{height - 6}" text-anchor="middle">{_e(p["label"])}</text>')
    parts.append("</svg>")
    return _markup(parts)


def bars(items: Sequence[tuple[str, float]], *, title: str, width: int = 420, fmt: str = "{:.4g}") -> Markup:
    """Horizontal bars: (label, value) pairs."""
    items = [(str(k), float(v)) for k, v in items if _ok(v)]
    if not items:
        return _markup([f'<p class="muted">{_e(title)}: no data.</p>'])
    top_v = max(v for _, v in items) or 1.0
    label_w, row_h = 160, 20
    h = 24 + row_h * len(items)
    parts = [
        f'<svg class="chart bars" role="img" aria-label="{_e(title)}" viewBox="0 0 {width} {h}" width="{width}" '
        f'height="{h}" xmlns="http://www.w3.org/2000/svg"><text class="title" x="0" y="14">{_e(title)}</text>'
    ]
    for i, (k, v) in enumerate(items):
        yy = 22 + i * row_h
        w = max(1.0, (width - label_w - 70) * v / top_v)
        parts.append(f'<text class="label" x="{label_w - 6}" y="{yy + 13}" text-anchor="end">{_e(k[:28])}</text>')
        parts.append(f'<rect class="bar" x="{label_w}" y="{yy + 2}" width="{w:.1f}" height="{row_h - 6}"/>')
        parts.append(f'<text class="axis" x="{label_w + w + 4:.1f}" y="{yy + 13}">{_e(fmt.format(v))}</text>')
    parts.append("</svg>")
    return _markup(parts)
