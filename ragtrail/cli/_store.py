"""``ragtrail store info``."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ragtrail.cli._common import StoreOpt, client

app = typer.Typer(help="Inspect the store.", no_args_is_help=True)


@app.command("info")
def info(store: Optional[str] = StoreOpt, as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Where the store is, its schema version and what it holds."""
    data = client(store).info()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    for k, v in data.items():
        typer.echo(f"{k:16} {', '.join(map(str, v)) if isinstance(v, list) else v}")
