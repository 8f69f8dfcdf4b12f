"""Every benchmark, one after the other, in their --quick form (``make bench``).

    .venv/bin/python -m benchmarks.run_all            # quick sizes (~15-25 minutes on 2 cores)
    .venv/bin/python -m benchmarks.run_all --full     # the sizes the issues ask for

Each benchmark compares against its peers in the same run and prints its own ratios; this runner only
sequences them (so they never compete for the CPU) and stops nothing on one failure.
GPU figures come from ``python benchmarks/gpu_generate.py`` on a machine with an NVIDIA GPU.
"""

from __future__ import annotations

import subprocess
import sys
import time

BENCHMARKS = [
    ("core", ["-m", "benchmarks.core"]),
    ("langchain_overhead", ["-m", "benchmarks.langchain_overhead"]),
    ("retrieval_overhead", ["-m", "benchmarks.retrieval_overhead"]),
    ("evals_scoring", ["-m", "benchmarks.evals_scoring"]),
    ("compare_stats", ["-m", "benchmarks.compare_stats"]),
    ("judge_throughput", ["-m", "benchmarks.judge_throughput"]),
    ("serve_load", ["-m", "benchmarks.serve_load"]),
    ("store_load", ["-m", "benchmarks.store_load"]),
    ("pg_partitions", ["-m", "benchmarks.pg_partitions"]),
    ("compact_storage", ["-m", "benchmarks.compact_storage"]),
    ("gpu_generate (tiny model, CPU)", ["benchmarks/gpu_generate.py", "--tiny"]),
]


def main() -> int:
    full = "--full" in sys.argv
    failed = []
    for name, args in BENCHMARKS:
        cmd = [sys.executable, *args] + ([] if full else ["--quick"])
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"=== {name}: exit {rc} after {time.perf_counter() - t:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
