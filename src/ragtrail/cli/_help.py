"""Readable ``--help`` for every command: metavars, grouping and order (applied once, to the whole tree).

Typer shows an option's Python type as its metavar (``<str>``, ``<bool>``, ``<list[str]>``). The root
group walks the command tree when it is built and gives every option a metavar that says what to type
(``--store PATH|URL``, ``--limit N``), drops the type from flags, files the top-level commands under
"Tracing" and "Evaluation" panels in workflow order, and completes group descriptions.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperGroup

# option name -> metavar; anything else gets its name in capitals (``--title TITLE``)
METAVARS = {
    "store": "PATH|URL", "limit": "N", "since": "ISO-TIME", "project": "NAME", "output": "FILE",
    "fmt": "jsonl|parquet", "prices": "FILE", "backend": "local|ray", "max_cost": "USD", "resume": "RUN",
    "baseline": "RUN", "gates": "FILE", "gate": "GATE", "junit": "FILE", "markdown": "FILE", "seed": "INT",
    "alias": "ALIAS", "by": "NAME", "max_examples": "N", "host": "HOST", "token": "TOKEN",
}  # fmt: skip

# top-level command -> (help panel, position)
PANELS = {
    "traces": ("Tracing", 0), "ui": ("Tracing", 1), "serve": ("Tracing", 2), "store": ("Tracing", 3),
    "datasets": ("Evaluation", 10), "eval": ("Evaluation", 11), "runs": ("Evaluation", 12),
    "gate": ("Evaluation", 13), "report": ("Evaluation", 14), "sweep": ("Evaluation", 15),
    "artifacts": ("Versioned artifacts", 20), "prompts": ("Versioned artifacts", 21),
}  # fmt: skip
OTHER = ("More", 99)  # a command added later without a place here: listed last, never first

GROUP_HELP = {
    "runs": "List, show, compare, alias and promote versioned eval runs.",
}


def readable(cmd: Any) -> None:
    """Give every option of ``cmd`` and its subcommands a readable metavar (flags none)."""
    for p in getattr(cmd, "params", []):
        if p.param_type_name == "argument":
            _untyped(p)  # its name says what to type (RUNS…); typer would add <list[str]>
            continue
        if p.param_type_name != "option" or p.metavar is not None:
            continue
        p.metavar = "" if p.is_flag else METAVARS.get(p.name, (p.name or "value").upper().replace("_", "-"))
    _plain_help_flag(cmd)
    for sub in getattr(cmd, "commands", {}).values():
        readable(sub)


def _untyped(argument: Any) -> None:
    """Typer lists an argument's Python type (``<str>``) beside its name: show the name alone."""
    if hasattr(argument, "display_type_rich"):
        argument.display_type_rich = lambda ctx: None


def _plain_help_flag(cmd: Any) -> None:
    """``--help`` is made per context (``get_help_option``): drop its ``<bool>`` type as it is made."""
    make = cmd.get_help_option

    def get_help_option(ctx: Any) -> Any:
        option = make(ctx)
        if option is not None and option.metavar is None:
            option.metavar = ""
        return option

    cmd.get_help_option = get_help_option


class RootGroup(TyperGroup):
    """The ``ragtrail`` group: readable help for the whole tree, commands in workflow order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        readable(self)
        for name, cmd in self.commands.items():
            cmd.rich_help_panel = PANELS.get(name, OTHER)[0]  # type: ignore[attr-defined]  # typer commands have it
            if name in GROUP_HELP:
                cmd.help = GROUP_HELP[name]

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: (PANELS.get(n, OTHER)[1], names.index(n)))
