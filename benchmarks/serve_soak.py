"""Soak test of ``ragtrail serve`` under a mix of well-behaved and hostile clients.

The receiver runs as the real console command (``ragtrail serve``) in its own process; this script is
the clients. For ``--duration`` seconds, client threads send:

* ``valid``      OTLP/HTTP protobuf and JSON requests of 1-200 spans, each span id new (some requests
                 carry a poison span: 20-nines token counts, start times >= 2^63, NUL bytes, NaN cost);
* ``malformed``  random bytes, truncated protobuf, broken JSON, JSON nested 100,000 levels deep;
* ``stalled``    connections that send the headers and one body byte, then nothing;
* ``oversized``  a Content-Length over the limit, a body over the limit, and a gzip bomb.

Senders honour 429/503 with Retry-After, as OTLP exporters do. At the end the receiver is stopped with
SIGINT (it drains its queue) and the store is checked: every span of every request answered 200 is
stored exactly once. Printed: the request mix with the status codes seen, the receiver's RSS (sampled
every second, and the kernel's peak ``VmHWM``), spans stored.

    .venv/bin/python -m benchmarks.serve_soak                   # 5 minutes, SQLite in a temp dir
    .venv/bin/python -m benchmarks.serve_soak --duration 60 --store postgresql://…
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_BODY = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kb(pid: int, field: str = "VmRSS") -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Soak:
    def __init__(self, port: int, duration: float, seed: int) -> None:
        sys.path.insert(0, ROOT)
        self.url = f"http://127.0.0.1:{port}/v1/traces"
        self.port = port
        self.deadline = time.monotonic() + duration
        self.lock = threading.Lock()
        self.mix: collections.Counter[str] = collections.Counter()
        self.expected: set[tuple[str, str]] = set()
        self.rng = random.Random(seed)
        self.errors: list[str] = []

    def note(self, kind: str, status: Any) -> None:
        with self.lock:
            self.mix[f"{kind} {status}"] += 1

    # ---------------------------------------------------------------------------------- clients
    def valid(self, k: int) -> None:
        import httpx

        from tests._otlp_payloads import POISON_KINDS, innocent, poison, request

        rng = random.Random(k)
        with httpx.Client(timeout=60) as cl:
            while time.monotonic() < self.deadline:
                msg = innocent(rng.randint(1, 200), project="soak")
                spans = list(msg.resource_spans[0].scope_spans[0].spans)
                if rng.random() < 0.2:
                    spans += list(
                        poison(rng.choice(POISON_KINDS), project="soak").resource_spans[0].scope_spans[0].spans
                    )
                msg = request(spans)
                if rng.random() < 0.5:
                    body, headers = msg.SerializeToString(), {"Content-Type": "application/x-protobuf"}
                    kind = "valid/protobuf"
                else:
                    from google.protobuf import json_format

                    data = json_format.MessageToDict(msg)
                    for rs in data["resourceSpans"]:  # OTLP/JSON ids are hex
                        for ss in rs["scopeSpans"]:
                            for sp in ss["spans"]:
                                sp["traceId"] = __import__("base64").b64decode(sp["traceId"]).hex()
                                sp["spanId"] = __import__("base64").b64decode(sp["spanId"]).hex()
                    body, headers = json.dumps(data).encode(), {"Content-Type": "application/json"}
                    kind = "valid/json"
                for _ in range(60):
                    try:
                        resp = cl.post(self.url, content=body, headers=headers)
                    except httpx.HTTPError as exc:
                        self.note(kind, type(exc).__name__)
                        time.sleep(0.5)
                        continue
                    self.note(kind, resp.status_code)
                    if resp.status_code == 200:
                        with self.lock:
                            self.expected.update((s.trace_id.hex(), s.span_id.hex()) for s in spans)
                        break
                    if resp.status_code in (429, 503):
                        time.sleep(float(resp.headers.get("Retry-After", "1")))
                        continue
                    self.errors.append(f"{kind}: {resp.status_code} {resp.text[:200]}")
                    break

    def malformed(self, k: int) -> None:
        import httpx

        from tests._otlp_payloads import innocent

        rng = random.Random(1000 + k)
        good = innocent(20).SerializeToString()
        deep = ('{"resourceSpans": ' + "[" * 100_000 + "]" * 100_000 + "}").encode()
        with httpx.Client(timeout=60) as cl:
            while time.monotonic() < self.deadline:
                choice = rng.randrange(4)
                if choice == 0:
                    body, ct, kind = os.urandom(rng.randint(1, 5000)), "application/x-protobuf", "malformed/random"
                elif choice == 1:
                    body, ct, kind = (
                        good[: rng.randint(1, len(good) - 1)],
                        "application/x-protobuf",
                        "malformed/truncated",
                    )
                elif choice == 2:
                    body, ct, kind = b'{"resourceSpans": [{"scopeSpans": [', "application/json", "malformed/json"
                else:
                    body, ct, kind = deep, "application/json", "malformed/deep"
                try:
                    resp = cl.post(self.url, content=body, headers={"Content-Type": ct})
                    self.note(kind, resp.status_code)
                    if resp.status_code >= 500 and resp.status_code != 503:
                        self.errors.append(f"{kind}: {resp.status_code}")
                except httpx.HTTPError as exc:
                    self.note(kind, type(exc).__name__)
                time.sleep(0.02)

    def stalled(self, k: int) -> None:
        while time.monotonic() < self.deadline:
            socks = []
            for _ in range(8):
                try:
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                              b"Content-Length: 50000\r\n\r\n\x0a")  # fmt: skip
                    socks.append(s)
                except OSError as exc:
                    self.note("stalled", type(exc).__name__)
            for s in socks:
                s.settimeout(max(1.0, min(30.0, self.deadline - time.monotonic() + 15)))
                try:
                    reply = s.recv(64)
                    self.note("stalled", reply.split(b" ")[1].decode() if reply.startswith(b"HTTP/") else "closed")
                except OSError as exc:
                    self.note("stalled", type(exc).__name__)
                finally:
                    s.close()

    def oversized(self, k: int) -> None:
        import httpx

        bomb = gzip.compress(b"\0" * (64 * MAX_BODY))
        with httpx.Client(timeout=60) as cl:
            while time.monotonic() < self.deadline:
                choice = random.randrange(3)
                try:
                    if choice == 0:  # raw socket: an HTTP client will not send a false Content-Length
                        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sk:
                            sk.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf"
                                       b"\r\nContent-Length: %d\r\n\r\nxxxx" % (MAX_BODY * 100))  # fmt: skip
                            reply = sk.recv(64)
                        self.note("oversized/declared", reply.split(b" ")[1].decode() if reply else "closed")
                        time.sleep(0.2)
                        continue
                    if choice == 1:
                        resp = cl.post(self.url, content=os.urandom(MAX_BODY + 10),
                                       headers={"Content-Type": "application/x-protobuf"})  # fmt: skip
                        kind = "oversized/body"
                    else:
                        resp = cl.post(self.url, content=bomb, headers={"Content-Type": "application/x-protobuf",
                                                                        "Content-Encoding": "gzip"})  # fmt: skip
                        kind = "oversized/gzip-bomb"
                    self.note(kind, resp.status_code)
                except (httpx.HTTPError, OSError) as exc:
                    self.note("oversized", type(exc).__name__)
                time.sleep(0.2)


def run_soak(duration: float, store: str | None = None, *, valid: int = 4, seed: int = 0) -> dict[str, Any]:
    """Run the soak; returns the figures (also used by the CI test)."""
    tmp = tempfile.mkdtemp(prefix="ragtrail-soak-")
    store = store or os.path.join(tmp, "soak.db")
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from ragtrail.cli import main; main()", "serve", "--http-port", str(port),
         "--grpc-port", "-1", "--store", store, "--max-body-bytes", str(MAX_BODY), "--queue-size", "50000"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"ragtrail serve did not start: {proc.stderr.read() if proc.stderr else ''}")
                time.sleep(0.2)
        soak = Soak(port, duration, seed)
        rss: list[int] = []
        threads = [threading.Thread(target=soak.valid, args=(k,)) for k in range(valid)]
        threads += [threading.Thread(target=soak.malformed, args=(k,)) for k in range(2)]
        threads += [
            threading.Thread(target=soak.stalled, args=(0,)),
            threading.Thread(target=soak.oversized, args=(0,)),
        ]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            rss.append(_rss_kb(proc.pid))
            time.sleep(1.0)
        alive = proc.poll() is None
        peak = _rss_kb(proc.pid, "VmHWM")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    from ragtrail.store import open_store

    st = open_store(store)
    rows = st.query("SELECT trace_id, span_id FROM spans WHERE project = 'soak'")
    stored = {(a, b) for a, b in rows}
    return {
        "duration_s": duration,
        "alive_at_end": alive,
        "exit_code": proc.returncode,
        "requests": dict(sorted(soak.mix.items())),
        "rss_mb_first": round(rss[0] / 1024, 1) if rss else None,
        "rss_mb_max_sampled": round(max(rss) / 1024, 1) if rss else None,
        "rss_mb_last": round(rss[-1] / 1024, 1) if rss else None,
        "rss_mb_peak": round(peak / 1024, 1),
        "spans_expected": len(soak.expected),
        "spans_stored": len(rows),
        "spans_stored_distinct": len(stored),
        "spans_missing": len(soak.expected - stored),
        "client_errors": soak.errors[:10],
        "serve_output": (out + err).strip().splitlines()[-3:],
        "load": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=300.0, help="seconds of load (default 300)")
    ap.add_argument("--store", default=None, help="store path or URL (default: SQLite in a temp dir)")
    ap.add_argument("--valid-senders", type=int, default=4)
    args = ap.parse_args(argv)
    res = run_soak(args.duration, args.store, valid=args.valid_senders)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
