"""OTLP/gRPC transport of the receiver: the generated ``TraceService`` servicer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

if TYPE_CHECKING:
    from ragtrail.server._receiver import Receiver


class TraceServicer(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    """Export(): authenticate, then hand the request to the receiver; map outcomes to gRPC codes."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - generated name
        import grpc

        from ragtrail.server._receiver import Outcome

        r = self.receiver
        if r.token is not None:
            auth = dict(context.invocation_metadata()).get("authorization")
            if not r.authorized(auth):
                r._count(Outcome("unauthorized"))
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
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
