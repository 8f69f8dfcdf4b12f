"""A prompt registry: content-addressed prompt versions with aliases, in the ragtrail store.

>>> from ragtrail import prompts
>>> p = prompts.push("qa", "Answer from the context.\\n{context}\\nQ: {question}")  # doctest: +SKIP
>>> prompts.set_alias("qa:v1", "production")                                      # doctest: +SKIP
>>> qa = prompts.get("qa:production")                                             # doctest: +SKIP
>>> qa.render(context="…", question="…")                                          # doctest: +SKIP
>>> chain = qa.to_langchain() | llm                                               # doctest: +SKIP

A version is the hash of (format, template, model, params): pushing the same content again returns the
existing version. Versions are numbered per name (``qa:v1``, ``qa:v2``…); aliases (``production``,
``staging``…) move atomically with a history, in the same alias tables as runs and artifacts.

Formats: ``f-string`` (``{var}``), ``mustache`` (``{{var}}``, sections; ``{{var}}`` is HTML-escaped as
the mustache spec and LangChain do, ``{{{var}}}`` is not) and ``chat`` (a list of ``{"role", "content"}``
messages whose contents are f-strings; role ``placeholder`` with content ``{history}`` inserts messages).

Spans: :meth:`PromptVersion.render` records a ``prompt <name>`` span, and the LangChain template from
:meth:`PromptVersion.to_langchain` carries the prompt in its run metadata, so ragtrail's LangChain handler
puts :data:`~ragtrail.semconv.PROMPT_NAME` / :data:`~ragtrail.semconv.PROMPT_VERSION` on the prompt's span
and on the LLM spans that follow it in the same chain. ``str(version)`` is ``name:vN``: put the version in
an eval run's ``config`` and comparisons of runs show which prompt each used.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragtrail import semconv
from ragtrail._exceptions import ConfigError, RagtrailError
from ragtrail._store_of import store_of as _store
from ragtrail.store import _artifacts as db

FORMATS = ("f-string", "mustache", "chat")
_NAME = re.compile(r"^[A-Za-z0-9_.\-/]+$")
_ANY: Any = db._ANY  # the store's "no expectation" marker
_ROLES = {"system": "system", "user": "human", "human": "human", "assistant": "ai", "ai": "ai",
          "placeholder": "placeholder"}  # fmt: skip


class PromptError(RagtrailError):
    """A prompt version cannot be found, or rendered with the variables given."""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


# ------------------------------------------------------------------------------------- templates
def _fstring_vars(template: str, where: str) -> list[str]:
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid f-string template ({exc}); write literal braces as {{{{ }}}}") from exc
    out = []
    for n in names:
        if not n or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", n):
            raise ConfigError(f"{where}: the placeholder {{{n}}} is not a plain variable name")
        out.append(n)
    return list(dict.fromkeys(out))


_TAG = re.compile(r"\{\{(\{?)\s*([#^/!&]?)\s*([^}]*?)\s*\}?\}\}")


def _mustache_tokens(template: str, where: str) -> list[tuple[str, str]]:
    """Tokens of a mustache template: ("text", s), ("var", name), ("raw", name), ("section", name),
    ("inverted", name), ("end", name)."""
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _TAG.finditer(template):
        if m.start() > pos:
            out.append(("text", template[pos : m.start()]))
        pos = m.end()
        triple, sigil, name = m.group(1), m.group(2), m.group(3)
        if sigil == "!":
            continue
        kind = {"#": "section", "^": "inverted", "/": "end", "&": "raw"}.get(sigil, "raw" if triple else "var")
        if not name:
            raise ConfigError(f"{where}: an empty mustache tag at offset {m.start()}")
        if name[0] in ">=<":
            raise ConfigError(f"{where}: mustache partials and delimiter changes are not supported ({m.group(0)})")
        out.append((kind, name))
    if pos < len(template):
        out.append(("text", template[pos:]))
    return out


def _mustache_tree(tokens: list[tuple[str, str]], where: str) -> list[Any]:
    root: list[Any] = []
    stack: list[tuple[str, str, list[Any]]] = []
    cur = root
    for kind, name in tokens:
        if kind in ("section", "inverted"):
            node: list[Any] = []
            cur.append((kind, name, node))
            stack.append((kind, name, cur))
            cur = node
        elif kind == "end":
            if not stack or stack[-1][1] != name:
                raise ConfigError(f"{where}: mustache section {{{{/{name}}}}} closes nothing open")
            cur = stack.pop()[2]
        else:
            cur.append((kind, name))
    if stack:
        raise ConfigError(f"{where}: mustache section {{{{#{stack[-1][1]}}}}} is never closed")
    return root


def _lookup(ctx: list[Any], name: str) -> Any:
    if name == ".":
        return ctx[-1]
    first, *rest = name.split(".")
    for frame in reversed(ctx):
        if isinstance(frame, Mapping) and first in frame:
            value = frame[first]
            for part in rest:
                value = value.get(part) if isinstance(value, Mapping) else getattr(value, part, None)
            return value
    return None


def _mustache_render(tree: list[Any], ctx: list[Any]) -> str:
    out = []
    for node in tree:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind in ("var", "raw"):
            v = _lookup(ctx, node[1])
            text = "" if v is None else str(v)
            out.append(html.escape(text, quote=True) if kind == "var" else text)
        else:
            v = _lookup(ctx, node[1])
            if kind == "inverted":
                if not v:
                    out.append(_mustache_render(node[2], ctx))
            elif isinstance(v, (list, tuple)):
                out.extend(_mustache_render(node[2], [*ctx, item]) for item in v)
            elif v:
                out.append(_mustache_render(node[2], [*ctx, v] if isinstance(v, Mapping) else ctx))
    return "".join(out)


def _mustache_vars(tree: list[Any]) -> list[str]:
    out: list[str] = []
    for node in tree:
        if node[0] in ("var", "raw", "section", "inverted") and node[1] != ".":
            out.append(node[1].split(".")[0])
        if node[0] in ("section", "inverted"):
            out.extend(_mustache_vars(node[2]))  # names inside a section may come from the item too
    return list(dict.fromkeys(out))


def _check_template(template: Any, format: str, where: str) -> Any:  # noqa: A002 - the public name
    if format not in FORMATS:
        raise ConfigError(f"{where}: format must be one of {', '.join(FORMATS)}, not {format!r}")
    if format == "chat":
        if isinstance(template, (str, bytes)) or not isinstance(template, Sequence) or not template:
            raise ConfigError(f"{where}: a chat template is a non-empty list of {{'role', 'content'}} messages")
        msgs = []
        for i, m in enumerate(template):
            if isinstance(m, Mapping):
                role, content = m.get("role"), m.get("content")
            elif isinstance(m, Sequence) and not isinstance(m, str) and len(m) == 2:
                role, content = m
            else:
                raise ConfigError(f"{where}: message {i} must be {{'role': …, 'content': …}} or (role, content)")
            if role not in _ROLES or not isinstance(content, str):
                raise ConfigError(
                    f"{where}: message {i} needs a role among {', '.join(_ROLES)} and a string content, "
                    f"not role={role!r}"
                )
            names = _fstring_vars(content, f"{where}: message {i}")
            if role == "placeholder" and (len(names) != 1 or content.strip() != f"{{{names[0]}}}"):
                raise ConfigError(
                    f"{where}: message {i}: a placeholder's content is one variable, such as '{{history}}'"
                )
            msgs.append({"role": role, "content": content})
        return msgs
    if not isinstance(template, str):
        raise ConfigError(f"{where}: a {format} template is a string, not {type(template).__name__}")
    if format == "f-string":
        _fstring_vars(template, where)
    else:
        _mustache_tree(_mustache_tokens(template, where), where)
    return template


# ----------------------------------------------------------------------------------- versions
@dataclass
class PromptVersion:
    """One stored prompt version. ``str(p)`` is ``name:vN``."""

    name: str
    version: int
    digest: str
    format: str
    template: Any
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    created_by: str | None = None
    aliases: list[str] = field(default_factory=list)
    created: bool = True

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    def __str__(self) -> str:
        return self.ref

    @property
    def attributes(self) -> dict[str, Any]:
        """The span attributes that name this version (put them on your own spans)."""
        return {semconv.PROMPT_NAME: self.name, semconv.PROMPT_VERSION: self.version,
                semconv.PROMPT_DIGEST: self.digest}  # fmt: skip

    @property
    def variables(self) -> list[str]:
        """The variables the template uses, in order of first use."""
        if self.format == "f-string":
            return _fstring_vars(self.template, self.ref)
        if self.format == "chat":
            out: list[str] = []
            for m in self.template:
                out += _fstring_vars(m["content"], self.ref)
            return list(dict.fromkeys(out))
        return _mustache_vars(_mustache_tree(_mustache_tokens(self.template, self.ref), self.ref))

    def _format(self, variables: Mapping[str, Any]) -> Any:
        if self.format == "mustache":
            return _mustache_render(_mustache_tree(_mustache_tokens(self.template, self.ref), self.ref), [variables])
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise PromptError(
                f"prompt {self.ref} needs the variable(s) {', '.join(missing)}; it uses {', '.join(self.variables)}"
            )
        if self.format == "f-string":
            return self.template.format_map(variables)
        out: list[dict[str, Any]] = []
        for m in self.template:
            if m["role"] == "placeholder":
                value = variables.get(_fstring_vars(m["content"], self.ref)[0]) or []
                out.extend(value if isinstance(value, list) else [value])
            else:
                out.append({"role": m["role"], "content": m["content"].format_map(variables)})
        return out

    def render(self, **variables: Any) -> Any:
        """The template filled in: a string (f-string, mustache) or a list of ``{"role", "content"}``
        messages (chat). Recorded as a ``prompt <name>`` span carrying the prompt's name and version."""
        from ragtrail.tracing import capture_content, set_content, span

        with span(f"prompt {self.name}", kind=semconv.CHAIN, attributes=self.attributes) as s:
            out = self._format(variables)
            if s.is_recording() and capture_content():
                set_content(s, semconv.OUTPUT_VALUE, out)
        return out

    def to_langchain(self) -> Any:
        """A LangChain ``ChatPromptTemplate`` whose run metadata names this version (so ragtrail's
        handler tags the prompt span and the LLM spans after it). Needs ``ragtrail[langchain]``."""
        from ragtrail._deps import require

        prompts = require("langchain_core.prompts", extra="langchain", package="langchain-core")
        if self.format == "chat":
            msgs = [(_ROLES[m["role"]], m["content"]) for m in self.template]
            fmt = "f-string"
        else:
            msgs = [("human", self.template)]
            fmt = self.format
        tpl = prompts.ChatPromptTemplate.from_messages(msgs, template_format=fmt)
        tpl.metadata = {**(tpl.metadata or {}), **self.attributes}
        return tpl

    def to_llama_index(self) -> Any:
        """A LlamaIndex ``PromptTemplate`` (``ChatPromptTemplate`` for chat) with this version in its
        metadata. Mustache templates are refused (LlamaIndex formats with ``str.format``)."""
        from ragtrail._deps import require

        core = require("llama_index.core.prompts", extra="llama-index", package="llama-index-core")
        meta = dict(self.attributes)
        if self.format == "f-string":
            return core.PromptTemplate(self.template, metadata=meta)
        if self.format == "chat":
            from llama_index.core.base.llms.types import ChatMessage

            roles = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "ai": "assistant"}
            msgs = []
            for m in self.template:
                if m["role"] == "placeholder":
                    raise PromptError(f"prompt {self.ref}: LlamaIndex chat templates have no message placeholders")
                msgs.append(ChatMessage(role=roles[m["role"]], content=m["content"]))
            return core.ChatPromptTemplate(message_templates=msgs, metadata=meta)
        raise PromptError(f"prompt {self.ref} is a mustache template; LlamaIndex needs an f-string or chat prompt")


def _from_row(row: Mapping[str, Any], store: Any) -> PromptVersion:
    aliases = sorted(a for a, t in db.aliases_of(store, db.PROMPT_NS + row["name"]).items() if t == row["digest"])
    return PromptVersion(
        name=row["name"], version=row["version"], digest=row["digest"], format=row["format"],
        template=row["template"], model=row["model"], params=row["params"], created_at=row["created_at"],
        created_by=row["created_by"], aliases=aliases,
    )  # fmt: skip


def _who(by: str | None) -> str | None:
    return by or os.environ.get("RAGTRAIL_USER") or os.environ.get("USER") or os.environ.get("USERNAME")


def prompt_digest(template: Any, format: str, model: str | None, params: Mapping[str, Any]) -> str:  # noqa: A002
    """The content digest of a prompt version (sha256 of its canonical JSON)."""
    body = {"format": format, "template": template, "model": model, "params": dict(params)}
    return hashlib.sha256(_canonical(body).encode()).hexdigest()


def push(
    name: str,
    template: Any,
    *,
    format: str = "f-string",  # noqa: A002 - the public name
    model: str | None = None,
    params: Mapping[str, Any] | None = None,
    aliases: Sequence[str] = (),
    store: Any = None,
    by: str | None = None,
) -> PromptVersion:
    """Store a prompt version (the existing one when the same content was pushed before) and move
    ``aliases`` to it. ``model``/``params`` (temperature…) are part of the version."""
    if not isinstance(name, str) or not _NAME.match(name) or name.startswith(("/", ".")):
        raise ConfigError(f"prompt name {name!r} is not allowed: use letters, digits and _ . - / (no ':')")
    tpl = _check_template(template, format, f"prompt {name!r}")
    prm = dict(params or {})
    try:
        _canonical(prm)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"prompt {name!r}: params must be JSON-serialisable ({exc})") from exc
    from ragtrail.artifacts._artifact import check_alias

    alias_list = [check_alias(a) for a in aliases]
    st = _store(store)
    digest = prompt_digest(tpl, format, model, prm)
    who = _who(by)
    version, created = db.insert_prompt_version(st, name, digest, format, _canonical(tpl), model=model,
                                                params=_canonical(prm), created_by=who)  # fmt: skip
    for a in alias_list:
        db.move_alias(st, db.PROMPT_NS + name, a, digest, by=who)
    row = db.prompt_version(st, name, version=version)
    assert row is not None
    out = _from_row(row, st)
    out.created = created
    return out


def _resolve(st: Any, ref: str) -> dict[str, Any]:
    try:
        return db.resolve_version(st, ref, "prompt")
    except db.VersionNotFoundError as exc:
        raise PromptError(str(exc)) from None


def get(ref: str, *, store: Any = None) -> PromptVersion:
    """A stored prompt version: ``name:vN``, ``name:<alias>``, ``name:latest`` or ``name``."""
    st = _store(store)
    return _from_row(_resolve(st, ref), st)


def versions(name: str, *, store: Any = None) -> list[PromptVersion]:
    """Every version of prompt ``name``, oldest first."""
    st = _store(store)
    return [_from_row(r, st) for r in db.prompt_versions(st, name)]


def list_prompts(*, store: Any = None) -> list[dict[str, Any]]:
    """One dict per prompt name: name, n_versions, latest, updated_at."""
    return db.list_prompts(_store(store))


def set_alias(ref: str, alias: str, *, store: Any = None, by: str | None = None, expected: Any = _ANY) -> str | None:
    """Point ``alias`` of the prompt at version ``ref`` (atomic, with history); with ``expected`` (a
    version reference or None for "unset") only if the alias still points there. Returns the previous
    version's reference."""
    from ragtrail.artifacts._artifact import move_version_alias

    st = _store(store)

    def moved(name: str, exc: db.AliasMovedError) -> Exception:
        return PromptError(f"{name}:{alias} moved meanwhile (expected {expected}); read it again and retry")

    name, prev = move_version_alias(st, db.PROMPT_NS, _resolve, ref, alias, expected, by, moved)
    if prev is None:
        return None
    old = db.prompt_version(st, name, digest=prev)
    return f"{name}:v{old['version']}" if old else None


def alias_history(name: str, alias: str | None = None, *, store: Any = None) -> list[dict[str, Any]]:
    """Moves of prompt ``name``'s aliases, oldest first: alias, version, previous, set_at, set_by."""
    st = _store(store)
    nums = {v["digest"]: f"{name}:v{v['version']}" for v in db.prompt_versions(st, name)}
    return [
        {"alias": h["alias"], "version": nums.get(h["target"]), "previous": nums.get(h["previous"]) if h["previous"] else None,
         "set_at": h["set_at"], "set_by": h["set_by"]}
        for h in db.alias_history(st, db.PROMPT_NS + name, alias)
    ]  # fmt: skip


__all__ = [
    "FORMATS",
    "PromptError",
    "PromptVersion",
    "alias_history",
    "get",
    "list_prompts",
    "prompt_digest",
    "push",
    "set_alias",
    "versions",
]
