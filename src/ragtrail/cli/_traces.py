"""``ragtrail traces list|show|export|reprice``."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ragtrail._exceptions import ConfigError
from ragtrail.cli._common import StoreOpt, client, escape_markup, strip_control

app = typer.Typer(help="List, show, export and reprice traces.", no_args_is_help=True)


@app.command("list")
def list_(
    project: Optional[str] = typer.Option(None, "--project", "-p", help="Only this project."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many traces (newest first)."),
    since: Optional[str] = typer.Option(
        None, "--since", help="Only traces started at or after this ISO time (UTC if no zone)."
    ),
    store: Optional[str] = StoreOpt,
) -> None:
    """The newest traces: id, root span, start, duration, spans, errors, tokens, cost."""
    from datetime import datetime, timezone

    from rich.console import Console
    from rich.table import Table

    c = client(store)
    rows = c.trace_summaries(project=project, start=_utc(since), limit=limit)
    if project is not None and not rows:
        known = c.store.info().get("projects") or []
        if project not in known:
            names = ", ".join(escape_markup(p) for p in known) or "none yet"
            raise ConfigError(f"no project {project!r} in the store {c.store.url}; projects: {names}")
    table = Table(title=f"{len(rows)} trace(s)")
    for col in ("trace_id", "root", "start (UTC)", "duration", "spans", "errors", "tokens in→out", "cost"):
        table.add_column(col)
    for r in rows:
        cost = "-" if r["cost_usd"] is None else f"${r['cost_usd']:.6f}"
        tokens = "–" if r["input_tokens"] is None and r["output_tokens"] is None else (
            f"{r['input_tokens'] or 0}→{r['output_tokens'] or 0}")  # fmt: skip
        started = datetime.fromtimestamp(r["start_time_ns"] / 1e9, tz=timezone.utc)
        table.add_row(
            escape_markup(str(r["trace_id"])), escape_markup(str(r["root_name"])), started.strftime("%Y-%m-%d %H:%M:%S"),
            f"{r['duration_ms']:.1f} ms", str(r["n_spans"]), str(r["n_errors"]), tokens, cost,
        )  # fmt: skip
    Console(width=200).print(table)


def _utc(text: Optional[str]) -> Optional[str]:
    """ISO time without a zone means UTC (what `traces list` prints)."""
    if text is None:
        return None
    from datetime import datetime, timezone

    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError(f"--since {text!r} is not an ISO time such as 2026-11-29T12:00:00") from exc
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).isoformat()


@app.command("show")
def show(
    trace_id: str = typer.Argument(..., help="Trace id (or a unique prefix of 8+ hex digits)."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the spans as JSON."),
) -> None:
    """An indented span tree with durations, tokens and cost."""
    tr = client(store).trace(trace_id)
    if as_json:
        typer.echo(json.dumps([s.__dict__ for s in tr.spans], default=str, indent=2))
        return
    typer.echo(strip_control(f"trace {tr.trace_id}  {len(tr)} spans  {tr.duration_ms:.1f} ms"
               + (f"  ${tr.cost_usd:.6f}" if tr.cost_usd is not None else "")))  # fmt: skip
    typer.echo(strip_control(tr.to_text()))


@app.command("export")
def export(
    output: str = typer.Option(..., "--output", "-o", help="File to write."),
    fmt: str = typer.Option("jsonl", "--format", "-f", help="jsonl or parquet."),
    project: Optional[str] = typer.Option(None, "--project", "-p", help="Only this project."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Export spans (one per line/row, attributes included) to JSONL or Parquet."""
    from ragtrail.analysis._export import export_spans

    if fmt not in ("jsonl", "parquet"):
        raise ConfigError(f"--format must be jsonl or parquet, not {fmt!r}")
    import os

    parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise ConfigError(
            f"--output {output!r}: the directory {parent!r} does not exist; create it or pick another path"
        )
    n = export_spans(client(store), output, fmt=fmt, project=project)
    typer.echo(f"wrote {n} spans to {output}")


@app.command("reprice")
def reprice(
    prices: Optional[str] = typer.Option(None, "--prices", help="A JSON price file overriding the built-in table."),
    project: Optional[str] = typer.Option(None, "--project", "-p", help="Only this project."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Recompute the cost of stored spans from the current price table."""
    n = client(store).reprice(project=project, prices=prices)
    typer.echo(f"repriced {n} span(s)")
