"""Artifacts (issue 20): a large file logged and downloaded in bounded memory, against ``sha256sum`` + ``cp``.

    .venv/bin/python -m benchmarks.artifacts                 # a 2 GiB file (needs ~8 GiB free in --dir)
    .venv/bin/python -m benchmarks.artifacts --size-mb 256   # quicker

Each step runs in a fresh Python process that reports its peak RSS (``ru_maxrss``) and wall time:

* log: ``log_artifact`` of the file — a streamed sha256 pass, then a streamed copy into the blob store
  that is hashed again as it is written (the same work as ``sha256sum FILE`` + ``cp FILE BLOB``);
* log again: the same content — one hashing pass, no copy (the version exists);
* download: ``download()`` — a streamed copy out of the blob store, verified as it is written (the same
  work as ``cp BLOB OUT`` + ``sha256sum OUT``).

Python's ``hashlib`` hashes with OpenSSL (SHA-NI where the CPU has it) while coreutils' ``sha256sum``
does not, so the hashing pass is also compared with ``openssl dgst -sha256``.

The baselines run the coreutils commands on the same file in the same run; the page cache is warm for
both (the file was just written), so the ratios compare the work done, not the disk.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

_STEP = textwrap.dedent(
    """
    import json, resource, sys, time
    from ragtrail.artifacts import Artifact, get_artifact, log_artifact
    step, store, path, out = sys.argv[1:5]
    t0 = time.perf_counter()
    if step == "log":
        v = log_artifact(Artifact("big", "model").add_file(path, "weights.bin"), store=store)
        info = {"ref": v.ref, "created": v.created}
    else:
        v = get_artifact("big:latest", store=store)
        v.download(out)
        info = {"ref": v.ref}
    wall = time.perf_counter() - t0
    info.update(wall_s=wall, peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(info))
    """
)


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _step(step: str, store: str, path: str, out: str) -> dict:  # type: ignore[type-arg]
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", _STEP, step, store, path, out], check=True, capture_output=True,
                       text=True, env=env)  # fmt: skip
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _write(path: str, size_mb: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(size_mb):
            f.write(i.to_bytes(8, "little") + block[8:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=2048)
    ap.add_argument("--dir", default=None, help="Working directory (default: a temp dir, removed after).")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="ragtrail-bench-artifacts-", dir=args.dir)
    try:
        src = os.path.join(work, "weights.bin")
        store = os.path.join(work, "store", "ragtrail.db")
        print(f"writing a {args.size_mb} MiB file in {work} …", flush=True)
        _write(src, args.size_mb)
        gib = args.size_mb / 1024
        base_hash = _timed(["sha256sum", src])
        ossl = shutil.which("openssl")
        base_ossl = _timed([ossl, "dgst", "-sha256", src]) if ossl else None
        base_cp = _timed(["cp", src, os.path.join(work, "copy.bin")])
        os.unlink(os.path.join(work, "copy.bin"))
        log = _step("log", store, src, "")
        again = _step("log", store, src, "")
        assert log["created"] and not again["created"], (log, again)
        dl = _step("download", store, src, os.path.join(work, "out"))
        blob_dir = os.path.join(work, "store", "artifacts", "sha256")
        (blob,) = [os.path.join(d, f) for d, _, fs in os.walk(blob_dir) for f in fs]
        base_cp2 = _timed(["cp", blob, os.path.join(work, "copy2.bin")])
        base_hash2 = _timed(["sha256sum", os.path.join(work, "copy2.bin")])
        with open(os.path.join(work, "out", "weights.bin"), "rb") as a, open(src, "rb") as b:
            assert os.fstat(a.fileno()).st_size == os.fstat(b.fileno()).st_size
        rows = [
            ("log (hash + store)", log["wall_s"], base_hash + base_cp, "sha256sum + cp", log["peak_rss_mb"]),
            ("log again (dedup)", again["wall_s"], base_hash, "sha256sum", again["peak_rss_mb"]),
            ("download (copy + verify)", dl["wall_s"], base_cp2 + base_hash2, "cp + sha256sum", dl["peak_rss_mb"]),
        ]
        print(f"\n{args.size_mb} MiB file, load {os.getloadavg()[0]:.2f} (1 min), Python {sys.version.split()[0]}")
        print(f"{'step':26} {'ragtrail':>10} {'GiB/s':>7} {'baseline':>10} {'':16} {'ratio':>6} {'peak RSS':>9}")
        for name, t, base, what, rss in rows:
            print(f"{name:26} {t:9.2f}s {gib / t:7.2f} {base:9.2f}s {what:16} {t / base:6.2f} {rss:7.0f}MB")
        if base_ossl is not None:  # hashlib hashes with OpenSSL (SHA-NI where the CPU has it), coreutils does not
            t = again["wall_s"]
            print(f"{'log again vs openssl dgst':26} {t:9.2f}s {gib / t:7.2f} {base_ossl:9.2f}s "
                  f"{'openssl dgst':16} {t / base_ossl:6.2f}")  # fmt: skip
        print("\nratio = ragtrail time / baseline time (lower is better); ragtrail times exclude interpreter start-up;")
        print("peak RSS is the whole Python process's")
        ok = all(r[4] < 200 for r in rows)
        print(f"memory under 200 MB in every step: {'yes' if ok else 'NO'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
