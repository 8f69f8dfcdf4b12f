"""``ragtrail monitor monitor.yaml``: score new traces continuously (``--once``: one pass, for cron)."""

from __future__ import annotations

from typing import Optional

import typer

from ragtrail.cli._common import StoreOpt


def monitor(
    config: str = typer.Argument(
        ..., help="monitor.yaml (name, project, scorers, sample_rate, max_cost_per_hour, alerts…)."
    ),
    once: bool = typer.Option(
        False, "--once", help="Score what is ready, check alerts, exit (1 when an alert is active)."
    ),
    duration: Optional[float] = typer.Option(
        None, "--duration", help="Stop after this many seconds (default: run until killed)."
    ),
    store: Optional[str] = StoreOpt,
) -> None:
    """Score new traces of a project as they arrive; scores are stored as feedback (source=scorer)."""
    from ragtrail.evals._monitor import load_monitor

    mon = load_monitor(config, store=store)
    if once:
        rep = mon.run_once()
    else:
        typer.echo(f"{mon!r}: scoring traces that ended more than {mon.settle_s:g} s ago; Ctrl-C stops")
        try:
            rep = mon.run(duration_s=duration)
        except KeyboardInterrupt:
            mon.stop()
            raise typer.Exit(0) from None
    typer.echo(
        f"{mon.name}: {rep.passed} trace(s) passed, {rep.scored} scored, ${rep.cost_usd:.4f}"
        + (" (hourly cost cap reached: the rest waits)" if rep.capped else "")
    )
    for ev in rep.alerts:
        typer.secho(f"ALERT {ev}", err=True, fg=typer.colors.RED)
    if once and rep.alerts:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.command("monitor")(monitor)
