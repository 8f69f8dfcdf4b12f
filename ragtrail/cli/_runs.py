"""``ragtrail runs list|show`` (``compare``/``alias``/``promote`` are added by ``_runs_extra`` when present)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ragtrail.cli._common import StoreOpt, client, escape_markup

app = typer.Typer(help="List and show versioned eval runs.", no_args_is_help=True)


def _fmt(v: object) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


@app.command("list")
def list_(
    name: Optional[str] = typer.Argument(None, help="Only runs of this evaluation."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many runs (newest first)."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Runs, newest first, with status, dataset, size, errors and metric means."""
    from rich.console import Console
    from rich.table import Table

    df = client(store).runs_df(name).head(limit)
    base = ["ref", "status", "created_at", "dataset", "dataset_version", "n_examples", "n_errors", "aliases"]
    metrics = [c for c in df.columns if c not in {
        "run_id", "name", "version", "ref", "status", "created_at", "finished_at", "dataset", "dataset_version",
        "config_hash", "n_examples", "n_errors", "latency_p50_ms", "latency_p95_ms", "cost_usd", "aliases"}]  # fmt: skip
    table = Table(title=f"{len(df)} run(s)")
    for col in (*base, "p50 ms", "cost", *metrics):
        table.add_column(escape_markup(col))
    for _, r in df.iterrows():
        table.add_row(*map(escape_markup, (
            r["ref"], r["status"], r["created_at"].strftime("%Y-%m-%d %H:%M:%S"), _fmt(r["dataset"]),
            _fmt(r["dataset_version"]), _fmt(r["n_examples"]), _fmt(r["n_errors"]), ",".join(r["aliases"]),
            _fmt(r["latency_p50_ms"]), _fmt(r["cost_usd"]), *[_fmt(r[m]) for m in metrics],
        )))  # fmt: skip
    Console(width=240).print(table)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="name:vN, name:alias (latest, production…) or a run id."),
    examples: bool = typer.Option(False, "--examples", "-e", help="Also print per-example scores."),
    as_json: bool = typer.Option(False, "--json", help="Print the run (lineage and summary) as JSON."),
    store: Optional[str] = StoreOpt,
) -> None:
    """A run's lineage and summary: metric means with ok/undefined/error counts, latency, tokens, cost."""
    run = client(store).run(ref)
    if as_json:
        typer.echo(json.dumps({
            "run_id": run.run_id, "ref": run.ref, "status": run.status, "created_at": run.created_at,
            "finished_at": run.finished_at, "dataset": run.dataset_name, "dataset_version": run.dataset_version,
            "config": run.config, "config_hash": run.config_hash, "lineage": run.lineage, "summary": run.summary,
            "source_run_id": run.source_run_id, "aliases": run.aliases(),
        }, indent=2, default=str))  # fmt: skip
        return
    s = run.summary
    lin = run.lineage
    git = lin.get("git") or {}
    typer.echo(f"{run.ref}  ({run.run_id})  status={run.status}  aliases={','.join(run.aliases()) or '-'}")
    typer.echo(
        f"dataset  {run.dataset_name}:{run.dataset_version}   config {json.dumps(run.config)} (hash {run.config_hash})"
    )
    typer.echo(
        f"git      {git.get('commit') or '-'}{' (dirty)' if git.get('dirty') else ''}   pipeline {lin.get('pipeline') or '-'}"
    )
    if run.source_run_id:
        typer.echo(f"source   {run.source_run_id}")
    if s.get("stopped_reason"):
        typer.echo(f"stopped  {s['stopped_reason']}")
    lat = s.get("latency_ms") or {}
    typer.echo(f"examples {s.get('n_examples', 0)} ({s.get('n_error', 0)} errors)   latency p50 {_fmt(lat.get('p50'))} ms, "
               f"p95 {_fmt(lat.get('p95'))} ms   tokens {(s.get('tokens') or {}).get('input', 0)}→"
               f"{(s.get('tokens') or {}).get('output', 0)}   cost {_fmt(s.get('cost_usd'))}")  # fmt: skip
    typer.echo("")
    typer.echo(f"{'metric':<28}{'mean':>10}{'ok':>7}{'undef':>7}{'error':>7}")
    for m, v in (s.get("metrics") or {}).items():
        typer.echo(
            f"{m:<28}{_fmt(v.get('mean')):>10}{v.get('n_ok', 0):>7}{v.get('n_undefined', 0):>7}{v.get('n_error', 0):>7}"
        )
    if examples:
        typer.echo("")
        for r in run.results():
            val = _fmt(r["score"]) if r["status"] == "ok" else r["status"]
            typer.echo(f"  {r['example_id']:<24}{r['scorer']:<24}{val:>10}  {r['reason'] or ''}")


try:  # the runs/compare helper adds `runs compare|alias|promote` in its own module
    from ragtrail.cli import _runs_extra
except ModuleNotFoundError as _exc:
    if _exc.name != "ragtrail.cli._runs_extra":
        raise
else:
    _runs_extra.register(app)
