"""The store writer in a child process (``ragtrail.init(writer="process")``).

Why: in an asyncio service that keeps a core busy, the exporter thread competes with the event loop
for the GIL; building rows (masking guard, JSON) and binding them into SQLite is most of its work.
Here the exporter thread only packs each span into a compact tuple (ids, times, status, the attribute
dict as it is, which content values were masked when recorded) and sends the whole batch as one
orjson frame over a pipe; a child process started and supervised by ragtrail rebuilds the spans,
runs the same row builder and sanitising step, and writes (spooling while the store is away). The
exporter thread waits for the child's answer with the GIL released, so one batch is in flight at a
time and nothing is acknowledged before it is written or spooled.

Supervision: the child is started on the first batch (never on the app's thread); if it cannot be
started, or dies, a batch is written in-process instead, and after three deaths within a minute
the exporter stays in-process for good (each case logged once). Only the standard library and
ragtrail run in the child (no ``multiprocessing``: it would re-import the app's main module).

Frames (parent → child): ``<I length>`` + payload; length 0 asks the child to stop, 0xFFFFFFFF to
write its spool back. Answers (child → parent): ``<IIIIIII`` exported (:data:`REFUSED` for a frame
it could not read, which the parent then writes itself), failed, spooled now, dropped by the spool's
cap, and the child store's repaired, reduced and rejected spans (all cumulative but the first two).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

from ragtrail._log import logger, warn_once

_LEN = struct.Struct("<I")
_ANSWER = struct.Struct("<IIIIIII")
REFUSED = 0xFFFFFFFF  # "exported" of a frame the child could not read: the parent writes its spans in-process
_STOP = 0
_REPLAY = 0xFFFFFFFF
# writer="auto": what counts as load that pays for a writer process
AUTO_BATCH = 2_048  # one export batch this large: the exporter was that far behind
AUTO_SPANS = 10_000  # or this many spans ...
AUTO_WINDOW_S = 5.0  # ... within this many seconds (2,000 spans/s sustained)
AUTO_PULSE_S = 0.5  # or 1,024 spans accepted within this many seconds (over 2,000 spans/s)

try:
    import orjson as _orjson

    def _encode(batch: list[Any]) -> bytes:
        try:
            return _orjson.dumps(batch)
        except TypeError:  # an int beyond 64 bits in an attribute: the standard encoder takes it
            return json.dumps(batch, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")

    def _decode(payload: bytes) -> Any:
        try:
            return _orjson.loads(payload)
        except _orjson.JSONDecodeError:  # an int beyond 64 bits (written by the standard encoder)
            return json.loads(payload)

except ImportError:  # pragma: no cover - orjson is a core dependency

    def _encode(batch: list[Any]) -> bytes:
        return json.dumps(batch, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")

    def _decode(payload: bytes) -> Any:
        return json.loads(payload)


class WriterGone(Exception):
    """The child process is not there (not started, exited, or its pipe broke)."""


# ------------------------------------------------------------------------------------------ parent
def _attr_dict(span: Any) -> Any:
    """The span's attributes as a plain dict (public API: ``ReadableSpan.attributes``; copied only when
    the SDK hands out a read-only view)."""
    attrs = span.attributes
    if not attrs:
        return {}
    return attrs if type(attrs) is dict else dict(attrs)


def pack_spans(spans: Sequence[Any]) -> bytes:
    """The compact form of SDK spans the child rebuilds them from (one orjson call for the batch)."""
    from ragtrail.tracing._premasked import take_masked

    out: list[Any] = []
    append = out.append
    resources: list[dict[str, Any]] = []  # issue 21: every resource attribute, once per batch
    res_index: dict[int, int] = {}
    for s in spans:
        ctx = s.context
        parent = s.parent
        attrs = _attr_dict(s)
        # every claim is taken (take_masked ignores short values itself): a noted value never claimed would stay
        # in the note until its caps evict it
        pre = [k for k, v in attrs.items() if type(v) is str and take_masked(v)]
        events = s.events
        ev = [(e.name, e.timestamp, dict(e.attributes or {})) for e in events] if events else None
        res = s.resource
        ri = res_index.get(id(res))
        if ri is None:
            ri = res_index[id(res)] = len(resources)
            resources.append(dict(res.attributes) if res is not None and res.attributes else {})
        scope = s.instrumentation_scope
        links = (
            [(format(lk.context.trace_id, "032x"), format(lk.context.span_id, "016x"), dict(lk.attributes or {}),
              lk.context.trace_state.to_header() if lk.context.trace_state else "") for lk in s.links]
            if s.links else None
        )  # fmt: skip
        status = s.status
        append(
            (
                format(ctx.trace_id, "032x"),
                format(ctx.span_id, "016x"),
                format(parent.span_id, "016x") if parent is not None and parent.is_valid else None,
                s.name,
                s.start_time,
                s.end_time,
                status.status_code.value,
                status.description,
                attrs,
                ev,
                ri,
                pre,
                s.kind.value,
                links,
                scope.name if scope is not None else None,
                scope.version if scope is not None else None,
            )
        )
    return _encode({"resources": resources, "spans": out})  # type: ignore[arg-type]


class ProcessWriter:
    """Starts, feeds and supervises the writer child process for one store.

    With ``auto`` (``writer="auto"``, the default), the child is started only once the exporter has
    shown load (:meth:`load`): until then, and whenever it is not ready, batches are written
    in-process. A short script or a test never pays for a process start; a busy service moves its
    store work off the GIL within a second or two.
    """

    def __init__(
        self,
        store_url: str,
        project: str,
        *,
        mask_secrets: bool,
        spool_dir: str,
        spool_max_bytes: int,
        auto: bool = False,
    ):
        self.store_url = store_url
        self.project = project
        self.mask_secrets = mask_secrets
        self.spool_dir = spool_dir
        self.spool_max_bytes = spool_max_bytes
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid = os.getpid()
        self._deaths: list[float] = []
        self.disabled = False
        self.starts = 0
        self.spooled = 0
        self.spool_dropped = 0
        # the child store's spans stored repaired / reduced / rejected (added to ragtrail.stats())
        self.store_counts: dict[str, int] = {}
        self.auto = auto
        # True while a started child answers (plain attribute: read on every recorded content value)
        self.ready = False
        self._starting: threading.Thread | None = None
        self._load_t0 = 0.0
        self._load_n = 0
        self._pulse_t = -1e9
        self._start_lock = threading.Lock()

    def load(self, n: int) -> None:
        """``writer="auto"``: the exporter is about to write ``n`` spans in-process. Starts the child
        in the background when the load is sustained: a batch of ``AUTO_BATCH`` spans or more (the
        exporter was behind by that many), or ``AUTO_SPANS`` spans within ``AUTO_WINDOW_S`` seconds."""
        if self.ready or self.disabled or self._starting is not None:
            return
        now = time.monotonic()
        if now - self._load_t0 > AUTO_WINDOW_S:
            self._load_t0, self._load_n = now, 0
        self._load_n += n
        if n >= AUTO_BATCH or self._load_n >= AUTO_SPANS:
            self._start_soon()

    def pulse(self) -> None:
        """Called by the batch processor every 1,024 spans it accepts: two pulses less than
        ``AUTO_PULSE_S`` apart (over 2,000 spans/s) start the child at once, before the first export."""
        now = time.monotonic()
        last, self._pulse_t = self._pulse_t, now
        if now - last < AUTO_PULSE_S and self.auto and not (self.ready or self.disabled or self._starting):
            self._start_soon()

    def _start_soon(self) -> None:
        with self._start_lock:
            if self._starting is not None or self.ready or self.disabled:
                return
            t = threading.Thread(target=self._start_in_background, name="ragtrail-writer-start", daemon=True)
            self._starting = t
        try:
            t.start()
        except RuntimeError:  # the interpreter is shutting down: stay in-process
            self._starting = None
            self.disabled = True

    def _start_in_background(self) -> None:
        try:
            self._ensure()
        except Exception as exc:
            self.disabled = True
            warn_once("writer-auto", "ragtrail: could not start the writer process (%s); writing in-process", exc)
        finally:
            self._starting = None

    @property
    def child_pid(self) -> int | None:
        p = self._proc
        return p.pid if p is not None and p.poll() is None else None

    def _start(self) -> None:
        env = dict(os.environ)
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = here + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["RAGTRAIL_WRITER_STORE"] = self.store_url  # not on the command line: it may hold a password
        args = [sys.executable, "-m", "ragtrail.tracing._writer_child", self.project]
        args += ["1" if self.mask_secrets else "0", self.spool_dir, str(self.spool_max_bytes)]
        proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        ready = _read_exact(proc.stdout, 1)
        if ready != b"R":
            proc.kill()
            proc.wait()
            raise WriterGone("the writer process did not start (see its error output above)")
        self._proc = proc
        self.starts += 1
        self.ready = True

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._pid != os.getpid():  # a forked child of the app: the pipe belongs to the parent
            self._proc = None
            self.ready = False
            self._pid = os.getpid()
        if self.disabled:
            raise WriterGone("disabled")
        p = self._proc
        if p is None or p.poll() is not None:
            if p is not None:
                self._died()
            self._start()
            p = self._proc
            assert p is not None
        return p

    def _died(self) -> None:
        self._proc = None
        self.ready = False
        now = time.monotonic()
        self._deaths = [t for t in self._deaths if now - t < 60] + [now]
        if len(self._deaths) >= 3:
            self.disabled = True
            self.ready = False
            logger.warning("ragtrail: the writer process died 3 times within a minute; writing in-process from now on")

    def _call(self, frame: bytes) -> tuple[int, int, int, int]:
        self._send(frame)
        return self._answer()

    def _send(self, frame: bytes) -> None:
        p = self._ensure()
        assert p.stdin is not None
        try:
            p.stdin.write(frame)
            p.stdin.flush()
        except (OSError, ValueError) as exc:
            self._died()
            raise WriterGone(str(exc)) from exc

    def _answer(self) -> tuple[int, int, int, int]:
        p = self._proc
        if p is None or p.stdout is None:
            raise WriterGone("the writer process exited")
        try:
            answer = _read_exact(p.stdout, _ANSWER.size)
        except (OSError, ValueError) as exc:
            self._died()
            raise WriterGone(str(exc)) from exc
        if len(answer) < _ANSWER.size:
            self._died()
            raise WriterGone("the writer process exited")
        exported, failed, spooled, dropped, repaired, reduced, rejected = _ANSWER.unpack(answer)
        self.spooled = spooled
        self.spool_dropped = dropped
        self.store_counts = {"repaired": repaired, "reduced": reduced, "rejected": rejected}
        return exported, failed, spooled, dropped

    def send(self, payload: bytes) -> None:
        """Send one packed batch without waiting; :meth:`collect` gives its answer. One frame may be in
        flight while the caller packs the next (the child writes while the app packs)."""
        self._send(_LEN.pack(len(payload)) + payload)

    def collect(self) -> tuple[int, int]:
        """(exported, failed) of the frame :meth:`send` sent last, once the child wrote or spooled it."""
        exported, failed, _spooled, _dropped = self._answer()
        return exported, failed

    def replay(self) -> int:
        """Ask the child to write its spool back now; returns how many spans are still spooled."""
        return self._call(_LEN.pack(_REPLAY))[2]

    def close(self, timeout_s: float = 30.0) -> None:
        t = self._starting
        if t is not None:
            t.join(timeout_s)  # a child being started is stopped like a running one
        self.ready = False
        p, self._proc = self._proc, None
        if p is None or self._pid != os.getpid():
            return
        try:
            if p.poll() is None and p.stdin is not None:
                p.stdin.write(_LEN.pack(_STOP))
                p.stdin.flush()
                p.stdin.close()
            p.wait(timeout_s)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            p.kill()
            p.wait()
        finally:
            if p.stdout is not None:
                p.stdout.close()


def _read_exact(f: IO[bytes], n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = f.read(n - len(buf))
        if not chunk:
            return buf
        buf += chunk
    return buf


def make_writer(store: Any, project: str, options: Mapping[str, Any]) -> ProcessWriter | None:
    """The writer process ``ragtrail.init(writer=...)`` asks for, or None (writes in-process)."""
    from ragtrail._exceptions import ConfigError
    from ragtrail.tracing._spool import DEFAULT_MAX_BYTES, default_spool_dir

    kind = options.get("writer") or os.environ.get("RAGTRAIL_WRITER") or "auto"
    if kind not in ("auto", "thread", "process"):
        raise ConfigError(
            f"ragtrail.init(writer={kind!r}) (or $RAGTRAIL_WRITER): use 'auto' (the default: a writer process "
            "once the load calls for one), 'thread' (always in-process) or 'process' (always a writer process)"
        )
    if kind == "thread":
        return None
    if kind == "auto" and (options.get("mask") is not None or not _can_start_processes()):
        return None  # a mask hook runs in this process only; an app that cannot start processes writes in-process
    if options.get("mask") is not None:
        raise ConfigError(
            "ragtrail.init(writer='process') cannot run a mask hook (a function of this process) in the writer "
            "process; drop mask=... or use writer='thread'"
        )
    if getattr(store, "kind", "") not in ("sqlite", "postgresql"):
        return None  # a store class of the app's own: only it knows how to open itself
    url = str(getattr(store, "_dsn", None) or store.url)  # the PostgreSQL URL with its password
    max_bytes = options.get("spool_max_bytes", DEFAULT_MAX_BYTES)
    return ProcessWriter(
        url,
        project,
        mask_secrets=bool(options.get("mask_secrets", True)),
        spool_dir=os.fspath(options.get("spool_dir") or default_spool_dir()),
        spool_max_bytes=int(max_bytes),
        auto=kind == "auto",
    )


def _can_start_processes() -> bool:
    """False where a child process cannot be started from here (no interpreter path, e.g. an embedded
    Python, or a platform without subprocesses)."""
    exe = sys.executable
    return bool(exe) and os.path.exists(exe) and hasattr(subprocess, "Popen") and sys.platform != "emscripten"


# ------------------------------------------------------------------------------------------- child
def _rebuild(packed: list[Any]) -> list[Any]:
    """SDK ReadableSpans from their compact form (public constructors only)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceState

    from ragtrail.tracing._premasked import note_masked

    def tuples(d: dict[str, Any]) -> dict[str, Any]:
        return {k: tuple(v) if type(v) is list else v for k, v in d.items()}

    resources: dict[Any, Any] = {}
    batch_resources: list[Any] = []
    if isinstance(packed, dict):  # issue 21's form: full resources once per batch, kind, links, scope
        batch_resources = [Resource(tuples(r)) for r in packed["resources"]]
        packed = packed["spans"]
    codes = {c.value: c for c in StatusCode}
    kinds = {k.value: k for k in SpanKind}
    spans = []
    for tid, sid, psid, name, start, end, code, desc, attrs, ev, service, pre, *otel in packed:
        trace_id = int(tid, 16)
        ctx = SpanContext(trace_id, int(sid, 16), is_remote=False)
        parent = SpanContext(trace_id, int(psid, 16), is_remote=False) if psid else None
        if otel:  # the resource is an index into the batch's resources
            res = batch_resources[service]
        else:  # a spool written before issue 21: the service name only
            res = resources.get(service)
            if res is None:
                res = resources[service] = Resource({"service.name": service} if service else {})
        kind, scope = SpanKind.INTERNAL, None
        links: tuple[Any, ...] = ()
        if otel:
            kind = kinds.get(otel[0], SpanKind.INTERNAL)
            links = tuple(
                Link(SpanContext(int(lt, 16), int(ls, 16), is_remote=True,
                                 trace_state=TraceState.from_header([st]) if st else None), tuples(la))
                for lt, ls, la, st in otel[1] or ()
            )  # fmt: skip
            scope = InstrumentationScope(otel[2], otel[3]) if otel[2] is not None else None
        for k, v in attrs.items():
            if type(v) is list:
                attrs[k] = tuple(v)  # sequence attributes, as the SDK holds them
        for k in pre:  # masked when recorded, in the app: the row builder need not scan them again
            note_masked(attrs[k])
        events = [Event(e[0], e[2], e[1]) for e in ev] if ev else ()
        status = Status(codes.get(code, StatusCode.UNSET), desc if code == StatusCode.ERROR.value else None)
        spans.append(
            ReadableSpan(
                name,
                context=ctx,
                parent=parent,
                resource=res,
                attributes=attrs,
                events=events,
                status=status,
                start_time=start,
                end_time=end,
                kind=kind,
                links=links,
                instrumentation_scope=scope,
            )
        )
    return spans
