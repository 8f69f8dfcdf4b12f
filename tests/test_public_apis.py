"""ragtrail uses only the public API of OpenTelemetry (DESIGN.md: "only public APIs of OpenTelemetry and
of every framework").

Read from the source (ast), nothing is imported. A *foreign private name* is an attribute ``x._name``
(or ``getattr(x, "_name")``, or ``from opentelemetry... import _name``) where ``_name`` is not one that
ragtrail itself defines anywhere (a function, class, assignment, argument, ``self._name = ...``, module
or import alias). Such a name belongs to another library's internals, which any release may change
silently. The few that remain are listed below with their reason; the list may only shrink.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "src" / "ragtrail"

ALLOWED: dict[str, str] = {
    # OpenTelemetry
    "_SUPPRESS_INSTRUMENTATION_KEY": "the context key the SDK's own exporters and every contrib instrumentation "
    "check; opentelemetry-api has no other name for it (the helpers in opentelemetry.instrumentation.utils cost "
    "~25 ms at import, too much for `import ragtrail`)",
    "_SPAN_KEY": "connectors/langchain/_handler.py sets the current span in a context it builds itself; "
    "to shrink (opentelemetry.trace.set_span_in_context does the same publicly) -- the handler is being rewritten",
    "_RUNTIME_CONTEXT": "connectors/llama_index detaches a token from another context; to shrink",
    # namedtuple's public API (its names start with "_" so as not to clash with fields)
    "_replace": "namedtuple API",
    "_asdict": "namedtuple API",
    # frameworks other than OpenTelemetry (the same rule applies; to shrink)
    "_name_or_path": "transformers: the model id on a config / model (transformers has no public twin)",
    "_embedding_function": "chromadb: a collection's embedding function (no public getter before 0.5)",
    "_settings": "chromadb: an old client's settings, only when get_settings() is missing",
    "_similarity_top_k": "llama_index: a retriever's top_k",
    "_configure_hooks": "langchain_core: unregistering the handler's context variable hook",
    "_post_tokenizer": "sacrebleu: its 13a tokenizer's regexes (falls back to sacrebleu's own on any change)",
    "_re": "sacrebleu: as above",
}

OTEL_SDK_PRIVATES = ("_queue", "_span_processors", "_active_span_processor", "_attributes", "_events", "_links",
                     "_batch_processor", "_span_limits", "_instrumentation_scope", "_tracer_metrics", "_Span")  # fmt: skip
"""Names the code once read; none of them is defined by ragtrail, so any use would be reported."""


def _trees() -> dict[Path, ast.AST]:
    return {p: ast.parse(p.read_text(encoding="utf-8"), str(p)) for p in sorted(PKG.rglob("*.py"))}


def _own_names(trees: dict[Path, ast.AST]) -> set[str]:
    """Every name that ragtrail's own code defines."""
    own: set[str] = set()
    for path, tree in trees.items():
        own.update((path.stem, path.parent.name))
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(n.name)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                own.add(n.id)
            elif isinstance(n, ast.Attribute) and isinstance(n.ctx, (ast.Store, ast.Del)):
                own.add(n.attr)
            elif isinstance(n, ast.alias) and n.asname:
                own.add(n.asname)
            elif isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("ragtrail"):
                own.update(a.name for a in n.names)
            elif isinstance(n, ast.arg):
                own.add(n.arg)
            elif (
                isinstance(n, ast.Call)
                and isinstance(n.func, ast.Name)
                and n.func.id == "setattr"
                and len(n.args) > 1
                and isinstance(n.args[1], ast.Constant)
            ):
                own.add(str(n.args[1].value))
    return own


def _private(name: object) -> bool:
    return isinstance(name, str) and name.startswith("_") and not name.startswith("__")


def _foreign_privates() -> dict[str, list[str]]:
    """``{name: ["file:line", ...]}`` for every use of a private name that ragtrail does not define."""
    trees = _trees()
    own = _own_names(trees)
    found: dict[str, list[str]] = defaultdict(list)
    for path, tree in trees.items():
        where = str(path.relative_to(PKG.parent))
        for n in ast.walk(tree):
            names: list[str] = []
            if isinstance(n, ast.Attribute) and _private(n.attr):
                if isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"):
                    continue  # ragtrail's own object
                names.append(n.attr)
            elif (
                isinstance(n, ast.Call)
                and isinstance(n.func, ast.Name)
                and n.func.id in ("getattr", "hasattr")
                and len(n.args) > 1
                and isinstance(n.args[1], ast.Constant)
                and _private(n.args[1].value)
            ):
                names.append(str(n.args[1].value))
            elif isinstance(n, ast.ImportFrom) and n.level == 0 and (n.module or "").startswith("opentelemetry"):
                names.extend(a.name for a in n.names if _private(a.name))
                if any(_private(part) for part in (n.module or "").split(".")):
                    names.append(str(n.module))  # a private module of OpenTelemetry
            for name in names:
                # the SDK internals once read are reported even where ragtrail has a name like them
                if name not in own or name in OTEL_SDK_PRIVATES or isinstance(n, ast.ImportFrom):
                    found[name].append(f"{where}:{n.lineno}")
    return found


def test_no_private_names_of_other_libraries():
    found = _foreign_privates()
    unexpected = {k: v for k, v in found.items() if k not in ALLOWED}
    assert not unexpected, (
        "private names of other libraries (OpenTelemetry's internals first of all) are used in src/ragtrail; "
        f"use their public API: {dict(unexpected)}"
    )


def test_the_allowed_list_only_shrinks():
    """An entry nobody uses any more must go, so that the list tells the truth."""
    stale = set(ALLOWED) - set(_foreign_privates())
    assert not stale, f"remove these from ALLOWED, nothing uses them now: {sorted(stale)}"


def test_the_check_catches_the_sdk_privates_it_was_written_for(tmp_path, monkeypatch):
    """The check itself works: code that reads the SDK's internals (as ragtrail once did) is reported."""
    pkg = tmp_path / "ragtrail"
    pkg.mkdir()
    (pkg / "_queue.py").write_text("class _X:\n    def __init__(self):\n        self._events = []\n")
    (pkg / "bad.py").write_text(
        "from opentelemetry.sdk.trace import _Span\n"
        "def f(span, p, provider):\n"
        "    q = getattr(getattr(p, '_batch_processor', p), '_queue', None)\n"
        "    return span._events, q, provider._active_span_processor._span_processors\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    found = _foreign_privates()
    for name in ("_Span", "_batch_processor", "_queue", "_events", "_active_span_processor", "_span_processors"):
        assert found.get(name) and found[name][0].startswith("ragtrail/bad.py"), name
