"""What masking costs: the current sanitising step against the previous implementation, in one run.

The previous implementation is loaded from git (``--baseline``, default: the merge-base with ``main``)
into a temporary module, so both run on the same machine, in the same process, on the same texts.

Measured (µs per call, best of ``--repeat`` rounds, each round long enough to time reliably):

* ``mask 1KB`` / ``mask 32KB``: ``mask_secrets`` on a content value of that size with no secret in it
  (the common case) and with three secrets in it;
* ``span guard``: the store exporter's per-span check of a typical LLM span's attributes and name
  (content values masked when recorded are skipped, as in the exporter; a fresh run id per span),
  before → after.

Texts of up to 160 characters found clean are remembered (attribute names, kinds, model names repeat on
every span), so the 1 KB and 32 KB figures are the cost of a new text.

    .venv/bin/python -m benchmarks.masking                 # against the merge-base with main
    .venv/bin/python -m benchmarks.masking --baseline HEAD~5
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the retrieval step returns four passages about the history of the printing press, each with a "
         "score; the model then answers the question in two sentences and cites the passages it used. ").split()  # fmt: skip
SECRETS = ("sk-proj-" + "A1b2C3d4" * 4, "postgresql://app:Sup3rSecret@db.internal:5432/prod", "password=hunter2hunter2")


def _text(size: int, secrets: bool) -> str:
    out: list[str] = []
    n = 0
    i = 0
    while n < size:
        w = WORDS[i % len(WORDS)]
        out.append(w)
        n += len(w) + 1
        i += 1
    text = " ".join(out)[:size]
    if secrets:
        step = size // (len(SECRETS) + 1)
        for k, s in enumerate(SECRETS, 1):
            text = text[: k * step] + " " + s + " " + text[k * step + len(s) + 2 :]
        text = text[:size]
    return text


def _load_old(ref: str, path: str, name: str) -> types.ModuleType:
    src = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    d = tempfile.mkdtemp(prefix="ragtrail-bench-")
    file = os.path.join(d, f"{name}.py")
    with open(file, "w", encoding="utf-8") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _time(fn: Callable[[], Any], repeat: int) -> float:
    """Best µs per call over ``repeat`` rounds of ~50 ms each."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt > 0.05:
            break
        n *= 2
    best = dt / n
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def _span_attrs() -> dict[str, Any]:
    return {
        "ragtrail.span.kind": "LLM", "gen_ai.operation.name": "chat", "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-4o-mini", "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
        "gen_ai.usage.input_tokens": 812, "gen_ai.usage.output_tokens": 64, "ragtrail.cost.usd": 0.000160,
        "ragtrail.cost.source": "price_table", "langchain.run_id": "0f8e2a4c-5b1d-4c3e-9a7f-2d6b8e1c4a90",
        "langchain.run_type": "llm", "gen_ai.request.temperature": 0.0, "ragtrail.tokens.source": "provider",
        "gen_ai.response.finish_reasons": ("stop",), "ragtrail.project": "bench",
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--baseline", default=None, help="git ref of the previous implementation (default: merge-base with main)"
    )
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    ref = args.baseline or subprocess.run(["git", "merge-base", "HEAD", "main"], cwd=ROOT, capture_output=True,
                                          text=True, check=True).stdout.strip()  # fmt: skip
    sys.path.insert(0, ROOT)
    from ragtrail.tracing import _secrets as new
    from ragtrail.tracing._content import DEFAULT_SANITIZER, sanitize_attributes

    # mask_secrets lives in _secrets.py (standalone) since issue 18 split it out of _content.py
    has_secrets = subprocess.run(["git", "cat-file", "-e", f"{ref}:src/ragtrail/tracing/_secrets.py"], cwd=ROOT,
                                 capture_output=True).returncode == 0  # fmt: skip
    old = _load_old(ref, f"src/ragtrail/tracing/{'_secrets' if has_secrets else '_content'}.py", "_old_masking")
    try:  # the span guard compares with the exporter's old substring guard (gone since the one sanitising step)
        old_exp: Any = _load_old(ref, "src/ragtrail/tracing/_exporter.py", "_old_exporter")
        old_exp._guard_hit  # noqa: B018
    except (ImportError, AttributeError, subprocess.CalledProcessError):
        old_exp = None
    print(f"baseline {ref[:12]} vs working tree; best of {args.repeat}; µs per call; load: {os.getloadavg()[0]:.2f}")
    print(f"{'case':34}{'before':>10}{'after':>10}{'after/before':>14}")
    for size, label in ((1024, "1KB"), (32 * 1024, "32KB")):
        for secrets in (False, True):
            text = _text(size, secrets)
            o, n = old.mask_secrets(text), new.mask_secrets(text)
            if not secrets:
                assert o == (text, 0) and n == (text, 0)
            b = _time(lambda t=text: old.mask_secrets(t), args.repeat)
            a = _time(lambda t=text: new.mask_secrets(t), args.repeat)
            name = f"mask {label} {'3 secrets' if secrets else 'clean'}"
            print(f"{name:34}{b:10.1f}{a:10.1f}{a / b:14.2f}")
    if old_exp is None:
        print(f"span guard: skipped (the exporter at {ref[:12]} has no substring guard to compare with)")
        return
    attrs = _span_attrs()
    content = _text(2048, False)
    attrs_c = {**attrs, "gen_ai.input.messages": content, "gen_ai.output.messages": content[:400]}
    for label, at in (("span guard, no content", attrs), ("span guard, content premasked", attrs_c)):
        skip = {id(v) for k, v in at.items() if k.startswith("gen_ai.input") or k.startswith("gen_ai.output")}

        def before(at: dict[str, Any] = at, skip: set[int] = skip) -> Any:
            at = {**at, "langchain.run_id": os.urandom(16).hex()}
            # the previous exporter: serialise, then its substring guard over keys and non-premasked values
            js = old_exp._attrs_json(at)
            parts: list[str] = list(at)
            for v in at.values():
                if type(v) is str and id(v) not in skip:
                    parts.append(v)
            return old_exp._guard_hit("\x00".join(parts)) or js

        def after(at: dict[str, Any] = at, skip: set[int] = skip) -> Any:
            # the run id is new on every span: never in the clean cache, always searched
            at = {**at, "langchain.run_id": os.urandom(16).hex()}
            sanitize_attributes(at, DEFAULT_SANITIZER, skip, "chat gpt-4o-mini")
            return old_exp._attrs_json(at)

        b = _time(before, args.repeat)
        a = _time(after, args.repeat)
        print(f"{label:34}{b:10.1f}{a:10.1f}{a / b:14.2f}")


if __name__ == "__main__":
    main()
