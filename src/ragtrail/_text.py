"""Stored text is hostile wherever it is shown: helpers that make it safe for a terminal.

Span, run, dataset and metric names come from users, remote senders and files. Printed raw they can
move the cursor or rewrite the screen (OSC/CSI escape sequences), and in ``rich`` output ``[/]`` or
``[link=…]`` crash the print with a ``MarkupError`` or render a link.
"""

from __future__ import annotations

import re
from typing import Any

# C0 controls except tab and newline, DEL, and C1 controls (the 8-bit CSI/OSC introducers)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MARKUP = re.compile(r"(\\*)(\[[a-zA-Z#/@=!:\]][^\[]*?\])")


def strip_control(text: Any) -> str:
    """``text`` as a string without terminal control characters (tab and newline kept)."""
    s = text if isinstance(text, str) else str(text)
    return _CONTROL.sub("", s)


def escape_markup(text: Any) -> str:
    """``text`` safe inside ``rich`` markup: control characters removed, every ``[…]`` tag escaped."""
    s = strip_control(text)
    if "[" not in s:
        return s
    return _MARKUP.sub(lambda m: m.group(1) * 2 + "\\" + m.group(2), s)
