"""OTLP export to any OpenTelemetry back end, with an optional OpenInference translation.

``make_otlp_exporter(endpoint)`` picks the transport from the endpoint:

* ``http://host:4318`` / ``https://…`` → OTLP/HTTP protobuf (``/v1/traces`` is appended when the URL has
  no path);
* ``grpc://host:4317`` (insecure), ``grpcs://host:4317`` (TLS), or any ``http://`` URL on port 4317 →
  OTLP/gRPC.

Headers (``OTEL_EXPORTER_OTLP_HEADERS``…) and TLS settings are read by the stock exporters as usual.

With ``openinference=True`` the exporter is wrapped in :class:`OpenInferenceSpanExporter`, which adds
OpenInference attribute names (``openinference.span.kind``, ``llm.model_name``,
``llm.token_count.*``, ``retrieval.documents.N.document.*``, ``embedding.model_name``,
``input.value``/``output.value``, messages…) at export time, next to ragtrail's own names, so that
Arize Phoenix and other OpenInference readers render ragtrail spans natively. The spans recorded in
the store are not changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlparse

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ragtrail import semconv
from ragtrail._exceptions import ConfigError
from ragtrail._log import logger, warn_once
from ragtrail.tracing._messages import message_text, read_input_messages, read_output_messages
from ragtrail.tracing._readable import replace_span

_GRPC_SCHEMES = ("grpc", "grpcs")


def _transport(endpoint: str) -> tuple[str, str, bool]:
    """(kind, endpoint for the exporter, insecure) for a user endpoint; raises ConfigError."""
    u = urlparse(endpoint if "://" in endpoint else f"http://{endpoint}")
    if u.scheme not in ("http", "https", *_GRPC_SCHEMES) or not u.hostname:
        raise ConfigError(
            f"otlp_endpoint={endpoint!r} is not an OTLP endpoint; use http://host:4318 (OTLP/HTTP) "
            "or grpc://host:4317 (OTLP/gRPC)"
        )
    try:
        port = u.port
    except ValueError as exc:
        raise ConfigError(f"otlp_endpoint={endpoint!r}: invalid port") from exc
    host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
    if u.scheme in _GRPC_SCHEMES or port == 4317:
        netloc = f"{host}:{port or 4317}"
        return "grpc", netloc, u.scheme in ("grpc", "http")
    path = u.path if u.path not in ("", "/") else "/v1/traces"
    return "http", f"{u.scheme}://{host}{':' + str(port) if port else ''}{path}", u.scheme == "http"


def make_otlp_exporter(
    endpoint: str,
    openinference: bool = False,
    *,
    headers: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    project: str | None = None,
) -> SpanExporter:
    """An OTLP span exporter for ``endpoint`` (see the module docstring), optionally OpenInference-translated.

    ``project`` (ragtrail's project) names the Phoenix project of the translated spans when neither the
    span nor its resource names one: on an app's own TracerProvider the resource's ``service.name`` is the
    app's, not the project that ``ragtrail.init(project=...)`` chose.

    Raises:
        ConfigError: the endpoint is not an http(s)/grpc(s) URL.
        MissingDependencyError: the OTLP exporter packages are not installed (``ragtrail[otlp]``).
    """
    from ragtrail._deps import require

    kind, target, insecure = _transport(endpoint)
    exporter: SpanExporter
    if kind == "grpc":
        mod = require("opentelemetry.exporter.otlp.proto.grpc.trace_exporter", extra="otlp",
                      package="opentelemetry-exporter-otlp-proto-grpc")  # fmt: skip
        kwargs: dict[str, Any] = {"endpoint": target, "insecure": insecure}
    else:
        mod = require("opentelemetry.exporter.otlp.proto.http.trace_exporter", extra="otlp",
                      package="opentelemetry-exporter-otlp-proto-http")  # fmt: skip
        kwargs = {"endpoint": target}
    if headers:
        kwargs["headers"] = dict(headers)
    if timeout_s is not None:
        kwargs["timeout"] = timeout_s
    exporter = mod.OTLPSpanExporter(**kwargs)
    if openinference:
        exporter = OpenInferenceSpanExporter(exporter, project=project)
    return exporter


# ------------------------------------------------------------------------------ OpenInference
def _loads(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _value_and_mime(text: Any) -> tuple[str, str]:
    """ragtrail stores inputs/outputs as JSON text; a plain JSON string is shown as text."""
    v = _loads(text)
    if isinstance(v, str):
        return v, "text/plain"
    return (text if isinstance(text, str) else json.dumps(v, default=str)), "application/json"


def _kind(attrs: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    kind = attrs.get(semconv.SPAN_KIND)
    if isinstance(kind, str) and kind:
        yield semconv.OI_SPAN_KIND, kind


def _model(attrs: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    kind = attrs.get(semconv.SPAN_KIND)
    model = attrs.get(semconv.GEN_AI_RESPONSE_MODEL) or attrs.get(semconv.GEN_AI_REQUEST_MODEL)
    if kind == semconv.EMBEDDING:
        emb = attrs.get(semconv.EMBEDDING_MODEL) or model
        if emb:
            yield semconv.OI_EMBEDDING_MODEL_NAME, emb
    elif kind == semconv.RERANKER:
        rr = attrs.get(semconv.RERANKER_MODEL) or model
        if rr:
            yield semconv.OI_RERANKER_MODEL_NAME, rr
    elif model:
        yield semconv.OI_LLM_MODEL_NAME, model
    provider = attrs.get(semconv.GEN_AI_PROVIDER_NAME)
    if provider:
        yield semconv.OI_LLM_PROVIDER, provider
        yield semconv.OI_LLM_SYSTEM, provider


def _tokens(attrs: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    inp = attrs.get(semconv.GEN_AI_USAGE_INPUT_TOKENS)
    out = attrs.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS)
    if inp is not None:
        yield semconv.OI_LLM_TOKEN_COUNT_PROMPT, int(inp)
    if out is not None:
        yield semconv.OI_LLM_TOKEN_COUNT_COMPLETION, int(out)
    if inp is not None or out is not None:
        total = attrs.get(semconv.USAGE_TOTAL_TOKENS)
        yield semconv.OI_LLM_TOKEN_COUNT_TOTAL, int(total if total is not None else (inp or 0) + (out or 0))
    cached = attrs.get(semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS)
    if cached is not None:
        yield semconv.OI_LLM_TOKEN_COUNT_PROMPT_CACHE_READ, int(cached)
    cost = attrs.get(semconv.COST_USD)
    if cost is not None:
        yield semconv.OI_LLM_COST_TOTAL, float(cost)


def _io(attrs: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for src, key, mime in (
        (semconv.INPUT_VALUE, semconv.OI_INPUT_VALUE, semconv.OI_INPUT_MIME_TYPE),
        (semconv.OUTPUT_VALUE, semconv.OI_OUTPUT_VALUE, semconv.OI_OUTPUT_MIME_TYPE),
    ):
        if src in attrs:
            value, mt = _value_and_mime(attrs[src])
            yield key, value
            yield mime, mt
    if semconv.INPUT_VALUE not in attrs and semconv.GEN_AI_RETRIEVAL_QUERY_TEXT in attrs:
        yield semconv.OI_INPUT_VALUE, str(attrs[semconv.GEN_AI_RETRIEVAL_QUERY_TEXT])
        yield semconv.OI_INPUT_MIME_TYPE, "text/plain"


_PARAMS = (
    ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE), ("top_p", semconv.GEN_AI_REQUEST_TOP_P),
    ("top_k", semconv.GEN_AI_REQUEST_TOP_K), ("max_tokens", semconv.GEN_AI_REQUEST_MAX_TOKENS),
    ("seed", semconv.GEN_AI_REQUEST_SEED), ("stop", semconv.GEN_AI_REQUEST_STOP_SEQUENCES),
    ("frequency_penalty", semconv.GEN_AI_REQUEST_FREQUENCY_PENALTY),
    ("presence_penalty", semconv.GEN_AI_REQUEST_PRESENCE_PENALTY),
)  # fmt: skip


def _params(attrs: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    params = {name: (list(attrs[k]) if isinstance(attrs[k], tuple) else attrs[k]) for name, k in _PARAMS if k in attrs}
    if params:
        yield semconv.OI_LLM_INVOCATION_PARAMETERS, json.dumps(params)


def _messages(attrs: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    for msgs, prefix in (
        (read_input_messages(attrs), semconv.OI_LLM_INPUT_MESSAGES),
        (read_output_messages(attrs), semconv.OI_LLM_OUTPUT_MESSAGES),
    ):
        for i, m in enumerate(msgs):
            yield f"{prefix}.{i}.{semconv.OI_MESSAGE_ROLE}", m["role"]
            text = message_text(m)
            if text is not None:
                yield f"{prefix}.{i}.{semconv.OI_MESSAGE_CONTENT}", text
            calls = [p for p in m["parts"] if p.get("type") == semconv.PART_TOOL_CALL]
            for j, c in enumerate(calls):
                at = f"{prefix}.{i}.{semconv.OI_MESSAGE_TOOL_CALLS}.{j}"
                if c.get("id") is not None:
                    yield f"{at}.{semconv.OI_TOOL_CALL_ID}", str(c["id"])
                if c.get("name") is not None:
                    yield f"{at}.{semconv.OI_TOOL_CALL_FUNCTION_NAME}", str(c["name"])
                if c.get("arguments") is not None:
                    args = c["arguments"]
                    yield (
                        f"{at}.{semconv.OI_TOOL_CALL_FUNCTION_ARGUMENTS}",
                        (args if isinstance(args, str) else json.dumps(args, default=str)),
                    )
            answered = [p.get("id") for p in m["parts"] if p.get("type") == semconv.PART_TOOL_CALL_RESPONSE]
            if answered and answered[0] is not None:
                yield f"{prefix}.{i}.{semconv.OI_MESSAGE_TOOL_CALL_ID}", str(answered[0])


def _documents(attrs: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    docs = _loads(attrs.get(semconv.GEN_AI_RETRIEVAL_DOCUMENTS))
    if not isinstance(docs, list):
        ids = attrs.get(semconv.RETRIEVAL_DOCUMENT_IDS)
        docs = [{"id": i} for i in ids] if isinstance(ids, (list, tuple)) else []
    p = semconv.OI_RETRIEVAL_DOCUMENTS
    for i, d in enumerate(docs):
        if not isinstance(d, Mapping):
            continue
        if d.get("id") is not None:
            yield f"{p}.{i}.{semconv.OI_DOCUMENT_ID}", str(d["id"])
        if isinstance(d.get("score"), (int, float)):
            yield f"{p}.{i}.{semconv.OI_DOCUMENT_SCORE}", float(d["score"])
        if d.get("content") is not None:
            yield f"{p}.{i}.{semconv.OI_DOCUMENT_CONTENT}", str(d["content"])
        if d.get("metadata"):
            yield f"{p}.{i}.{semconv.OI_DOCUMENT_METADATA}", json.dumps(d["metadata"], default=str)


def _misc(attrs: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    if semconv.METADATA in attrs:
        yield semconv.OI_METADATA, attrs[semconv.METADATA]
    if semconv.TAGS in attrs:
        yield semconv.OI_TAG_TAGS, list(attrs[semconv.TAGS])
    if semconv.GEN_AI_TOOL_NAME in attrs:
        yield semconv.OI_TOOL_NAME, attrs[semconv.GEN_AI_TOOL_NAME]


_EXTRACTORS = (_kind, _model, _tokens, _io, _params, _messages, _documents, _misc)


def openinference_attributes(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """The OpenInference attributes for a span with ragtrail/GenAI ``attrs``.

    Each extractor is guarded: one that fails loses its attributes, never the span.
    """
    out: dict[str, Any] = {}
    for extract in _EXTRACTORS:
        try:
            for k, v in extract(attrs):
                if v is not None:
                    out[k] = v
        except Exception:
            logger.debug("ragtrail: OpenInference extractor %s failed", extract.__name__, exc_info=True)
    return out


_oi_resources: dict[tuple[int, str], tuple[Any, Any]] = {}


def _oi_resource(resource: Any, attrs: Mapping[str, Any], default_project: str | None = None) -> Any:
    """The resource with ``openinference.project.name`` (Phoenix's project routing), unless it has one:
    the span's ragtrail project, else ``default_project`` (the exporter's), else the resource's
    ``service.name``. Links, kind and scope pass as they are."""
    if resource is None or semconv.OI_PROJECT_NAME in resource.attributes:
        return resource
    project = attrs.get(semconv.PROJECT) or default_project or resource.attributes.get(semconv.SERVICE_NAME)
    if not isinstance(project, str) or not project:
        return resource
    key = (id(resource), project)
    hit = _oi_resources.get(key)
    if hit is not None and hit[0] is resource:
        return hit[1]
    from opentelemetry.sdk.resources import Resource

    merged = resource.merge(Resource({semconv.OI_PROJECT_NAME: project}))
    if len(_oi_resources) > 64:
        _oi_resources.clear()
    _oi_resources[key] = (resource, merged)
    return merged


def translate_span(span: ReadableSpan, project: str | None = None) -> ReadableSpan:
    """A copy of ``span`` whose attributes also carry the OpenInference names and whose resource names
    the Phoenix project (``project`` when neither the span nor its resource names one)."""
    attrs = dict(span.attributes or {})
    extra = openinference_attributes(attrs)
    resource = _oi_resource(span.resource, attrs, project)
    if not extra and resource is span.resource:
        return span
    attrs.update(extra)
    return replace_span(span, resource=resource, attributes=attrs)


class OpenInferenceSpanExporter(SpanExporter):
    """Wraps a SpanExporter, adding OpenInference attribute names to every span it exports."""

    def __init__(self, inner: SpanExporter, project: str | None = None) -> None:
        self.inner = inner
        self.project = project

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        out = []
        for s in spans:
            try:
                out.append(translate_span(s, self.project))
            except Exception:
                warn_once("oi-translate", "ragtrail: OpenInference translation failed; exporting spans untranslated",
                          exc_info=True)  # fmt: skip
                out.append(s)
        return self.inner.export(out)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


__all__ = ["OpenInferenceSpanExporter", "make_otlp_exporter", "openinference_attributes", "translate_span"]
