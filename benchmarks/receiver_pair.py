"""Two ``ragtrail serve`` processes into one PostgreSQL, senders spread across both, one receiver stopped
and restarted mid-load; and the pair's throughput against one receiver.

Each sender thread walks its OTLP/protobuf batches (``benchmarks.serve_load.build_batches``), sending batch
``i`` to receiver ``i % 2``; when a receiver refuses (connection refused or reset, 503 while stopping,
429 when busy) the same batch goes to the other receiver — what a load balancer in front of the pair
does. A batch is *acknowledged* when a receiver answers 200.

Checked: every acknowledged span is stored, exactly once (the store is idempotent on trace and span
id, so a batch sent again after a lost reply adds nothing). ``--signal KILL`` instead of the default
``TERM`` shows what an abrupt kill costs: a receiver acknowledges a batch once it is queued, so spans
acknowledged but still queued in a killed process are lost (counted, not hidden)::

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.receiver_pair --pg postgresql://postgres@127.0.0.1/test
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from benchmarks.serve_load import _free_port, build_batches


def start_receiver(store_url: str, port: int) -> subprocess.Popen[str]:
    """``ragtrail serve`` on ``port`` (OTLP/HTTP only); returns once /health answers."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(
        [sys.executable, "-c", "from ragtrail.cli import main; main()", "serve", "--http-port", str(port),
         "--grpc-port", "-1", "--store", store_url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return p
        except OSError:
            pass
        if p.poll() is not None or time.monotonic() > deadline:
            out = p.stdout.read() if p.stdout else ""
            p.kill()
            raise RuntimeError(f"the receiver on port {port} did not start: {out}")
        time.sleep(0.1)


@dataclass
class Load:
    """What the senders did."""

    acked_batches: int = 0
    acked_spans: int = 0
    retries: int = 0
    by_port: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _send_all(bodies: list[tuple[bytes, int]], ports: list[int], load: Load, first: int) -> None:
    conns: dict[int, http.client.HTTPConnection] = {}

    def conn(port: int) -> http.client.HTTPConnection:
        c = conns.get(port)
        if c is None:
            c = conns[port] = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        return c

    for i, (body, n) in enumerate(bodies):
        k = first + i
        while True:
            port = ports[k % len(ports)]
            try:
                c = conn(port)
                c.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                resp = c.getresponse()
                resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException):
                conns.pop(port, None)
                status = 0
            if status == 200:
                with load.lock:
                    load.acked_batches += 1
                    load.acked_spans += n
                    load.by_port[port] = load.by_port.get(port, 0) + n
                break
            if status not in (0, 429, 503):
                raise RuntimeError(f"unexpected HTTP {status} from the receiver on port {port}")
            with load.lock:
                load.retries += 1
            k += 1  # the other receiver
            time.sleep(0.02)


def run_load(
    store_url: str,
    *,
    receivers: int = 2,
    senders: int = 4,
    spans_per_sender: int = 20_000,
    batch: int = 200,
    restart_at: float | None = 0.4,
    sig: int = signal.SIGTERM,
) -> dict[str, Any]:
    """Send everything through ``receivers`` receivers; with ``restart_at``, the first receiver gets
    ``sig`` once that share of the batches is acknowledged and is started again 1 s after it exits.
    ``batch`` must be a multiple of 8 (``build_batches`` makes traces of 8 spans, one body per trace group)."""
    if batch % 8:
        raise ValueError(f"batch={batch}: use a multiple of 8 (traces of 8 spans must not straddle two bodies)")
    ports = [_free_port() for _ in range(receivers)]
    procs = [start_receiver(store_url, p) for p in ports]
    work = []
    for s in range(senders):
        bodies = build_batches(1000 + s, spans_per_sender, batch)
        sizes = [min(batch, spans_per_sender - j * batch) for j in range(len(bodies))]
        work.append(list(zip(bodies, sizes, strict=True)))
    total_batches = sum(len(w) for w in work)
    load = Load()
    restarted: dict[str, Any] = {"at_acked_spans": -1, "exit_code": None, "log": ""}
    t0 = time.perf_counter()
    threads = [threading.Thread(target=_send_all, args=(w, ports, load, s)) for s, w in enumerate(work)]
    for t in threads:
        t.start()
    try:
        if restart_at is not None:
            while load.acked_batches < restart_at * total_batches and any(t.is_alive() for t in threads):
                time.sleep(0.01)
            restarted["at_acked_spans"] = load.acked_spans
            procs[0].send_signal(sig)
            restarted["exit_code"] = procs[0].wait(60)
            restarted["log"] = procs[0].stdout.read() if procs[0].stdout else ""
            time.sleep(1.0)
            procs[0] = start_receiver(store_url, ports[0])
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
    logs = [p.stdout.read() if p.stdout else "" for p in procs]
    from ragtrail.store import open_store

    store = open_store(store_url)
    stored = int(store.query("SELECT COUNT(*) FROM spans")[0][0])
    distinct = int(store.query("SELECT COUNT(*) FROM (SELECT DISTINCT trace_id, span_id FROM spans) d")[0][0])
    store.close()
    return {
        "receivers": receivers, "senders": senders, "spans_sent": senders * spans_per_sender,
        "acked_spans": load.acked_spans, "stored": stored, "stored_distinct": distinct, "retries": load.retries,
        "by_port": dict(load.by_port), "seconds": seconds, "spans_per_s": load.acked_spans / seconds,
        "restart": restarted, "logs": logs,
    }  # fmt: skip


def _fresh_schema(base: str) -> tuple[str, str]:
    import psycopg

    schema = "rt_pair_" + uuid.uuid4().hex[:8]
    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", schema


def _drop_schema(base: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(base, autocommit=True) as c:
        c.execute(f"DROP SCHEMA {schema} CASCADE")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--spans", type=int, default=20_000, help="spans per sender")
    ap.add_argument("--signal", choices=["TERM", "KILL"], default="TERM")
    args = ap.parse_args(argv)
    print(f"uptime: {os.getloadavg()}")
    results = []
    for receivers, restart in ((1, None), (2, None), (2, 0.4)):
        url, schema = _fresh_schema(args.pg)
        try:
            sig = signal.SIGKILL if args.signal == "KILL" else signal.SIGTERM
            r = run_load(url, receivers=receivers, senders=args.senders, spans_per_sender=args.spans,
                         restart_at=restart, sig=sig)  # fmt: skip
        finally:
            _drop_schema(args.pg, schema)
        results.append(r)
        lost = r["acked_spans"] - r["stored"]
        what = f"{receivers} receiver(s)" + (
            f", receiver 1 got SIG{args.signal} mid-load and restarted" if restart else ""
        )
        print(f"{what}: {r['acked_spans']:,} acknowledged, {r['stored']:,} stored ({r['stored_distinct']:,} distinct), "
              f"lost {lost}, {r['retries']} batches re-sent, {r['spans_per_s']:,.0f} spans/s, by port {r['by_port']}")  # fmt: skip
    print(f"pair / one receiver throughput: {results[1]['spans_per_s'] / results[0]['spans_per_s']:.2f}×")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
