"""``ragtrail serve``: an OTLP trace receiver (HTTP protobuf + JSON on 4318, gRPC on 4317) into the store.

Built on existing stacks only: FastAPI + uvicorn for OTLP/HTTP, grpcio's generated ``TraceService``
for OTLP/gRPC, and the ``opentelemetry-proto`` messages for both encodings.

Limits that keep a receiver safe to leave running:
* request bodies are capped (``max_body_bytes``, also after gzip/deflate decompression) → 413;
* a malformed payload gets 400 (gRPC INVALID_ARGUMENT) with the reason;
* with a token, requests need ``Authorization: Bearer <token>`` → 401 (gRPC UNAUTHENTICATED);
* spans go through a queue bounded in spans: when it is full the request is refused with 429 and
  ``Retry-After`` (gRPC RESOURCE_EXHAUSTED with a RetryInfo delay), when the store keeps failing or
  the receiver is stopping with 503 (gRPC UNAVAILABLE). Nothing is buffered without bound.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

from ragtrail._exceptions import ConfigError
from ragtrail._log import logger
from ragtrail.server._convert import PayloadError, parse_json, parse_protobuf, request_to_rows
from ragtrail.server._queue import SpanQueue
from ragtrail.store import Store, open_store
from ragtrail.tracing._content import DEFAULT_MAX_BYTES, Sanitizer

DEFAULT_HOST = "127.0.0.1"
DEFAULT_HTTP_PORT = 4318
DEFAULT_GRPC_PORT = 4317
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_QUEUE_SPANS = 100_000
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"


@dataclass
class Outcome:
    """What happened to one export request (transport-neutral)."""

    status: str  # ok | bad_request | unauthorized | too_large | busy | unavailable | unsupported | timeout
    message: str = ""
    accepted: int = 0
    rejected: int = 0
    retry_after_s: int = 0


class Receiver:
    """An OTLP trace receiver writing into a ragtrail store.

    Args:
        store: a Store, or a path/URL for :func:`ragtrail.store.open_store` (None: the default store).
        host: interface to bind; loopback unless told otherwise.
        http_port / grpc_port: 0 picks a free port; None disables that transport.
        token: when set, every request must carry ``Authorization: Bearer <token>``.
        max_body_bytes: largest accepted request (compressed and decompressed).
        queue_size: most spans waiting to be written before senders are told to back off.
        project: project of received spans that name none (``ragtrail.project`` attribute or resource).
        body_timeout_s / idle_timeout_s: a request body must arrive within this total time, with no
            pause longer than the idle time (408 otherwise); a stalled sender never holds a parsing slot.
        mask / mask_secrets / max_attribute_bytes: the sanitising step received spans go through, as
            in ``ragtrail.init()`` (secret masking, the user's hook, the byte cap).
    """

    def __init__(
        self,
        store: Store | str | None = None,
        *,
        host: str = DEFAULT_HOST,
        http_port: int | None = DEFAULT_HTTP_PORT,
        grpc_port: int | None = DEFAULT_GRPC_PORT,
        token: str | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        queue_size: int = DEFAULT_QUEUE_SPANS,
        project: str = "default",
        retry_after_s: int = 1,
        body_timeout_s: float = 30.0,
        idle_timeout_s: float = 10.0,
        mask: Callable[[str], str] | None = None,
        mask_secrets: bool = True,
        max_attribute_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if http_port is None and grpc_port is None:
            raise ConfigError("ragtrail serve needs at least one of the HTTP and gRPC ports")
        if max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes={max_body_bytes} is too small; use at least 1024")
        if queue_size < 1:
            raise ConfigError(f"queue_size={queue_size} must be at least 1")
        self.store = store if isinstance(store, Store) else open_store(store)
        self.host = host
        self._want_http = http_port
        self._want_grpc = grpc_port
        self.token = token or None
        self.max_body_bytes = int(max_body_bytes)
        self.project = project
        self.retry_after_s = max(1, int(retry_after_s))
        if mask is not None and not callable(mask):
            raise ConfigError("Receiver(mask=...) must be a callable taking and returning a str")
        if max_attribute_bytes < 64:
            raise ConfigError("Receiver(max_attribute_bytes=...) must be at least 64")
        self.policy = Sanitizer(mask_secrets=bool(mask_secrets), hook=mask, max_bytes=int(max_attribute_bytes))
        self.body_timeout_s = float(body_timeout_s)
        self.idle_timeout_s = float(idle_timeout_s)
        self._buffered = 0
        self._max_buffered = 4 * self.max_body_bytes
        self.queue = SpanQueue(self.store, max_spans=int(queue_size))
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._uvicorn: Any = None
        self._http_thread: threading.Thread | None = None
        self._grpc_server: Any = None
        self._stopping = False
        self._lock = threading.Lock()
        self.counts = {"requests": 0, "ok": 0, "bad_request": 0, "unauthorized": 0, "too_large": 0,
                       "busy": 0, "unavailable": 0, "unsupported": 0, "timeout": 0}  # fmt: skip
        self.spans_rejected = 0  # spans refused in a request (invalid ids): never answered as stored

    def reserve_bytes(self, n: int) -> bool:
        """Account ``n`` more request-body bytes held in memory; False when over the budget."""
        with self._lock:
            if self._buffered and self._buffered + n > self._max_buffered:
                return False
            self._buffered += n
            return True

    def release_bytes(self, n: int) -> None:
        with self._lock:
            self._buffered -= n

    # ------------------------------------------------------------------------------ shared logic
    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header value carries the right bearer token."""
        if self.token is None:
            return True
        if not header or not header.lower().startswith("bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.token.encode())

    def _count(self, outcome: Outcome) -> Outcome:
        with self._lock:
            self.counts["requests"] += 1
            self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        return outcome

    def ingest(self, request: Any) -> Outcome:
        """Queue the spans of a parsed ``ExportTraceServiceRequest``."""
        if self._stopping:
            return self._count(
                Outcome("unavailable", "the receiver is shutting down", retry_after_s=self.retry_after_s)
            )
        try:
            rows, rejected, reason = request_to_rows(request, self.project, self.policy)
        except Exception as exc:  # a message that parsed but cannot be converted
            logger.debug("ragtrail serve: conversion failed", exc_info=True)
            return self._count(Outcome("bad_request", f"cannot convert the spans: {exc}"))
        if rejected:
            with self._lock:
                self.spans_rejected += rejected
        if not rows and rejected:
            return self._count(Outcome("bad_request", f"no valid span in the request: {reason}", rejected=rejected))
        if not self._feedback(rows):
            return self._count(
                Outcome("unavailable", "could not store feedback; retry later", retry_after_s=self.retry_after_s)
            )
        if not self.queue.offer(rows):
            if not self.queue.healthy:
                return self._count(
                    Outcome("unavailable", "the store is failing; retry later", retry_after_s=5 * self.retry_after_s)
                )
            return self._count(
                Outcome(
                    "busy",
                    f"the receiver's queue is full ({self.queue.pending} spans waiting to be written); retry later",
                    retry_after_s=self.retry_after_s,
                )
            )
        return self._count(Outcome("ok", reason, accepted=len(rows), rejected=rejected))

    def _feedback(self, rows: list[tuple[Any, ...]]) -> bool:
        """Store the feedback records carried by ``gen_ai.evaluation.result`` events (idempotent by id)."""
        from ragtrail.store._feedback import insert_feedback
        from ragtrail.tracing._feedback import rows_from_span_rows

        try:
            insert_feedback(self.store, rows_from_span_rows(rows))
            return True
        except Exception:
            logger.debug("ragtrail serve: could not store feedback", exc_info=True)
            return False

    def decode(self, body: bytes, content_type: str, encoding: str | None) -> Any:
        """Decompress (bounded) and parse an HTTP body; raises PayloadError / _TooLarge / _Unsupported."""
        enc = (encoding or "identity").lower().strip()
        if enc in ("gzip", "deflate"):
            d = zlib.decompressobj(16 + zlib.MAX_WBITS if enc == "gzip" else zlib.MAX_WBITS)
            try:
                out = d.decompress(body, self.max_body_bytes + 1)
            except zlib.error as exc:
                raise PayloadError(f"the body is not valid {enc} data: {exc}") from exc
            if len(out) > self.max_body_bytes or d.unconsumed_tail:
                raise _TooLarge(f"the decompressed body exceeds {self.max_body_bytes} bytes")
            body = out
        elif enc != "identity":
            raise _Unsupported(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
        ctype = content_type.split(";", 1)[0].strip().lower()
        if ctype == _PROTOBUF:
            return parse_protobuf(body)
        if ctype == _JSON:
            return parse_json(body)
        raise _Unsupported(f"Content-Type {content_type!r} is not supported; use {_PROTOBUF} or {_JSON}")

    # ------------------------------------------------------------------------------ lifecycle
    def start(self) -> Receiver:
        """Bind the ports and serve in background threads; returns once both transports accept requests."""
        try:
            if self._want_grpc is not None:
                self._start_grpc()
            if self._want_http is not None:
                self._start_http()
        except Exception:
            self.stop(timeout_s=5)
            raise
        return self

    def _start_http(self) -> None:
        import uvicorn

        from ragtrail.server._http import create_app

        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, int(self._want_http or 0)))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"ragtrail serve cannot listen on {self.host}:{self._want_http} for OTLP/HTTP: {exc.strerror}. "
                "Pick another --http-port (0 = any free port) or stop what uses it."
            ) from exc
        sock.listen(2048)
        sock.setblocking(False)
        self.http_port = sock.getsockname()[1]
        config = uvicorn.Config(
            create_app(self), log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30,
            limit_concurrency=512,
        )  # fmt: skip
        server = uvicorn.Server(config)
        self._uvicorn = server

        def run() -> None:
            try:
                asyncio.run(server.serve(sockets=[sock]))
            except Exception:  # pragma: no cover - reported through started/readiness below
                logger.exception("ragtrail serve: the HTTP server stopped")
            finally:
                sock.close()

        self._http_thread = threading.Thread(target=run, name="ragtrail-serve-http", daemon=True)
        self._http_thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not self._http_thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"ragtrail serve: the OTLP/HTTP server did not start on {self.host}:{self.http_port}")
            time.sleep(0.01)

    def _start_grpc(self) -> None:
        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        from ragtrail.server._grpc import TraceServicer, auth_interceptor

        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="ragtrail-serve-grpc"),
            options=[
                ("grpc.max_receive_message_length", self.max_body_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=64,
            interceptors=[auth_interceptor(self)] if self.token is not None else None,
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceServicer(self), server)
        addr = f"[{self.host}]" if ":" in self.host else self.host
        try:
            port = server.add_insecure_port(f"{addr}:{int(self._want_grpc or 0)}")
        except RuntimeError as exc:
            port = 0
            err: Exception | None = exc
        else:
            err = None
        if not port:
            raise ConfigError(
                f"ragtrail serve cannot listen on {self.host}:{self._want_grpc} for OTLP/gRPC ({err or 'port in use'}). "
                "Pick another --grpc-port (0 = any free port) or stop what uses it."
            )
        server.start()
        self.grpc_port = port
        self._grpc_server = server

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop accepting, write every accepted span, close the servers. True when nothing was lost."""
        self._stopping = True
        ok = self.queue.close(timeout_s)
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=1).wait(5)
            self._grpc_server = None
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
            if self._http_thread is not None:
                self._http_thread.join(10)
            self._uvicorn = None
        return ok and self.queue.failed == 0

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stats(self) -> dict[str, int]:
        """Request outcomes and span counters."""
        with self._lock:
            out = dict(self.counts)
        out.update({f"spans_{k}": v for k, v in self.queue.stats().items()})
        out["spans_invalid"] = self.spans_rejected  # refused in the request, reported as rejected
        out.update({f"spans_{k}": v for k, v in self.store.span_stats().items()})  # repaired/reduced/rejected
        return out


class _TooLarge(Exception):
    pass


class _Unsupported(Exception):
    pass
