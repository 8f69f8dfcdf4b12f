"""OTLP/HTTP transport of the receiver: ``POST /v1/traces`` (protobuf or JSON) and ``GET /health``."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response  # module level: FastAPI resolves the annotations below

from ragtrail.server._convert import PayloadError

if TYPE_CHECKING:
    from ragtrail.server._receiver import Receiver

_MAX_BODIES_IN_FLIGHT = 8
# google.rpc.Code values used in OTLP error bodies
_RPC_CODE = {"bad_request": 3, "unauthorized": 16, "too_large": 8, "busy": 8, "unavailable": 14, "unsupported": 3,
             "timeout": 4}  # fmt: skip
_HTTP_STATUS = {"ok": 200, "bad_request": 400, "unauthorized": 401, "too_large": 413, "busy": 429,
                "unavailable": 503, "unsupported": 415, "timeout": 408}  # fmt: skip


def create_app(receiver: Receiver) -> FastAPI:
    """The FastAPI application serving OTLP/HTTP for ``receiver``."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

    from ragtrail.server._receiver import _JSON, _PROTOBUF, Outcome, _TooLarge, _Unsupported

    app = FastAPI(title="ragtrail OTLP receiver", docs_url=None, redoc_url=None, openapi_url=None)
    # Bodies being read or parsed at once: with the body cap this bounds the memory held by requests
    # (8 x max_body_bytes) however many connections are open; the others wait their turn.
    bodies = asyncio.Semaphore(_MAX_BODIES_IN_FLIGHT)

    def reply(outcome: Outcome, as_json: bool) -> Response:
        status = _HTTP_STATUS[outcome.status]
        headers: dict[str, str] = {}
        if outcome.retry_after_s:
            headers["Retry-After"] = str(outcome.retry_after_s)
        if outcome.status == "unauthorized":
            headers["WWW-Authenticate"] = 'Bearer realm="ragtrail"'
        if outcome.status == "ok":
            msg = ExportTraceServiceResponse()
            if outcome.rejected:
                msg.partial_success.rejected_spans = outcome.rejected
                msg.partial_success.error_message = outcome.message
            if as_json:
                from google.protobuf import json_format

                return Response(json_format.MessageToJson(msg, indent=None), 200, headers, media_type=_JSON)
            return Response(msg.SerializeToString(), 200, headers, media_type=_PROTOBUF)
        # OTLP error bodies are google.rpc.Status messages, in the request's encoding
        from google.rpc.status_pb2 import Status

        st = Status(code=_RPC_CODE.get(outcome.status, 2), message=outcome.message)
        if as_json:
            return Response(json.dumps({"code": st.code, "message": st.message}), status, headers, media_type=_JSON)
        return Response(st.SerializeToString(), status, headers, media_type=_PROTOBUF)

    @app.post("/v1/traces")
    async def traces(request: Request) -> Response:
        ctype = request.headers.get("content-type", "")
        as_json = ctype.split(";", 1)[0].strip().lower() == _JSON
        if not receiver.authorized(request.headers.get("authorization")):
            return reply(receiver._count(Outcome("unauthorized", "missing or wrong bearer token")), as_json)
        limit = receiver.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:
                return reply(receiver._count(Outcome("bad_request", "invalid Content-Length header")), as_json)
            if too_big:
                return reply(receiver._count(Outcome("too_large", f"the body exceeds {limit} bytes")), as_json)
        if receiver.queue.pending >= receiver.queue.max_spans:  # full already: refuse before reading the body
            busy = Outcome("busy", "the receiver's queue is full; retry later", retry_after_s=receiver.retry_after_s)
            return reply(receiver._count(busy), as_json)
        # The body is read before a parsing slot is taken, with an idle and a total deadline: a slow or
        # stalled sender times out (408) and never holds a slot; bytes buffered across all requests
        # are bounded (429 past the budget).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + receiver.body_timeout_s
        buf = bytearray()
        stream = request.stream().__aiter__()
        try:
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    raise asyncio.TimeoutError
                try:
                    chunk = await asyncio.wait_for(stream.__anext__(), min(left, receiver.idle_timeout_s))
                except StopAsyncIteration:
                    break
                if len(buf) + len(chunk) > limit:
                    return reply(receiver._count(Outcome("too_large", f"the body exceeds {limit} bytes")), as_json)
                if not receiver.reserve_bytes(len(chunk)):
                    busy = Outcome("busy", "too many request bodies in flight; retry later", retry_after_s=1)
                    return reply(receiver._count(busy), as_json)
                buf += chunk
        except asyncio.TimeoutError:
            late = Outcome("timeout", f"the request body did not arrive within {receiver.body_timeout_s:g} s")
            return reply(receiver._count(late), as_json)
        finally:
            receiver.release_bytes(len(buf))
        async with bodies:
            try:
                msg = receiver.decode(bytes(buf), ctype, request.headers.get("content-encoding"))
            except PayloadError as exc:
                return reply(receiver._count(Outcome("bad_request", str(exc))), as_json)
            except _TooLarge as exc:
                return reply(receiver._count(Outcome("too_large", str(exc))), as_json)
            except _Unsupported as exc:
                return reply(receiver._count(Outcome("unsupported", str(exc))), as_json)
            del buf
            return reply(receiver.ingest(msg), as_json)

    from ragtrail.server._metrics import add_metrics_route

    add_metrics_route(app, receiver)  # POST /v1/metrics (issue 16)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok" if receiver.queue.healthy else "store_failing", **receiver.stats()}

    _mount_ui(app, receiver)
    return app


def _mount_ui(app: FastAPI, receiver: Receiver) -> None:
    """The web UI under ``/ui`` (issue 14), on the receiver's store and token, when the ui extra is installed."""
    import importlib.util

    from ragtrail._exceptions import ConfigError
    from ragtrail._log import logger

    if importlib.util.find_spec("jinja2") is None:
        return
    from ragtrail.ui._launch import build_app

    try:
        app.mount("/ui", build_app(receiver.store, host=receiver.host, token=receiver.token))
    except ConfigError as exc:
        logger.warning("ragtrail serve: the web UI is not mounted: %s", exc)
