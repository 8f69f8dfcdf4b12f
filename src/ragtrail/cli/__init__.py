"""The ``ragtrail`` command line (typer). Commands are thin: they parse arguments and call the library.

Sub-apps live in one module each (``_traces``, ``_store``, ``_evals``, ``_runs``, ``_serve``…) and are
imported when the CLI starts, never by ``import ragtrail``.
"""

from __future__ import annotations

import importlib
import sys

import typer

from ragtrail._exceptions import RagtrailError
from ragtrail.cli._help import RootGroup

app = typer.Typer(
    name="ragtrail",
    cls=RootGroup,
    help="Trace LLM/RAG pipelines and evaluate them as versioned runs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, attribute, name): sub-apps are added under ``name``; plain commands when name is None.
_PARTS: list[tuple[str, str, str | None]] = [
    ("ragtrail.cli._traces", "app", "traces"),
    ("ragtrail.cli._store", "app", "store"),
    ("ragtrail.cli._datasets", "app", "datasets"),
    ("ragtrail.cli._runs", "app", "runs"),
    ("ragtrail.cli._eval", "app", "eval"),
    ("ragtrail.cli._gate", "register", None),
    ("ragtrail.cli._sweep", "register", None),
    ("ragtrail.cli._report", "register", None),
    ("ragtrail.cli._serve", "register", None),
    ("ragtrail.cli._artifacts", "register", None),
    ("ragtrail.cli._ui", "register", None),
    ("ragtrail.cli._feedback", "register", None),
    ("ragtrail.cli._monitor", "register", None),
]

for _mod, _attr, _name in _PARTS:
    _m = importlib.import_module(_mod)  # a broken part fails loudly here
    if _name is None:
        getattr(_m, _attr)(app)
    else:
        app.add_typer(getattr(_m, _attr), name=_name)


def _print_version(value: bool) -> None:
    if value:
        from ragtrail import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Trace LLM/RAG pipelines and evaluate them as versioned runs."""


def main() -> None:
    """Console-script entry point: ragtrail errors become one clear line and exit status 2."""
    try:
        app()
    except RagtrailError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
