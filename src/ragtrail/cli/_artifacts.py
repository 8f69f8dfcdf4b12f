"""``ragtrail artifacts log|list|show|diff|download|alias|history|lineage`` and ``ragtrail prompts
list|show|push|alias``: thin commands over :mod:`ragtrail.artifacts` and :mod:`ragtrail.prompts`."""

from __future__ import annotations

import json
import time
from typing import Any, Optional

import typer

from ragtrail.cli._common import StoreOpt

app = typer.Typer(help="Versioned, content-addressed artifacts: files and configs, with aliases and lineage.",
                  no_args_is_help=True)  # fmt: skip
prompts_app = typer.Typer(help="The prompt registry: versioned prompt templates with aliases.", no_args_is_help=True)

BlobsOpt = typer.Option(
    None, "--blobs", envvar="RAGTRAIL_ARTIFACTS",
    help="Where artifact files are stored (directory or fsspec URL). Default: artifacts/ beside a SQLite store.",
)  # fmt: skip


def _store(store: Optional[str]) -> Any:
    from ragtrail.artifacts._artifact import _store as resolve

    return resolve(store)


def _esc(v: Any) -> str:
    from rich.markup import escape

    return escape("" if v is None else str(v))


def _when(ts: float | None) -> str:
    return "-" if not ts else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _size(n: int) -> str:
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if f < 1024 or unit == "GiB":
            return f"{f:.0f} {unit}" if unit == "B" else f"{f:.1f} {unit}"
        f /= 1024
    return f"{n} B"  # pragma: no cover


def _console() -> Any:
    from rich.console import Console

    return Console(width=200)


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


# ------------------------------------------------------------------------------------ artifacts
@app.command("list")
def list_(
    type_: Optional[str] = typer.Option(None, "--type", "-t", help="Only artifacts of this type."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Artifacts with their type, number of versions, newest version and aliases."""
    from rich.table import Table

    from ragtrail.artifacts import list_artifacts

    rows = list_artifacts(type=type_, store=_store(store))
    if as_json:
        _echo_json(rows)
        return
    table = Table(title=f"{len(rows)} artifact(s)")
    for col in ("name", "type", "versions", "latest", "aliases", "updated"):
        table.add_column(col)
    for r in rows:
        aliases = ", ".join(f"{a}→{v}" for a, v in r["aliases"].items())
        table.add_row(_esc(r["name"]), _esc(r["type"]), str(r["n_versions"]), f"v{r['latest']}", _esc(aliases),
                      _when(r["updated_at"]))  # fmt: skip
    _console().print(table)


@app.command("log")
def log(
    name: str = typer.Argument(..., help="Artifact name."),
    type_: str = typer.Argument(..., metavar="TYPE", help="Artifact type (config, index, model, dataset…)."),
    paths: list[str] = typer.Argument(..., help="Files and directories to include (directories recursively)."),
    alias_: Optional[list[str]] = typer.Option(None, "--alias", "-a", help="Alias to move to it (repeatable)."),
    run: Optional[str] = typer.Option(None, "--run", "-r", help="The run that produced it (name:vN or run id)."),
    description: Optional[str] = typer.Option(None, "--description", "-d", help="A description of the artifact."),
    store: Optional[str] = StoreOpt,
    blobs: Optional[str] = BlobsOpt,
) -> None:
    """Log files and directories as a version (the same content gives the same version)."""
    import os

    from ragtrail.artifacts import Artifact, log_artifact

    art = Artifact(name, type_, description=description)
    for p in paths:
        if os.path.isdir(p):
            art.add_dir(p, prefix=os.path.basename(os.path.normpath(p)) if len(paths) > 1 else "")
        else:
            art.add_file(p)
    v = log_artifact(art, aliases=alias_ or (), run=run, store=_store(store), blobs=blobs)
    typer.echo(f"{v.ref} ({'new' if v.created else 'unchanged'}): {len(v.manifest)} file(s), {_size(v.size_bytes)}, "
               f"sha256 {v.digest[:16]}" + (f"; aliases {', '.join(v.aliases)}" if v.aliases else ""))  # fmt: skip


@app.command("show")
def show(
    ref: str = typer.Argument(..., help="name, name:vN or name:alias."),
    verify: bool = typer.Option(False, "--verify", help="Re-hash every stored file (exit 2 naming bad files)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    store: Optional[str] = StoreOpt,
    blobs: Optional[str] = BlobsOpt,
) -> None:
    """A version: digest, size, aliases, who logged it, which run produced it, and its files."""
    from rich.table import Table

    from ragtrail.artifacts import get_artifact

    v = get_artifact(ref, store=_store(store), blobs=blobs)
    if verify:
        v.verify()
    if as_json:
        _echo_json({k: getattr(v, k) for k in ("name", "type", "version", "digest", "size_bytes", "created_at",
                                               "created_by", "run_id", "description", "metadata", "aliases",
                                               "manifest")} | {"ref": v.ref})  # fmt: skip
        return
    c = _console()
    c.print(f"[bold]{_esc(v.ref)}[/bold]  type {_esc(v.type)}  sha256 {v.digest}")
    c.print(f"{len(v.manifest)} file(s), {_size(v.size_bytes)}; logged {_when(v.created_at)} by {_esc(v.created_by or '-')}"
            + (f"; produced by run {_esc(v.run_id)}" if v.run_id else ""))  # fmt: skip
    c.print(f"aliases: {_esc(', '.join(v.aliases) or '-')}")
    if v.description:
        c.print(f"description: {_esc(v.description)}")
    table = Table()
    for col in ("path", "size", "sha256"):
        table.add_column(col)
    for e in v.manifest:
        table.add_row(_esc(e["path"]), _size(e["size"]), e["sha256"][:16])
    c.print(table)
    if verify:
        c.print("[green]all files verified[/green]")


@app.command("diff")
def diff(
    a: str = typer.Argument(..., help="The old version (name:vN or name:alias)."),
    b: str = typer.Argument(..., help="The new version (name:vN, name:alias, or just vN / alias of the same name)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Files added (+), removed (-) and changed (~) from A to B."""
    from ragtrail.artifacts import diff as diff_

    if ":" not in b and ":" in a:
        b = f"{a.split(':', 1)[0]}:{b}"
    d = diff_(a, b, store=_store(store))
    if as_json:
        _echo_json(d)
        return
    c = _console()
    c.print(f"{_esc(d['a'])} → {_esc(d['b'])}: {len(d['added'])} added, {len(d['removed'])} removed, "
            f"{len(d['changed'])} changed, {d['unchanged']} unchanged")  # fmt: skip
    for e in d["added"]:
        c.print(f"[green]+ {_esc(e['path'])}[/green]  ({_size(e['size'])})")
    for e in d["removed"]:
        c.print(f"[red]- {_esc(e['path'])}[/red]  ({_size(e['size'])})")
    for e in d["changed"]:
        c.print(f"[yellow]~ {_esc(e['path'])}[/yellow]  ({_size(e['size_a'])} → {_size(e['size_b'])}, "
                f"sha256 {e['sha256_a'][:12]} → {e['sha256_b'][:12]})")  # fmt: skip


@app.command("download")
def download(
    ref: str = typer.Argument(..., help="name, name:vN or name:alias."),
    root: Optional[str] = typer.Option(None, "--root", "-o", help="Target directory (default ./artifacts/NAME-vN)."),
    store: Optional[str] = StoreOpt,
    blobs: Optional[str] = BlobsOpt,
) -> None:
    """Write a version's files under a directory, verifying each file's sha256 as it is written."""
    from ragtrail.artifacts import get_artifact

    v = get_artifact(ref, store=_store(store), blobs=blobs)
    path = v.download(root)
    typer.echo(f"{v.ref}: {len(v.manifest)} file(s), {_size(v.size_bytes)} → {path}")


@app.command("alias")
def alias(
    ref: str = typer.Argument(..., help="The version to point the alias at (name:vN)."),
    alias_: str = typer.Argument(..., metavar="ALIAS", help="The alias (production, staging…)."),
    expected: Optional[str] = typer.Option(
        None, "--expected", help="Move only if the alias points at this version now (vN, or 'none' for unset)."
    ),
    run: Optional[str] = typer.Option(None, "--run", "-r", help="The run whose gates allow the move (name:vN…)."),
    gates: Optional[str] = typer.Option(None, "--gates", "-g", help="Gate file (YAML) checked on --run."),
    gate: Optional[list[str]] = typer.Option(None, "--gate", help="A gate such as 'faithfulness >= 0.85'."),
    baseline: Optional[str] = typer.Option(None, "--baseline", "-b", help="Baseline for non-inferiority gates."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Point ALIAS at a version (with history). With --run and gates, only when the run passes them
    (exit 1 when a gate fails, as `ragtrail gate`)."""
    from ragtrail._exceptions import ConfigError
    from ragtrail.artifacts import promote, set_alias

    st = _store(store)
    if gates or gate:
        if not run:
            raise ConfigError("gated promotion needs --run: the run that evaluated this artifact version")
        from ragtrail.evals._gates import check_gates

        report = check_gates(st, run, gates, extra=gate or (), baseline=baseline)
        res = promote(ref, alias_, report=report, store=st)
        report.print(_console())
        if not report.passed:
            typer.echo(f"not moved: {len(report.failed)} gate(s) failed for {report.run.ref}")
            raise typer.Exit(1)
        typer.echo(f"{res.version.name}:{alias_} → {res.version.ref}" + (f" (was {res.previous})" if res.moved else
                                                                      " (already there)"))  # fmt: skip
        return
    if run:
        raise ConfigError("--run is for gated promotion; also pass --gates FILE or --gate EXPR")
    kw: dict[str, Any] = {}
    if expected is not None:
        kw["expected"] = None if expected.lower() == "none" else expected
    prev = set_alias(ref, alias_, store=st, **kw)
    name = ref.split(":", 1)[0]
    typer.echo(f"{name}:{alias_} → {ref}" + (f" (was {prev})" if prev else ""))


@app.command("history")
def history(
    name: str = typer.Argument(..., help="Artifact name."),
    alias_: Optional[str] = typer.Option(None, "--alias", "-a", help="Only this alias."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Alias moves of an artifact, oldest first."""
    from ragtrail.artifacts import alias_history

    for h in alias_history(name, alias_, store=_store(store)):
        typer.echo(f"{_when(h['set_at'])}  {h['alias']}: {h['previous'] or '(unset)'} → {h['version']}"
                   f"  by {h['set_by'] or '-'}")  # fmt: skip


@app.command("lineage")
def lineage(
    ref: str = typer.Argument(..., help="name:vN or name:alias."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    store: Optional[str] = StoreOpt,
) -> None:
    """The chains dataset → run → artifact → run around a version."""
    from ragtrail.artifacts import lineage as lineage_

    g = lineage_(ref, store=_store(store))
    if as_json:
        _echo_json(g)
        return
    c = _console()
    c.print(f"[bold]{_esc(g['artifact'])}[/bold]  sha256 {g['digest'][:16]}…")
    for p in g["paths"]:
        c.print("  " + _esc(p))


# -------------------------------------------------------------------------------------- prompts
@prompts_app.command("list")
def prompts_list(store: Optional[str] = StoreOpt) -> None:
    """Prompts with their number of versions and newest version."""
    from ragtrail.prompts import list_prompts

    for p in list_prompts(store=_store(store)):
        typer.echo(f"{p['name']}  v{p['latest']}  ({p['n_versions']} version(s), updated {_when(p['updated_at'])})")


@prompts_app.command("show")
def prompts_show(
    ref: str = typer.Argument(..., help="name, name:vN or name:alias."),
    store: Optional[str] = StoreOpt,
) -> None:
    """A prompt version: format, model, params, aliases and the template."""
    from ragtrail.prompts import get

    p = get(ref, store=_store(store))
    typer.echo(f"{p.ref}  format {p.format}  sha256 {p.digest[:16]}…  aliases {', '.join(p.aliases) or '-'}")
    if p.model or p.params:
        typer.echo(f"model {p.model or '-'}  params {json.dumps(p.params, sort_keys=True)}")
    typer.echo(p.template if isinstance(p.template, str) else json.dumps(p.template, indent=2, ensure_ascii=False))


@prompts_app.command("push")
def prompts_push(
    name: str = typer.Argument(..., help="Prompt name."),
    file: str = typer.Argument(..., help="Template file (a chat prompt: JSON list of {role, content})."),
    format_: str = typer.Option("f-string", "--format", "-f", help="f-string, mustache or chat."),
    model: Optional[str] = typer.Option(None, "--model", help="Model the prompt is meant for."),
    alias_: Optional[list[str]] = typer.Option(None, "--alias", "-a", help="Alias to move to it (repeatable)."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Push a template file as a prompt version (the same content gives the same version)."""
    from pathlib import Path

    from ragtrail.prompts import push

    text = Path(file).read_text(encoding="utf-8")
    template: Any = json.loads(text) if format_ == "chat" else text
    p = push(name, template, format=format_, model=model, aliases=alias_ or (), store=_store(store))
    typer.echo(f"{p.ref} ({'new' if p.created else 'unchanged'})")


@prompts_app.command("alias")
def prompts_alias(
    ref: str = typer.Argument(..., help="The version (name:vN)."),
    alias_: str = typer.Argument(..., metavar="ALIAS", help="The alias (production, staging…)."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Point a prompt alias at a version (with history)."""
    from ragtrail.prompts import set_alias

    prev = set_alias(ref, alias_, store=_store(store))
    typer.echo(f"{ref.split(':', 1)[0]}:{alias_} → {ref}" + (f" (was {prev})" if prev else ""))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="artifacts")
    root.add_typer(prompts_app, name="prompts")
