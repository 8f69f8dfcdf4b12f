"""A ~100 MB artifact is logged, logged again and downloaded in bounded memory: Python's allocations
stay far below the file's size (tracemalloc), so nothing reads the file whole. The 2 GB figure and the
throughput against ``sha256sum`` + ``cp`` are in ``benchmarks/artifacts.py``."""

from __future__ import annotations

import hashlib
import os
import tracemalloc

import pytest

from ragtrail.artifacts import Artifact, get_artifact, log_artifact
from ragtrail.store import open_store

SIZE_MB = 100


@pytest.mark.slow
def test_large_file_is_streamed_in_bounded_memory(store_path, tmp_path) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "weights.bin"
    block = os.urandom(1 << 20)
    expected = hashlib.sha256()
    with open(src, "wb") as f:
        for i in range(SIZE_MB):
            chunk = i.to_bytes(8, "little") + block[8:]
            f.write(chunk)
            expected.update(chunk)
    store = open_store(store_path)
    tracemalloc.start()
    try:
        v = log_artifact(Artifact("model", "model").add_file(src), store=store)
        again = log_artifact(Artifact("model", "model").add_file(src), store=store)
        out = get_artifact("model:v1", store=store).download(tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        store.close()
    assert v.created and not again.created and v.size_bytes == SIZE_MB << 20
    assert v.manifest[0]["sha256"] == expected.hexdigest()
    assert peak < 16 << 20, f"peak Python allocations {peak / 2**20:.1f} MiB for a {SIZE_MB} MiB file"
    h = hashlib.sha256()
    with open(os.path.join(out, "weights.bin"), "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == expected.hexdigest()
