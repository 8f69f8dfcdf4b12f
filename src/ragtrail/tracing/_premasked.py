"""The "masked once" note: content values masked when they were recorded (``content_value``).

:func:`note_masked` is called where a value is recorded (or rebuilt in the writer process) and
:func:`take_masked` by the store exporter, which then need not scan that value again.
"""

from __future__ import annotations

import threading
from typing import Any

# Content values masked when they were recorded (``content_value``), so the store exporter's last
# line of defence need not scan them again. Keyed by id() and checked by identity (the entry holds the
# string itself, so its id cannot be reused while listed), with a count of the spans that carry it (a
# connector may record the very same text on adjacent spans: a prompt's output is the model's input);
# each span's export takes one. Bounded in count and characters.
_PREMASKED: dict[int, list[Any]] = {}  # id -> [text, spans still to export it]
_premasked_chars = 0
_PREMASKED_MIN = 48  # shorter values are cheaper to rescan than to track
# The entries are the very strings the queued spans hold (no copies): the caps only bound what spans
# dropped before export leave behind. They must cover the export queue's backlog under load, or every
# evicted value is scanned again by the exporter, which then falls further behind (issue 24: at 5,000
# 5 KB spans/s an 8M-character cap covered 0.3 s and most values were rescanned).
_PREMASKED_MAX_CHARS = 128_000_000
_PREMASKED_MAX_ITEMS = 131_072
_premasked_lock = threading.Lock()


def note_masked(text: str) -> None:
    """Remember that ``text`` (this very object) has been through :func:`mask_secrets` and is on one
    more span (call it again for each further span that records the same object)."""
    global _premasked_chars
    if len(text) < _PREMASKED_MIN:
        return
    with _premasked_lock:
        key = id(text)
        entry = _PREMASKED.get(key)
        if entry is not None and entry[0] is text:
            entry[1] += 1
            return
        _PREMASKED[key] = [text, 1]
        _premasked_chars += len(text)
        while _premasked_chars > _PREMASKED_MAX_CHARS or len(_PREMASKED) > _PREMASKED_MAX_ITEMS:
            old = _PREMASKED.pop(next(iter(_PREMASKED)))
            _premasked_chars -= len(old[0])


def take_masked(text: str) -> bool:
    """True when ``text`` is a value :func:`note_masked` saw (one span's claim on it is used up)."""
    global _premasked_chars
    if len(text) < _PREMASKED_MIN:
        return False
    entry = _PREMASKED.get(id(text))
    if entry is None or entry[0] is not text:
        return False
    with _premasked_lock:
        entry = _PREMASKED.get(id(text))
        if entry is None or entry[0] is not text:
            return False
        entry[1] -= 1
        if entry[1] <= 0:
            del _PREMASKED[id(text)]
            _premasked_chars -= len(text)
    return True
