"""``ragtrail runs compare A B``, ``runs alias RUN ALIAS`` and ``runs promote RUN --alias production
--gates gates.yaml``, added to the ``runs`` sub-app by :func:`register`."""

from __future__ import annotations

import json
from typing import Optional

import typer

from ragtrail.cli._common import StoreOpt


def register(runs_app: typer.Typer) -> None:
    @runs_app.command("compare")
    def compare_cmd(
        a: str = typer.Argument(..., help="Baseline run (name:vN, name:alias, run id)."),
        b: str = typer.Argument(..., help="Candidate run; deltas are b − a."),
        metric: Optional[list[str]] = typer.Option(None, "--metric", "-m", help="Only these metrics (repeatable)."),
        operational: bool = typer.Option(False, "--operational", help="Also compare latency, cost and tokens."),
        test: str = typer.Option("t", "--test", help="Paired test: t (default) or wilcoxon."),
        confidence: float = typer.Option(0.95, "--confidence", help="CI level."),
        seed: int = typer.Option(0, "--seed", help="Bootstrap seed."),
        resamples: int = typer.Option(10_000, "--resamples", help="Bootstrap resamples."),
        allow_different: bool = typer.Option(
            False, "--allow-different", help="Allow runs of different evaluations/datasets."
        ),
        regressions: int = typer.Option(10, "--regressions", "-r", help="How many regressed examples to list."),
        as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
        store: Optional[str] = StoreOpt,
    ) -> None:
        """Paired comparison of two runs: means, delta, bootstrap CI, p-values (Holm), regressions."""
        import warnings

        from rich.console import Console

        from ragtrail._exceptions import RagtrailWarning
        from ragtrail.cli._common import client

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RagtrailWarning)  # shown in the output instead
            cmp = client(store).compare(
                a, b, metrics=metric or None, operational=operational, test=test, confidence=confidence,
                seed=seed, n_resamples=resamples, allow_different=allow_different,
            )  # fmt: skip
        if as_json:
            typer.echo(json.dumps(cmp.to_dict(), indent=2, default=str))
            return
        cmp.print(Console(width=160), regressions=regressions)

    @runs_app.command("alias")
    def alias_cmd(
        run: str = typer.Argument(..., help="The run (name:vN, name:alias, run id)."),
        alias: str = typer.Argument(..., help="Alias to point at it, e.g. production."),
        by: Optional[str] = typer.Option(None, "--by", help="Who moves it (default: $RAGTRAIL_USER or $USER)."),
        history: bool = typer.Option(False, "--history", help="Print the alias's history afterwards."),
        store: Optional[str] = StoreOpt,
    ) -> None:
        """Point an alias of the run's evaluation at the run (atomically, with history)."""
        from ragtrail.cli._common import client
        from ragtrail.evals._compare import resolve_run
        from ragtrail.evals._gates import move_alias

        st = client(store).store
        info = resolve_run(st, run)
        previous = move_alias(st, info, alias, by=by)
        prev = resolve_run(st, previous).ref if previous else "unset"
        typer.echo(f"{info.name}:{alias} -> {info.ref} (was {prev})")
        if history:
            _print_history(st, info.name, alias)

    @runs_app.command("promote")
    def promote_cmd(
        run: str = typer.Argument(..., help="The run to promote."),
        alias: str = typer.Option("production", "--alias", "-a", help="Alias to move."),
        gates: Optional[str] = typer.Option(
            None, "--gates", "-g", help="Gate file (YAML); the alias moves only if they pass."
        ),
        gate: Optional[list[str]] = typer.Option(
            None, "--gate", help="A gate such as 'faithfulness >= 0.85' (repeatable)."
        ),
        baseline: Optional[str] = typer.Option(
            None,
            "--baseline",
            "-b",
            help="Baseline for non-inferiority gates (default: the file's, else the alias itself).",
        ),
        allow_missing_baseline: bool = typer.Option(
            False,
            "--allow-missing-baseline",
            help="Skip non-inferiority gates when the baseline is unset (first promotion).",
        ),
        force: bool = typer.Option(False, "--force", help="Move the alias without gates."),
        by: Optional[str] = typer.Option(None, "--by", help="Who promotes (default: $RAGTRAIL_USER or $USER)."),
        junit: Optional[str] = typer.Option(None, "--junit", help="Write the gates' JUnit XML here."),
        markdown: Optional[str] = typer.Option(None, "--markdown", help="Write a Markdown summary here."),
        store: Optional[str] = StoreOpt,
    ) -> None:
        """Move an alias to RUN only if the gates pass: exit 0 moved, 1 a gate failed, 2 error."""
        from rich.console import Console

        from ragtrail.cli._common import client
        from ragtrail.cli._gate import _is_ours, _write
        from ragtrail.evals._compare import resolve_run
        from ragtrail.evals._gates import promote

        if not gates and not gate and not force:
            typer.secho("error: give --gates FILE (or --gate EXPR), or --force to move the alias without gates",
                        err=True, fg=typer.colors.RED)  # fmt: skip
            raise typer.Exit(2)
        try:
            st = client(store).store
            res = promote(
                st, run, alias, gates, extra=gate or [], by=by,
                baseline=baseline,
                allow_missing_baseline=allow_missing_baseline or None,
            )  # fmt: skip
        except Exception as exc:
            msg = str(exc) if _is_ours(exc) else f"{type(exc).__name__}: {exc}"
            typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
            raise typer.Exit(2) from None
        if res.report is not None:
            _write(junit, res.report.to_junit_xml())
            _write(markdown, res.report.to_markdown())
            res.report.print(Console(width=160))
        prev = resolve_run(st, res.previous_run_id).ref if res.previous_run_id else "unset"
        if res.report is not None and not res.report.passed:
            typer.secho(f"not promoted: {res.run.name}:{alias} stays at {prev}", fg=typer.colors.RED)
            raise typer.Exit(1)
        if res.moved:
            typer.secho(f"promoted: {res.run.name}:{alias} -> {res.run.ref} (was {prev})", fg=typer.colors.GREEN)
        else:
            typer.echo(f"{res.run.name}:{alias} already points at {res.run.ref}")


def _print_history(st, name: str, alias: str) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from ragtrail.evals._runs import alias_history
    from ragtrail.store._evals import get_run

    def ref(run_id: str) -> str:
        rec = get_run(st, run_id)
        return f"{rec['name']}:v{rec['version']}" if rec else run_id

    for h in alias_history(st, name, alias):
        when = dt.datetime.fromtimestamp(float(h["set_at"]), dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        prev = ref(h["previous_run_id"]) if h["previous_run_id"] else "unset"
        typer.echo(f"{when}  {h['set_by'] or '?'}  {prev} -> {ref(h['run_id'])}")
