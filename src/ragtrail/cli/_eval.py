"""``ragtrail eval run eval.yaml [--resume RUN] [--force] [--dry-run] [--backend local|ray]``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(help="Run evaluations from an eval.yaml file.", no_args_is_help=True)


@app.command("run")
def run(
    config_file: str = typer.Argument(..., help="The eval YAML (name, dataset, pipeline, scorers, config…)."),
    resume: Optional[str] = typer.Option(
        None, "--resume", help="Continue this run (name:vN or id): only missing/errored examples run."
    ),
    force: bool = typer.Option(False, "--force", help="Resume even though the dataset or config changed."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate and print the cost estimate; run nothing."),
    backend: str = typer.Option("local", "--backend", help="local or ray."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Stop cleanly at this many USD (resumable)."),
    store: Optional[str] = typer.Option(
        None, "--store", "-s", envvar="RAGTRAIL_STORE", help="Store path or URL (overrides the YAML)."
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
    overrides: Optional[list[str]] = typer.Option(
        None,
        "--set",
        metavar="KEY=VALUE",
        help="Override a config value (repeatable; VALUE is read as YAML, KEY may be dotted: retriever.k=3).",
    ),
) -> None:
    """Run the evaluation and print the new run's summary."""
    from ragtrail.evals._config import build, load_spec

    spec = load_spec(config_file)
    if overrides:
        spec.config = apply_overrides(spec.config, overrides)
    if store:
        spec.store = store
    ev = build(spec, Path(config_file).resolve().parent, dry_run=dry_run)  # a dry run imports/calls nothing
    if no_progress:
        ev.progress = False
    if dry_run:
        est = ev.estimate(spec.config, resume=resume)
        typer.echo(f"{spec.name}: config OK; dataset {ev.dataset.ref}; scorers {', '.join(s.name for s in ev.scorers)}")
        typer.echo(f"estimate: {est}")
        return
    r = ev.run(spec.config, resume=resume, force=force, backend=backend, max_cost=max_cost)
    s = r.summary
    typer.echo(f"{r.ref}  ({r.run_id})  status={r.status}  examples={s.get('n_examples')} errors={s.get('n_error')}")
    for m, v in (s.get("metrics") or {}).items():
        mean = "-" if v.get("mean") is None else f"{v['mean']:.4f}"
        typer.echo(
            f"  {m:<26}{mean:>10}  (ok {v.get('n_ok', 0)}, undefined {v.get('n_undefined', 0)}, error {v.get('n_error', 0)})"
        )
    if r.status == "stopped":
        typer.echo(
            f"stopped: {s.get('stopped_reason')}; continue with: ragtrail eval run {config_file} --resume {r.ref}"
        )
        raise typer.Exit(3)


def apply_overrides(config: Optional[dict[str, Any]], overrides: list[str]) -> dict[str, Any]:
    """``config`` with each ``KEY=VALUE`` applied (VALUE parsed as YAML; dotted keys go into nested dicts)."""
    import copy

    import yaml

    from ragtrail._exceptions import ConfigError

    out = copy.deepcopy(dict(config or {}))
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set top_k=5")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from exc
        *parents, last = key.strip().split(".")
        node = out
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {} if child is None else _not_a_mapping(item, part)
            node = child
        node[last] = value
    return out


def _not_a_mapping(item: str, part: str) -> dict[str, Any]:
    from ragtrail._exceptions import ConfigError

    raise ConfigError(f"--set {item!r}: config key {part!r} is not a mapping, so it has no sub-keys")
