"""``ragtrail runs list|show`` (``compare``/``alias``/``promote`` are added by ``_runs_extra`` when present)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ragtrail.cli._common import StoreOpt, client

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
    """Runs, newest first: status, dataset, size, errors, the config keys that differ between the runs of an
    evaluation, latency, cost and metric means."""
    from datetime import datetime, timezone

    from rich.console import Console
    from rich.table import Table

    from ragtrail.evals._runs import list_runs

    runs = list_runs(client(store).store, name, limit=limit)
    metrics: list[str] = []
    for r in runs:
        metrics += [m for m in r.metrics if m not in metrics]
    differing = config_differences(runs)
    table = Table(title=f"{len(runs)} run(s)")
    for col in ("ref", "status", "created_at", "dataset", "dataset_version", "n_examples", "n_errors", "aliases"):
        table.add_column(col)
    table.add_column("config", min_width=min(60, max([6, *(len(v) for v in differing.values())])))
    with_sweep = any(r.sweep_id for r in runs)  # the id `ragtrail sweep --resume` takes
    for col in ("p50 ms", "cost", *(["sweep"] if with_sweep else []), *metrics):
        table.add_column(col, no_wrap=col == "sweep")
    for r in runs:
        s = r.summary
        created = datetime.fromtimestamp(r.created_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(
            r.ref, r.status, created, _fmt(r.dataset_name), _fmt(r.dataset_version), _fmt(s.get("n_examples")),
            _fmt(s.get("n_error")), ",".join(r.aliases()), differing.get(r.run_id, ""),
            _fmt((s.get("latency_ms") or {}).get("p50")), _fmt(s.get("cost_usd")),
            *([_fmt(r.sweep_id)] if with_sweep else []), *[_fmt(r.metrics.get(m)) for m in metrics],
        )  # fmt: skip
    Console(width=240).print(table)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="name:vN, name:alias (latest, production…) or a run id."),
    examples: bool = typer.Option(False, "--examples", "-e", help="Also print per-example scores."),
    text: bool = typer.Option(
        False, "--text", "-t", help="With --examples: also each example's input, reference and output."
    ),
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
        shown: set[str] = set()
        for r in run.results(with_text=text):
            if text and r["example_id"] not in shown:
                shown.add(r["example_id"])
                for key in ("input", "reference", "output"):
                    typer.echo(f"  {r['example_id']:<24}{key + ':':<11}{_clip(r[key])}")
            val = _fmt(r["score"]) if r["status"] == "ok" else r["status"]
            typer.echo(f"  {r['example_id']:<24}{r['scorer']:<24}{val:>10}  {r['reason'] or ''}")


def _clip(value: object, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


try:  # the runs/compare helper adds `runs compare|alias|promote` in its own module
    from ragtrail.cli import _runs_extra
except ModuleNotFoundError as _exc:
    if _exc.name != "ragtrail.cli._runs_extra":
        raise
else:
    _runs_extra.register(app)


def _flat(config: object, prefix: str = "") -> dict[str, object]:
    if not isinstance(config, dict) or not config:
        return {prefix: config} if prefix else {}
    out: dict[str, object] = {}
    for k, v in config.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_differences(runs: list) -> dict[str, str]:  # type: ignore[type-arg]
    """Per run id, ``key=value`` for the config keys (dotted when nested) whose values differ between the
    listed runs of the same evaluation; empty when an evaluation has one run or identical configs."""
    by_name: dict[str, list] = {}  # type: ignore[type-arg]
    for r in runs:
        by_name.setdefault(r.name, []).append(r)
    out: dict[str, str] = {}
    for group in by_name.values():
        flats = {r.run_id: _flat(r.config) for r in group}
        keys = sorted({k for f in flats.values() for k in f})
        differ = [
            k for k in keys if len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats.values()}) > 1
        ]
        for r in group:
            f = flats[r.run_id]
            out[r.run_id] = " ".join(f"{k}={json.dumps(f[k], default=str) if not isinstance(f[k], str) else f[k]}"
                                     for k in differ if k in f)  # fmt: skip
    return out
