"""MkDocs hooks for the ragtrail docs (``hooks:`` in mkdocs.yml).

- Feature pages that helpers add as ``docs/<topic>.md`` appear under "Features" in the navigation even
  before someone lists them in mkdocs.yml (so a new page is never silently left out of the site).
- ``<!-- cli-reference -->`` in a page is replaced by the CLI reference, generated from the typer app
  (every command, its arguments and options with their help), so it cannot go stale.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

CLI_MARKER = "<!-- cli-reference -->"
_ROOT = Path(__file__).resolve().parent.parent


def _nav_files(nav: Any) -> set[str]:
    out: set[str] = set()
    if isinstance(nav, str):
        out.add(nav)
    elif isinstance(nav, list):
        for item in nav:
            out |= _nav_files(item)
    elif isinstance(nav, dict):
        for value in nav.values():
            out |= _nav_files(value)
    return out


def unlisted_pages(docs_dir: Path, nav: Any) -> list[str]:
    """Markdown pages under ``docs_dir`` that the navigation does not list (hooks and assets aside)."""
    listed = _nav_files(nav)
    pages = []
    for p in sorted(docs_dir.rglob("*.md")):
        rel = p.relative_to(docs_dir).as_posix()
        if rel in listed or rel.startswith(("img/", "_")) or "/_" in rel:
            continue
        pages.append(rel)
    return pages


def on_config(config: Any) -> Any:
    nav = config["nav"]
    extra = unlisted_pages(Path(config["docs_dir"]), nav)
    for i, item in enumerate(nav):
        if isinstance(item, dict) and "Features" in item:
            listed = list(item["Features"] or [])
            listed += [{_title(Path(config["docs_dir"]) / rel): rel} for rel in extra]
            if listed:
                item["Features"] = listed
            else:
                del nav[i]
            break
    return config


def _title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem.replace("-", " ").replace("_", " ").capitalize()


# ---------------------------------------------------------------------------------- CLI reference
def _param_row(param: Any) -> str:
    if param.param_type_name == "argument":
        name = f"`{(param.name or '').upper()}`" + ("…" if param.nargs != 1 else "")
        value = ""
    else:
        name = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
        value = param.metavar.replace("|", "\\|") if param.metavar else ""
        if getattr(param, "multiple", False):
            value += " (repeatable)"
    default = param.default
    default = "" if default in (None, (), [], False) or callable(default) else f"`{default}`"
    envvar = f" (env `{param.envvar}`)" if getattr(param, "envvar", None) else ""
    help_text = (getattr(param, "help", None) or "").replace("|", "\\|").replace("\n", " ")
    req = " **required**" if param.required else ""
    return f"| {name} | {value} | {default} | {help_text}{envvar}{req} |"


def _command_md(cmd: Any, path: list[str], parent: Any, out: list[str]) -> None:
    ctx = cmd.context_class(cmd, info_name=path[-1], parent=parent)
    if path[1:]:
        out.append(f"{'#' * min(len(path) + 1, 4)} `{' '.join(path)}`\n")
    text = (cmd.help or "").strip()
    if text:
        out.append(text.split("\b")[0].strip() + "\n")
    usage = re.sub(r"\{(\w+)\}", lambda m: m.group(1).upper(), " ".join(cmd.collect_usage_pieces(ctx)))
    out.append(f"```text\n{ctx.command_path} {usage}\n```\n")
    params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False) and p.name != "help"]
    if params:
        out.append("| argument / option | value | default | meaning |\n|---|---|---|---|")
        out.extend(_param_row(p) for p in params)
        out.append("")
    if hasattr(cmd, "list_commands"):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is not None and not getattr(sub, "hidden", False):
                _command_md(sub, [*path, name], ctx, out)


def cli_reference() -> str:
    """Markdown for every command of the ``ragtrail`` CLI."""
    # document the checkout being built, not whatever ragtrail is installed (mkdocs restores sys.path
    # after loading this module, so this happens here)
    src = _ROOT / "src" if (_ROOT / "src" / "ragtrail").is_dir() else _ROOT
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
    import typer

    from ragtrail.cli import app

    out: list[str] = []
    _command_md(typer.main.get_command(app), ["ragtrail"], None, out)
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown
