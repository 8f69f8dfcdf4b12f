"""``ragtrail serve``: an OTLP trace receiver (HTTP protobuf/JSON and gRPC) writing into the store.

Imported only by the CLI and by code that runs a receiver; it needs the ``otlp`` extra
(fastapi, uvicorn, grpcio, opentelemetry-proto).
"""

from ragtrail.server import _needs_otlp  # noqa: F401  (the otlp extra, or a one-line install hint)

# isort: split
from ragtrail.server._convert import PayloadError, parse_json, parse_protobuf, request_to_rows
from ragtrail.server._queue import SpanQueue
from ragtrail.server._receiver import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_QUEUE_SPANS,
    Outcome,
    Receiver,
)

__all__ = [
    "DEFAULT_GRPC_PORT",
    "DEFAULT_HOST",
    "DEFAULT_HTTP_PORT",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_QUEUE_SPANS",
    "Outcome",
    "PayloadError",
    "Receiver",
    "SpanQueue",
    "parse_json",
    "parse_protobuf",
    "request_to_rows",
]
