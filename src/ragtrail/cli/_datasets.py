"""``ragtrail datasets push|list|show|diff``."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ragtrail._exceptions import ConfigError
from ragtrail.cli._common import StoreOpt, client, escape_markup

app = typer.Typer(help="Push, list, show and diff versioned datasets.", no_args_is_help=True)


def _load_file(path: str, name: Optional[str], fmt: Optional[str], fields: Optional[str], split: str,
               auto_id: bool):  # type: ignore[no-untyped-def]  # fmt: skip
    from pathlib import Path

    from ragtrail.evals import Dataset

    mapping = None
    if fields:
        try:
            mapping = dict(part.split("=", 1) for part in fields.split(","))
        except ValueError as exc:
            raise ConfigError(f"--fields must look like input=question,reference=answer, not {fields!r}") from exc
    p = Path(path)
    kind = fmt or ("beir" if p.is_dir() else "csv" if p.suffix.lower() == ".csv" else "jsonl")
    if kind == "beir":
        return Dataset.from_beir(p, split, name)
    if kind == "csv":
        return Dataset.from_csv(p, name, fields=mapping, auto_id=auto_id)
    if kind == "jsonl":
        return Dataset.from_jsonl(p, name, fields=mapping, auto_id=auto_id)
    raise ConfigError(f"--format must be jsonl, csv or beir, not {kind!r}")


@app.command("push")
def push(
    path: str = typer.Argument(..., help="A .jsonl or .csv file, or a BEIR folder."),
    name: Optional[str] = typer.Option(None, "--name", "-n", help="Dataset name (default: the file name)."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="jsonl, csv or beir (default: from the path)."),
    fields: Optional[str] = typer.Option(
        None, "--fields", help="Column mapping, e.g. input=question,reference=answer."
    ),
    split: str = typer.Option("test", "--split", help="BEIR qrels split."),
    auto_id: bool = typer.Option(False, "--auto-id", help="Derive missing example ids from the input."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Store a dataset snapshot; identical content gives the same version."""
    ds = _load_file(path, name, fmt, fields, split, auto_id)
    c = client(store, create=True)
    version = ds.push(c.store)
    typer.echo(f"{ds.name}:{version}  ({len(ds)} examples)")


@app.command("list")
def list_(
    name: Optional[str] = typer.Argument(None, help="Only the versions of this dataset."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Stored datasets and versions, newest first."""
    from datetime import datetime, timezone

    from rich.console import Console
    from rich.table import Table

    from ragtrail.evals import list_datasets

    rows = list_datasets(client(store).store, name)
    table = Table(title=f"{len(rows)} dataset version(s)")
    for col in ("name", "version", "examples", "created (UTC)", "description"):
        table.add_column(col)
    for r in rows:
        ts = datetime.fromtimestamp(r["created_at"], tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(*map(escape_markup, (r["name"], r["version"], str(r["n_examples"]), ts, r["description"] or "")))
    Console(width=200).print(table)


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="name or name:version"),
    limit: int = typer.Option(10, "--limit", "-n", help="Examples to print."),
    as_json: bool = typer.Option(False, "--json", help="Print every example as JSON lines."),
    store: Optional[str] = StoreOpt,
) -> None:
    """A dataset's version, size and first examples."""
    ds = client(store).dataset(ref)
    if as_json:
        for rec in ds.to_records():
            typer.echo(json.dumps(rec, ensure_ascii=False))
        return
    typer.echo(f"{ds.name}:{ds.version}  {len(ds)} examples")
    for ex in ds.examples[:limit]:
        ref_txt = "" if ex.reference is None else f"  -> {json.dumps(ex.reference, ensure_ascii=False)[:80]}"
        rel = f"  [{len(ex.relevant)} judged]" if ex.relevant else ""
        typer.echo(f"  {ex.id}: {json.dumps(ex.input, ensure_ascii=False)[:100]}{ref_txt}{rel}")
    if len(ds) > limit:
        typer.echo(f"  … {len(ds) - limit} more")


@app.command("diff")
def diff(
    a: str = typer.Argument(..., help="name:version (or a file)"),
    b: str = typer.Argument(..., help="name:version, name (latest), or a file to compare with"),
    store: Optional[str] = StoreOpt,
) -> None:
    """Example ids added, removed and changed from A to B."""
    from pathlib import Path

    c = client(store)

    def get(ref: str):  # type: ignore[no-untyped-def]
        if Path(ref).exists():
            return _load_file(ref, None, None, None, "test", False)
        return c.dataset(ref)

    typer.echo(str(get(a).diff(get(b))))
