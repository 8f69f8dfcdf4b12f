"""Entry point of the writer process (``python -m ragtrail.tracing._writer_child``); see ``_writer``."""

from __future__ import annotations

import os
import sys
import threading

from ragtrail._log import warn_once
from ragtrail.tracing._writer import _ANSWER, _LEN, _REPLAY, _STOP, REFUSED, _decode, _read_exact, _rebuild


def _child_main(argv: list[str]) -> int:
    from ragtrail.store import open_store
    from ragtrail.tracing._exporter import StoreSpanExporter
    from ragtrail.tracing._spool import make_spool

    project, mask, spool_dir, spool_max = argv
    url = os.environ.pop("RAGTRAIL_WRITER_STORE")
    inp = sys.stdin.buffer
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing else may write into the answer pipe
    store = open_store(url)
    spool = make_spool(store, {"spool_dir": spool_dir, "spool_max_bytes": int(spool_max)})
    exp = StoreSpanExporter(store, project, mask_secrets=mask == "1", spool=spool)
    out.write(b"R")
    out.flush()
    lock = threading.Lock()
    try:
        while True:
            head = _read_exact(inp, _LEN.size)
            if len(head) < _LEN.size:
                break
            (n,) = _LEN.unpack(head)
            if n == _STOP:
                break
            e0, f0 = exp.exported, exp.failed
            refused = False
            with lock:
                if n == _REPLAY:
                    exp.force_flush()
                else:
                    payload = _read_exact(inp, n)
                    try:
                        spans = _rebuild(_decode(payload))
                    except Exception:
                        # nothing of it is lost: the answer hands the frame back, the app writes it itself
                        warn_once("writer-decode", "ragtrail: the writer process could not read a batch", exc_info=True)
                        refused = True
                    else:
                        exp.export(spans)
            st = store.span_stats()
            answer = (exp.exported - e0, exp.failed - f0, exp.spooled, exp.spool_dropped,
                      st.get("repaired", 0), st.get("reduced", 0), st.get("rejected", 0))  # fmt: skip
            packed = [min(max(0, int(x)), 0xFFFFFFFE) for x in answer]
            if refused:
                packed[0] = REFUSED
            out.write(_ANSWER.pack(*packed))
            out.flush()
    finally:
        exp.shutdown()
        store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1:]))
