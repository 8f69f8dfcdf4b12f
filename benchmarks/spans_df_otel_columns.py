"""Cost of the OTel columns in ``Client.spans_df`` (issue 21): the frame built from the same row batches
with the 15 classic columns only (the previous design) and with the 5 OTel columns added.

    python benchmarks/spans_df_otel_columns.py [n_rows]

Prints the best of 5 for each and the ratio (SQL excluded: the rows are in memory).
"""

from __future__ import annotations

import sys
import time

from ragtrail import _otel_columns as oc
from ragtrail._client import _spans_frame


def main(n: int = 100_000) -> None:
    res = '{"service.name":"x","service.version":"1.0","host.name":"h"}'
    link = '[{"trace_id":"' + "a" * 32 + '","span_id":"' + "b" * 16 + '","attributes":{"i":1}}]'
    rows = [
        (f"{i // 10:032x}", f"{i:016x}", None, "s", "LLM", i, i + 5, 0.0, "OK", "m", 3, 4, 1e-6, "p", '{"a":1}',
         "CLIENT", link if i % 100 == 0 else None, res, "scope", "1.0")
        for i in range(n)
    ]  # fmt: skip
    batches = [rows[i : i + 50_000] for i in range(0, n, 50_000)]
    old = new = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        _spans_frame(iter(batches))
        old = min(old, time.perf_counter() - t)
        t = time.perf_counter()
        extra: list[list[object]] = [[] for _ in oc.OTEL_COLUMNS]
        oc.add_columns(_spans_frame(oc.collect(iter(batches), extra)), extra)
        new = min(new, time.perf_counter() - t)
    print(f"{n} rows: 15 columns {old:.3f}s, with the OTel columns {new:.3f}s, ratio {new / old:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
