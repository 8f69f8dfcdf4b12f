"""``ragtrail report RUN [RUN…] -o report.html``: one self-contained, offline HTML report."""

from __future__ import annotations

from typing import Optional

import typer

from ragtrail.cli._common import StoreOpt


def report_cmd(
    runs: list[str] = typer.Argument(..., help="Runs (name:vN, name:alias, run id); the first is the baseline."),
    output: str = typer.Option("report.html", "--output", "-o", help="HTML file to write."),
    title: Optional[str] = typer.Option(None, "--title", help="Page title."),
    max_examples: int = typer.Option(
        200, "--max-examples", help="Per-example differences (and their traces) to embed."
    ),
    allow_different: bool = typer.Option(
        False, "--allow-different", help="Allow runs of different evaluations/datasets."
    ),
    seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Write one self-contained, offline HTML report: summary, comparison with CIs, per-example differences, traces, charts."""
    from ragtrail.cli._common import client
    from ragtrail.evals._report import write_report

    path = write_report(client(store).store, runs, output, title=title, max_examples=max_examples,
                        allow_different=allow_different, seed=seed)  # fmt: skip
    typer.echo(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB)")


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("report")(report_cmd)
