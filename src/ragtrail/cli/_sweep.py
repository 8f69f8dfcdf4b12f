"""``ragtrail sweep sweep.yaml``: a W&B-format sweep driven by Optuna; each trial is a versioned run."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ragtrail.cli._common import StoreOpt


def register(app: typer.Typer) -> None:
    @app.command("sweep")
    def sweep_cmd(
        sweep_file: str = typer.Argument(
            ..., help="Sweep file (W&B format: method, metric, parameters; plus eval: eval.yaml)."
        ),
        count: Optional[int] = typer.Option(
            None, "--count", "-n", help="Number of trials (overrides count; run_cap still caps it)."
        ),
        dry_run: bool = typer.Option(
            False, "--dry-run", help="Validate the file and show the search space (grid: every config); run nothing."
        ),
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
        report: Optional[str] = typer.Option(
            None, "--report", help="Also write an HTML report of the runner-up vs the best trial here."
        ),
        resume: Optional[str] = typer.Option(
            None, "--resume", help="Continue this sweep (its id, sweep_…): finished trials are not run again."
        ),
        store: Optional[str] = StoreOpt,
    ) -> None:
        """Run a hyper-parameter sweep over an evaluation and report the best config with its CI."""
        from rich.console import Console

        from ragtrail.evals._sweep import load_sweep, new_sweep_id, run_sweep

        spec = load_sweep(sweep_file, count=count)
        spec.require_target()  # W&B's program: alone names nothing ragtrail can run
        console = Console(width=160)
        if dry_run:
            _print_plan(console, spec)
            return

        def progress(t):  # type: ignore[no-untyped-def]
            val = "failed: " + (t.error or "") if t.value is None else f"{spec.metric} = {t.value:.4f}"
            if t.state == "pruned":
                val = f"pruned at {t.examples} examples ({spec.metric} = {t.value:.4f} so far)"
            console.print(f"trial {t.number}: {json.dumps(t.params, default=str)} -> {t.run_ref or '—'}  {val}")

        sweep_id = resume or new_sweep_id()
        if not as_json:
            console.print(f"{'resuming' if resume else 'starting'} sweep {sweep_id}, {spec.goal} {spec.metric} "
                          f"(if it is cut short: ragtrail sweep {sweep_file} --resume {sweep_id})",
                          soft_wrap=True)  # fmt: skip
        result = run_sweep(spec, store=store, on_trial=None if as_json else progress, resume=resume,
                           sweep_id=sweep_id)  # fmt: skip
        if as_json:
            typer.echo(json.dumps({
                "sweep_id": result.sweep_id,
                "best": result.best.__dict__ if result.best else None,
                "runner_up": result.runner_up.__dict__ if result.runner_up else None,
                "comparison": result.comparison.to_dict() if result.comparison else None,
                "trials": [t.__dict__ for t in result.trials],
            }, indent=2, default=str))  # fmt: skip
        else:
            result.print(console)
        if report and result.best is not None:
            from ragtrail.evals._report import write_report
            from ragtrail.store import open_store

            runs = [r.run_id for r in (result.runner_up, result.best) if r is not None and r.run_id]
            st = open_store(store) if store else _trial_store(result)
            path = write_report(st, runs, report, title=f"sweep {result.sweep_id}: best vs runner-up")
            console.print(f"wrote {path}")
        if result.best is None:
            raise typer.Exit(1)


def _print_plan(console, spec) -> None:  # type: ignore[no-untyped-def]
    """``--dry-run``: the search space and the trials to run (grid: every config; random: the draws)."""
    from ragtrail.evals._sweep import iter_grid, planned_configs

    console.print(f"{spec.method} sweep, {spec.goal} {spec.metric}; parameters:")
    for p in spec.params:
        if p.distribution in ("categorical", "constant"):
            what = json.dumps(list(p.values), default=str)
            if p.probabilities is not None:
                what += f" with probabilities {list(p.probabilities)}"
        else:
            fields = {"min": p.low, "max": p.high, "q": p.q}
            if p.distribution.endswith("normal"):
                fields = {"mu": p.mu, "sigma": p.sigma, "q": p.q}
            elif p.distribution.endswith("beta"):
                fields = {"a": p.a, "b": p.b, "q": p.q}
            what = p.distribution + " " + ", ".join(f"{k} {v:g}" for k, v in fields.items() if v is not None)
        console.print(f"  {p.name}: {what}" + ("  (upstream)" if p.name in spec.upstream else ""))
    et = spec.early_terminate
    if et is not None:
        last = f", up to {et.last_band}" if et.last_band is not None else ""
        console.print(f"early_terminate: hyperband, bands at {et.min_resource}·{et.eta}^k examples{last}")
    if spec.method == "grid":
        grid = list(iter_grid(spec))
        console.print(f"{len(grid)} grid point(s):")
        for cfg in grid:
            console.print("  " + json.dumps(cfg, default=str))
        return
    console.print(f"{spec.total} trial(s)")
    if spec.method == "random" and spec.seed is not None:
        shown = min(spec.total, 20)
        console.print(f"the first {shown} (seed {spec.seed}):")
        for cfg in planned_configs(spec, shown):
            console.print("  " + json.dumps(cfg, default=str))


def _trial_store(result):  # type: ignore[no-untyped-def]
    """The store the sweep's runs went to (the eval config's, else the default)."""
    from ragtrail.evals._config import load_spec
    from ragtrail.store import open_store

    spec = result.spec
    if spec.eval_path:
        from pathlib import Path

        path = Path(spec.eval_path)
        if not path.is_absolute() and spec.base_dir:
            path = Path(spec.base_dir) / path
        return open_store(load_spec(path).store)
    return open_store(None)
