"""``ragtrail serve`` under load: N senders × M spans over OTLP/HTTP (protobuf) into one receiver.

    .venv/bin/python -m benchmarks.serve_load            # 4 senders × 50,000 spans
    .venv/bin/python -m benchmarks.serve_load --quick    # 4 senders × 5,000 spans

The receiver is the real ``ragtrail serve`` command, in its own process, writing to a fresh SQLite file.
Each sender is its own process: it encodes its spans with the ``opentelemetry-proto`` messages in
batches, POSTs them to ``/v1/traces`` on one keep-alive connection, and when the receiver answers
429/503 it waits the ``Retry-After`` it was given and sends the same batch again.

Checked, not just printed: every span is stored exactly once; the receiver's peak RSS stays under a
bound derived from the queue size; back-pressure was used (429s seen) rather than buffering.
Reported: spans/s end to end, and the ratio to the store's own write speed measured in the same run
(``Store.write_spans`` of the same rows in-process, no HTTP), i.e. what the receiver's HTTP path costs.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def build_batches(sender: int, n_spans: int, batch: int) -> list[bytes]:
    """OTLP/protobuf bodies for ``n_spans`` spans (traces of 8 spans: a root and 7 children)."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    from ragtrail import semconv

    rnd = random.Random(sender)
    now = time.time_ns()
    bodies = []
    made = 0
    while made < n_spans:
        req = ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        rs.resource.attributes.append(KeyValue(key=semconv.SERVICE_NAME, value=AnyValue(string_value=f"sender-{sender}")))
        ss = rs.scope_spans.add()
        ss.scope.name = "benchmarks.serve_load"
        trace_id = b""
        root_id = b""
        for _ in range(min(batch, n_spans - made)):
            i = made
            if i % 8 == 0:
                trace_id = rnd.randbytes(16)
                root_id = rnd.randbytes(8)
                span_id, parent = root_id, b""
            else:
                span_id, parent = rnd.randbytes(8), root_id
            sp = ss.spans.add()
            sp.trace_id, sp.span_id, sp.parent_span_id = trace_id, span_id, parent
            sp.name = "rag-answer" if not parent else "chat"
            sp.kind = 3
            sp.start_time_unix_nano = now + i * 1000
            sp.end_time_unix_nano = now + i * 1000 + 500_000
            kind = semconv.CHAIN if not parent else semconv.LLM
            sp.attributes.append(KeyValue(key=semconv.SPAN_KIND, value=AnyValue(string_value=kind)))
            if parent:
                sp.attributes.append(KeyValue(key=semconv.GEN_AI_REQUEST_MODEL, value=AnyValue(string_value="m")))
                sp.attributes.append(KeyValue(key=semconv.GEN_AI_USAGE_INPUT_TOKENS, value=AnyValue(int_value=100 + i % 50)))
                sp.attributes.append(KeyValue(key=semconv.GEN_AI_USAGE_OUTPUT_TOKENS, value=AnyValue(int_value=20)))
            made += 1
        bodies.append(req.SerializeToString())
    return bodies


def sender_main(sender: int, port: int, n_spans: int, batch: int, ready: Any, go: Any, results: Any) -> None:
    bodies = build_batches(sender, n_spans, batch)
    ready.release()
    go.wait()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    busy = unavailable = errors = 0
    waited = 0.0
    t0 = time.perf_counter()
    for body in bodies:
        while True:
            try:
                conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                resp = conn.getresponse()
                resp.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                errors += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                time.sleep(0.1)
                continue
            if resp.status == 200:
                break
            if resp.status in (429, 503):
                busy += resp.status == 429
                unavailable += resp.status == 503
                delay = float(resp.getheader("Retry-After") or 1)
                waited += delay
                time.sleep(delay)  # honour the receiver's Retry-After
                continue
            raise SystemExit(f"sender {sender}: unexpected HTTP {resp.status}")
    conn.close()
    results.put({"sender": sender, "seconds": time.perf_counter() - t0, "busy": busy, "unavailable": unavailable,
                 "errors": errors, "waited_s": waited, "batches": len(bodies)})  # fmt: skip


def _rss_sampler(pid: int, stop: threading.Event, out: dict[str, int]) -> None:
    import psutil

    try:
        proc = psutil.Process(pid)
        while not stop.is_set():
            rss = proc.memory_info().rss
            out["peak"] = max(out.get("peak", 0), rss)
            stop.wait(0.05)
    except psutil.NoSuchProcess:
        pass


def direct_write_rate(n_spans: int, batch: int) -> float:
    """Spans/s of Store.write_spans on the same rows, in-process (the store's own speed)."""
    from ragtrail.server import parse_protobuf, request_to_rows
    from ragtrail.store import open_store

    rows = []
    for body in build_batches(99, n_spans, batch):
        rows.append(request_to_rows(parse_protobuf(body), "bench")[0])
    with tempfile.TemporaryDirectory() as d:
        store = open_store(os.path.join(d, "direct.db"))
        t0 = time.perf_counter()
        for r in rows:
            store.write_spans(r)
        dt = time.perf_counter() - t0
        store.close()
    return n_spans / dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--spans", type=int, default=50_000, help="spans per sender")
    ap.add_argument("--batch", type=int, default=512, help="spans per request (the SDK's default batch size)")
    ap.add_argument("--queue-size", type=int, default=20_000, help="the receiver's --queue-size")
    ap.add_argument("--quick", action="store_true", help="5,000 spans per sender")
    args = ap.parse_args(argv)
    if args.quick:
        args.spans = 5_000
        args.queue_size = min(args.queue_size, 4_000)
    total = args.senders * args.spans

    from ragtrail.store import open_store

    tmp = tempfile.mkdtemp(prefix="ragtrail-serve-load-")
    store_path = os.path.join(tmp, "serve.db")
    port = _free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    receiver = subprocess.Popen(
        [sys.executable, "-c", "from ragtrail.cli import main; main()", "serve", "--http-port", str(port),
         "--grpc-port", "-1", "--store", store_path, "--queue-size", str(args.queue_size)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/health")
                if c.getresponse().status == 200:
                    break
            except OSError:
                pass
            if receiver.poll() is not None or time.monotonic() > deadline:
                print(receiver.stdout.read() if receiver.stdout else "", file=sys.stderr)
                raise SystemExit("the receiver did not start")
            time.sleep(0.1)
        import psutil

        base_rss = psutil.Process(receiver.pid).memory_info().rss
        mem: dict[str, int] = {"peak": base_rss}
        stop = threading.Event()
        sampler = threading.Thread(target=_rss_sampler, args=(receiver.pid, stop, mem), daemon=True)
        sampler.start()

        ctx = mp.get_context("spawn")
        ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=sender_main, args=(i, port, args.spans, args.batch, ready, go, results))
                 for i in range(args.senders)]  # fmt: skip
        for p in procs:
            p.start()
        for _ in procs:
            ready.acquire()
        t0 = time.perf_counter()
        go.set()
        per_sender = [results.get(timeout=1800) for _ in procs]
        for p in procs:
            p.join(60)
        sent_s = time.perf_counter() - t0
        receiver.send_signal(signal.SIGTERM)  # drains the queue into the store, then exits
        out, _ = receiver.communicate(timeout=600)
        total_s = time.perf_counter() - t0
        stop.set()
        sampler.join(2)
    finally:
        if receiver.poll() is None:
            receiver.kill()
    store = open_store(store_path)
    stored = store.count_spans()
    distinct = int(store.query("SELECT COUNT(DISTINCT span_id) FROM spans")[0][0])
    store.close()

    busy = sum(r["busy"] for r in per_sender)
    unavailable = sum(r["unavailable"] for r in per_sender)
    rate = total / total_s
    direct = direct_write_rate(min(total, 50_000), args.batch)
    peak_mb = mem["peak"] / 2**20
    grow_mb = (mem["peak"] - base_rss) / 2**20
    # queued rows (~1 KB each as Python tuples and strings) + request bodies in flight + parsing buffers
    bound_mb = args.queue_size * 1024 / 2**20 + 64 * args.batch * 400 / 2**20 * 4 + 150
    print(f"ragtrail serve under load: {args.senders} senders x {args.spans:,} spans, batches of {args.batch}, "
          f"queue {args.queue_size:,} spans")  # fmt: skip
    print(f"  stored            {stored:,} / {total:,} spans ({distinct:,} distinct)")
    print(f"  end to end        {rate:,.0f} spans/s ({total_s:.1f} s; senders done after {sent_s:.1f} s)")
    print(f"  store alone       {direct:,.0f} spans/s (Store.write_spans in-process, same rows)")
    print(f"  ratio             receiver / store alone = {rate / direct:.2f}")
    print(f"  back-pressure     {busy} x 429, {unavailable} x 503 answered; senders waited "
          f"{sum(r['waited_s'] for r in per_sender):.0f} s in total as told by Retry-After")  # fmt: skip
    print(f"  receiver RSS      {base_rss / 2**20:.0f} MB at start, peak {peak_mb:.0f} MB (+{grow_mb:.0f} MB; "
          f"bound {bound_mb:.0f} MB)")  # fmt: skip
    print("  " + (out.strip().splitlines() or [""])[-1])
    ok = stored == total and distinct == total and grow_mb < bound_mb
    if not ok:
        print("FAILED: " + ("spans lost or duplicated" if stored != total else "memory grew past the bound"))
    if busy == 0:
        print("note: no 429 was needed in this run (the store kept up with the senders)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
