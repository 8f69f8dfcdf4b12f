"""Entry point of the writer process (``python -m ragtrail.tracing._writer_child``); see ``_writer``."""

from __future__ import annotations

import sys

from ragtrail.tracing._writer import _child_main

if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
