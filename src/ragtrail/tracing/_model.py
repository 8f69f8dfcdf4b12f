"""Read-side objects: a stored span (:class:`SpanRecord`) and a span tree (:class:`Trace`).

The same objects come from the store (``Client.trace``) and from the in-process collector the eval
harness uses, so scorers see one shape whichever way a trace was obtained.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragtrail import semconv
from ragtrail.tracing._messages import read_input_messages, read_output_messages


@dataclass
class SpanRecord:
    """One span as stored."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str | None
    start_time_ns: int
    end_time_ns: int
    status: str = "UNSET"
    status_message: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    project: str | None = None

    @property
    def duration_ms(self) -> float:
        return (self.end_time_ns - self.start_time_ns) / 1e6

    @property
    def model(self) -> str | None:
        a = self.attributes
        return (
            a.get(semconv.GEN_AI_RESPONSE_MODEL)
            or a.get(semconv.GEN_AI_REQUEST_MODEL)
            or a.get(semconv.EMBEDDING_MODEL)
        )

    @property
    def input_tokens(self) -> int | None:
        return self.attributes.get(semconv.GEN_AI_USAGE_INPUT_TOKENS)

    @property
    def output_tokens(self) -> int | None:
        return self.attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS)

    @property
    def cost_usd(self) -> float | None:
        return self.attributes.get(semconv.COST_USD)

    @property
    def ttft_s(self) -> float | None:
        return self.attributes.get(semconv.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK)

    @property
    def session_id(self) -> str | None:
        return self.attributes.get(semconv.SESSION_ID)

    @property
    def user_id(self) -> str | None:
        return self.attributes.get(semconv.USER_ID)

    @property
    def is_error(self) -> bool:
        return self.status == "ERROR"

    @property
    def input(self) -> Any:
        return maybe_json(self.attributes.get(semconv.INPUT_VALUE))

    @property
    def output(self) -> Any:
        return maybe_json(self.attributes.get(semconv.OUTPUT_VALUE))

    def input_messages(self) -> list[dict[str, Any]]:
        """Chat input messages in the GenAI parts schema, system instructions first (``role: system``)."""
        return read_input_messages(self.attributes)

    def output_messages(self) -> list[dict[str, Any]]:
        """Chat output messages in the GenAI parts schema."""
        return read_output_messages(self.attributes)

    def documents(self) -> list[dict[str, Any]]:
        """Retrieved documents recorded on this span (id, score, rank, content…), best first."""
        raw = self.attributes.get(semconv.GEN_AI_RETRIEVAL_DOCUMENTS)
        docs = maybe_json(raw) if raw else None
        if isinstance(docs, list):
            return [d for d in docs if isinstance(d, dict)]
        ids = self.attributes.get(semconv.RETRIEVAL_DOCUMENT_IDS)
        if ids:
            return [{"id": i, "rank": r} for r, i in enumerate(ids)]
        return []

    @classmethod
    def from_row(cls, row: Sequence[Any], loads: Callable[[Any], Any] = json.loads) -> SpanRecord:
        """From a store row in SPAN_COLUMNS order (``loads`` parses the JSON columns: the UI passes orjson's)."""
        attrs = loads(row[15]) if row[15] else {}
        events = loads(row[16]) if row[16] else []
        attrs = attrs if isinstance(attrs, dict) else {}
        events = events if isinstance(events, list) else []
        # the promoted columns are authoritative when a writer (or a bulk import) left them out of the JSON
        for col, key in ((11, semconv.GEN_AI_USAGE_INPUT_TOKENS), (12, semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
                         (13, semconv.COST_USD)):  # fmt: skip
            if row[col] is not None and key not in attrs:
                attrs[key] = row[col]
        if len(row) > 24 and row[24] is not None and semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS not in attrs:
            attrs[semconv.GEN_AI_USAGE_CACHED_INPUT_TOKENS] = row[24]  # cached_input_tokens (migration 13)
        return cls(
            trace_id=row[0], span_id=row[1], parent_span_id=row[2], name=row[3], kind=row[4],
            start_time_ns=int(row[5]), end_time_ns=int(row[6]), status=row[8] or "UNSET",
            status_message=row[9], attributes=attrs, events=events, project=row[14],
        )  # fmt: skip

    @classmethod
    def from_readable(cls, span: Any, project: str | None = None) -> SpanRecord:
        """From an ended OpenTelemetry SDK ``ReadableSpan``."""
        from ragtrail.tracing import _setup
        from ragtrail.tracing._exporter import span_to_row

        cfg = _setup._config
        return cls.from_row(span_to_row(span, project or "", mask=cfg.mask_secrets if cfg is not None else True))


def maybe_json(v: Any) -> Any:
    """``v`` parsed when it is JSON text of an object, array or string; else ``v`` as it is."""
    if isinstance(v, str) and v[:1] in ("{", "[", '"'):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


class Trace:
    """A trace's spans as a tree. ``trace.root``, ``trace.children(span)``, ``trace.find(kind=...)``,
    ``trace.retrieved_documents()``, ``trace.llm_calls()``; totals for tokens, cost and latency."""

    def __init__(self, spans: Sequence[SpanRecord]) -> None:
        self.spans: list[SpanRecord] = sorted(spans, key=lambda s: (s.start_time_ns, s.end_time_ns))
        self.trace_id = self.spans[0].trace_id if self.spans else ""
        self._by_id = {s.span_id: s for s in self.spans}
        self._children: dict[str | None, list[SpanRecord]] = {}
        for s in self.spans:
            parent = s.parent_span_id if s.parent_span_id in self._by_id else None
            self._children.setdefault(parent, []).append(s)
        self.feedback: dict[str, Any] = {}
        """Latest feedback value per name (filled by ``Client.traces``/``Client.trace``; scorers may read it)."""

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Iterator[SpanRecord]:
        return iter(self.spans)

    def __repr__(self) -> str:
        root = self.root
        errors = sum(1 for s in self.spans if s.is_error)
        return (f"<Trace {self.trace_id[:8]}… {root.name if root else None!r} {len(self.spans)} spans "
                f"{self.duration_ms:.1f} ms" + (f" ${self.cost_usd:.6f}" if self.cost_usd is not None else "")
                + (f" {errors} errors" if errors else "") + ">")  # fmt: skip

    @property
    def roots(self) -> list[SpanRecord]:
        """Spans without a parent inside this trace."""
        return list(self._children.get(None, []))

    @property
    def root(self) -> SpanRecord | None:
        r = self.roots
        return r[0] if r else None

    def span(self, span_id: str) -> SpanRecord:
        return self._by_id[span_id]

    def parent(self, span: SpanRecord) -> SpanRecord | None:
        return self._by_id.get(span.parent_span_id or "")

    def children(self, span: SpanRecord | None) -> list[SpanRecord]:
        """Direct children of ``span`` (of the trace when None), in start order."""
        return list(self._children.get(None if span is None else span.span_id, []))

    def walk(self) -> Iterator[tuple[int, SpanRecord]]:
        """Depth-first (depth, span) pairs, children in start order."""
        stack: list[tuple[int, SpanRecord]] = [(0, s) for s in reversed(self.roots)]
        while stack:
            depth, s = stack.pop()
            yield depth, s
            stack.extend((depth + 1, c) for c in reversed(self._children.get(s.span_id, [])))

    def find(self, kind: str | None = None, name: str | None = None) -> list[SpanRecord]:
        """Spans of a kind and/or name, in start order."""
        return [s for s in self.spans if (kind is None or s.kind == kind) and (name is None or s.name == name)]

    def llm_calls(self) -> list[SpanRecord]:
        return self.find(kind=semconv.LLM)

    def retrievals(self) -> list[SpanRecord]:
        return self.find(kind=semconv.RETRIEVER)

    def retrieved_documents(self) -> list[dict[str, Any]]:
        """Documents of the outermost retriever spans that recorded documents, in rank order.

        When retriever spans nest (a LangChain retriever around a Chroma query), the outer one is
        what the pipeline saw; inner spans fill in when the outer recorded no documents.
        """
        best: list[dict[str, Any]] = []
        for s in self.retrievals():
            docs = s.documents()
            if not docs:
                continue
            anc = self.parent(s)
            nested = False
            while anc is not None:
                if anc.kind == semconv.RETRIEVER and anc.documents():
                    nested = True
                    break
                anc = self.parent(anc)
            if not nested:
                best.extend(docs)
        return best

    @property
    def input_tokens(self) -> int:
        return sum(int(s.input_tokens or 0) for s in self.llm_calls())

    @property
    def output_tokens(self) -> int:
        return sum(int(s.output_tokens or 0) for s in self.llm_calls())

    @property
    def cost_usd(self) -> float | None:
        costs = [s.cost_usd for s in self.spans if s.cost_usd is not None]
        return sum(costs) if costs else None

    @property
    def duration_ms(self) -> float:
        if not self.spans:
            return 0.0
        return (max(s.end_time_ns for s in self.spans) - min(s.start_time_ns for s in self.spans)) / 1e6

    @property
    def errors(self) -> list[SpanRecord]:
        return [s for s in self.spans if s.is_error]

    def to_text(self) -> str:
        """An indented tree with durations, tokens and cost (what ``ragtrail traces show`` prints)."""
        lines = []
        for depth, s in self.walk():
            parts = [f"{'  ' * depth}{s.name}", f"[{s.kind or '-'}]", f"{s.duration_ms:.1f} ms"]
            if s.kind == semconv.EMBEDDING and not s.output_tokens and s.input_tokens is not None:
                parts.append(f"tokens {s.input_tokens}")  # embeddings produce vectors, not tokens
            elif s.input_tokens is not None or s.output_tokens is not None:
                parts.append(f"tokens {s.input_tokens or 0}→{s.output_tokens or 0}")
            if s.cost_usd is not None:
                parts.append(f"${s.cost_usd:.6f}")
            if s.ttft_s is not None:
                parts.append(f"ttft {s.ttft_s * 1000:.1f} ms")
            if s.is_error:
                parts.append(f"ERROR {s.status_message or ''}".rstrip())
            lines.append("  ".join(parts))
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        try:
            return trace_html(self)
        except Exception:
            return f"<pre>{html.escape(self.to_text())}</pre>"


# -------------------------------------------------------------------------------------------- HTML
KIND_COLORS = {
    "CHAIN": "#8da0cb", "RETRIEVER": "#66c2a5", "EMBEDDING": "#a6d854", "LLM": "#fc8d62",
    "RERANKER": "#e5c494", "TOOL": "#ffd92f", "AGENT": "#e78ac3", "EVALUATOR": "#b3b3b3",
}  # fmt: skip


def trace_html(trace: Trace) -> str:
    """An HTML waterfall of a trace (``Trace._repr_html_`` in Jupyter; every stored text escaped)."""
    rows = list(trace.walk())
    if not rows:
        return "<p>empty trace</p>"
    t0 = min(s.start_time_ns for _, s in rows)
    total = max(1, max(s.end_time_ns for _, s in rows) - t0)
    out = [
        f"<div style='font-family:sans-serif;font-size:12px'><b>Trace {html.escape(trace.trace_id)}</b> — "
        f"{len(rows)} spans, {trace.duration_ms:.1f} ms"
        + (f", ${trace.cost_usd:.6f}" if trace.cost_usd is not None else "")
        + "<table style='width:100%;border-collapse:collapse'>"
    ]
    for depth, s in rows:
        left = 100.0 * (s.start_time_ns - t0) / total
        width = max(0.3, 100.0 * (s.end_time_ns - s.start_time_ns) / total)
        color = "#d62728" if s.is_error else KIND_COLORS.get(s.kind or "", "#999")
        extra = []
        if s.input_tokens is not None or s.output_tokens is not None:
            extra.append(f"{s.input_tokens or 0}→{s.output_tokens or 0} tok")
        if s.cost_usd is not None:
            extra.append(f"${s.cost_usd:.6f}")
        out.append(
            "<tr>"
            f"<td style='white-space:nowrap;padding-left:{depth * 14}px'>{html.escape(s.name)} "
            f"<span style='color:#888'>[{html.escape(s.kind or '-')}]</span></td>"
            f"<td style='width:55%'><div style='position:relative;height:12px;background:#f4f4f4'>"
            f"<div style='position:absolute;left:{left:.2f}%;width:{width:.2f}%;height:12px;background:{color}'></div>"
            f"</div></td><td style='white-space:nowrap;text-align:right'>{s.duration_ms:.1f} ms {html.escape(' '.join(extra))}</td>"
            "</tr>"
        )
    out.append("</table>" + _context_feedback_html(trace) + "</div>")
    return "".join(out)


def _context_feedback_html(trace: Trace) -> str:
    """Session, user and the latest feedback per name under a trace's waterfall (text escaped)."""
    root = trace.root
    parts = []
    if root is not None and (root.session_id or root.user_id):
        parts.append(
            f"session {html.escape(str(root.session_id or '-'))}, user {html.escape(str(root.user_id or '-'))}"
        )
    fb = getattr(trace, "feedback", None) or {}
    if fb:
        parts.append(
            "feedback: " + ", ".join(f"{html.escape(str(k))} = {html.escape(str(v))}" for k, v in sorted(fb.items()))
        )
    return "".join(f"<div style='color:#555'>{p}</div>" for p in parts)
