"""``ragtrail store info`` and ``ragtrail store prune``."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ragtrail.cli._common import StoreOpt, client

app = typer.Typer(help="Inspect the store.", no_args_is_help=True)


@app.command("info")
def info(store: Optional[str] = StoreOpt, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Where the store is, its schema version and what it holds.

    Also the size by project and age (spans, traces, payload bytes; <1d, 1-7d, 7-30d, 30-90d, >90d)."""
    from ragtrail.store._retention import size_by_project_age, store_bytes

    c = client(store)
    data = c.info()
    data["store_bytes"] = store_bytes(c.store)
    by_age = size_by_project_age(c.store)
    if as_json:
        typer.echo(json.dumps({**data, "by_project_age": by_age}, indent=2))
        return
    for k, v in data.items():
        typer.echo(f"{k:16} {', '.join(map(str, v)) if isinstance(v, list) else v}")
    if by_age:
        typer.echo(f"\n{'project':24} {'age':>7} {'traces':>10} {'spans':>10} {'payload MB':>11}")
        for r in by_age:
            typer.echo(f"{r['project'][:24]:24} {r['age']:>7} {r['traces']:>10} {r['spans']:>10} "
                       f"{r['payload_bytes'] / 1e6:>11.1f}")  # fmt: skip


@app.command("prune")
def prune(
    older_than: str = typer.Option(..., "--older-than", help="Delete traces older than this: 30d, 12h, 2w…"),
    project: Optional[str] = typer.Option(None, "--project", "-p", help="Only traces of this project."),
    keep_eval_runs: bool = typer.Option(
        False, "--keep-eval-runs", help="With --delete-referenced: still keep the traces of eval runs."
    ),
    delete_referenced: bool = typer.Option(
        False, "--delete-referenced", help="Also delete traces that runs, datasets or feedback refer to."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would be deleted; delete nothing."),
    vacuum: bool = typer.Option(
        False, "--vacuum", help="Give the space back afterwards (SQLite VACUUM locks writers)."
    ),
    batch: int = typer.Option(100, "--batch", help="Traces per delete transaction."),
    store: Optional[str] = StoreOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Delete old traces in small batches (writers keep going); referenced traces are kept unless asked."""
    from ragtrail.store._retention import prune as _prune

    r = _prune(client(store).store, older_than, project=project, delete_referenced=delete_referenced,
               keep_eval_runs=keep_eval_runs or not delete_referenced, dry_run=dry_run, vacuum=vacuum,
               batch_traces=batch)  # fmt: skip
    if as_json:
        typer.echo(json.dumps(r.as_dict(), indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"{verb} {r.traces_deleted} traces ({r.spans_deleted} spans, {r.feedback_deleted} feedback rows) "
               f"in {r.seconds:.1f} s; kept {r.traces_kept_referenced} old traces that runs, datasets or feedback "
               "refer to")  # fmt: skip
    if r.partitions_dropped:
        typer.echo(f"{'would drop' if dry_run else 'dropped'} {len(r.partitions_dropped)} PostgreSQL partitions: "
                   f"{', '.join(r.partitions_dropped)}")  # fmt: skip
    if r.bytes_before is not None and r.bytes_after is not None:
        typer.echo(f"store size {r.bytes_before / 1e6:.1f} MB → {r.bytes_after / 1e6:.1f} MB")
