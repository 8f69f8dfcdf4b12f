"""OTLP/gRPC transport of the receiver: the generated ``TraceService`` servicer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

if TYPE_CHECKING:
    from ragtrail.server._receiver import Receiver


def auth_interceptor(receiver: Receiver) -> Any:
    """A server interceptor checking the bearer token from the call's metadata, before the request
    message is parsed: an unauthenticated call is answered UNAUTHENTICATED by a handler that never
    deserialises it."""
    import grpc

    from ragtrail.server._receiver import Outcome

    def deny(_request: Any, context: Any) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

    denied = grpc.unary_unary_rpc_method_handler(deny)  # no request deserializer: the bytes stay unparsed

    class _Auth(grpc.ServerInterceptor):  # type: ignore[misc]
        def intercept_service(self, continuation: Any, details: Any) -> Any:
            metadata = dict(details.invocation_metadata or ())
            if receiver.authorized(metadata.get("authorization")):
                return continuation(details)
            receiver._count(Outcome("unauthorized"))
            return denied

    return _Auth()


class TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Export(): hand the request to the receiver (the token was checked by :func:`auth_interceptor`);
    map outcomes to gRPC codes."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - generated name
        import grpc

        r = self.receiver
        outcome = r.ingest(request)
        if outcome.status == "ok":
            resp = trace_service_pb2.ExportTraceServiceResponse()
            if outcome.rejected:
                resp.partial_success.rejected_spans = outcome.rejected
                resp.partial_success.error_message = outcome.message
            return resp
        if outcome.retry_after_s:
            from google.protobuf.duration_pb2 import Duration
            from google.rpc.error_details_pb2 import RetryInfo

            info = RetryInfo(retry_delay=Duration(seconds=outcome.retry_after_s))
            context.set_trailing_metadata((("google.rpc.retryinfo-bin", info.SerializeToString()),))
        code = {
            "busy": grpc.StatusCode.RESOURCE_EXHAUSTED,
            "unavailable": grpc.StatusCode.UNAVAILABLE,
        }.get(outcome.status, grpc.StatusCode.INVALID_ARGUMENT)
        context.abort(code, outcome.message)
        return None  # pragma: no cover - abort raises
