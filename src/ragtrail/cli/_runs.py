"""``ragtrail runs list|show|compare|alias|promote``: versioned eval runs, paired comparisons and alias moves
(``promote`` moves an alias only when the gates pass)."""

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
        table.add_column(escape_markup(col), no_wrap=col == "sweep")
    for r in runs:
        s = r.summary
        created = datetime.fromtimestamp(r.created_at, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(*map(escape_markup, (
            r.ref, r.status, created, _fmt(r.dataset_name), _fmt(r.dataset_version), _fmt(s.get("n_examples")),
            _fmt(s.get("n_error")), ",".join(r.aliases()), differing.get(r.run_id, ""),
            _fmt((s.get("latency_ms") or {}).get("p50")), _fmt(s.get("cost_usd")),
            *([_fmt(r.sweep_id)] if with_sweep else []), *[_fmt(r.metrics.get(m)) for m in metrics],
        )))  # fmt: skip
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
            "source_run_id": run.source_run_id, "aliases": run.aliases(), "sweep_id": run.sweep_id,
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
    if run.sweep_id:
        typer.echo(f"sweep    {run.sweep_id}")  # the id `ragtrail sweep --resume` takes
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


@app.command("compare")
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


@app.command("alias")
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


@app.command("promote")
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
