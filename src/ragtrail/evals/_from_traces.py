"""``Dataset.from_traces`` / ``Dataset.add_traces``: dataset versions curated from production traces.

Each trace becomes one example: ``id`` the trace id, ``input`` (default: the root span's input),
``reference`` (default: none; e.g. ``"feedback.corrected_answer"``), and ``metadata`` with
``source_trace_id``, the production ``output`` (default: the root span's output) and the session and
user when the trace has them. The dataset's ``meta`` records the lineage: the source trace ids, the
field mapping and the version it was built on.

A mapping is a callable ``f(trace) -> value`` or a dotted path whose first part is ``input``,
``output`` (the root span's), ``feedback`` (the trace's latest feedback by name) or ``attributes`` (the
root span's attributes); later parts index into dicts (keys) and lists (integers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from ragtrail import semconv
from ragtrail._exceptions import DatasetError
from ragtrail.evals._types import Example
from ragtrail.tracing._model import maybe_json

if TYPE_CHECKING:
    from ragtrail.evals._datasets import Dataset
    from ragtrail.tracing._model import Trace

Mapping_ = str | Callable[[Any], Any] | None
_MISSING = object()
_ROOTS = ("input", "output", "feedback", "attributes")


def resolve(trace: Trace, path: str) -> Any:
    """The value at a dotted path of a trace (``_MISSING`` when absent)."""
    head, *rest = path.split(".")
    root = trace.root
    if head == "feedback":
        if not rest:
            return dict(trace.feedback)
        cur: Any = trace.feedback.get(rest[0], _MISSING)
        rest = rest[1:]
    elif root is None:
        return _MISSING
    elif head == "input":
        cur = root.input
    elif head == "output":
        cur = root.output
    elif head == "attributes":
        if not rest:
            return dict(root.attributes)
        # attribute names contain dots: take the longest name that matches
        for n in range(len(rest), 0, -1):
            key = ".".join(rest[:n])
            if key in root.attributes:
                cur, rest = maybe_json(root.attributes[key]), rest[n:]
                break
        else:
            return _MISSING
    else:
        raise DatasetError(f"field path {path!r}: it must start with one of {', '.join(_ROOTS)}")
    for part in rest:
        if cur is _MISSING:
            return _MISSING
        cur = maybe_json(cur)
        if isinstance(cur, dict):
            cur = cur.get(part, _MISSING)
        elif isinstance(cur, list) and part.lstrip("-").isdigit():
            i = int(part)
            cur = cur[i] if -len(cur) <= i < len(cur) else _MISSING
        else:
            return _MISSING
    return cur


def _value(trace: Trace, mapping: Mapping_, what: str) -> Any:
    if mapping is None:
        return _MISSING
    if callable(mapping):
        try:
            return mapping(trace)
        except Exception as exc:
            raise DatasetError(f"trace {trace.trace_id}: the {what}= callable failed: {exc!r}") from exc
    if not isinstance(mapping, str):
        raise DatasetError(f"{what}= must be a dotted path (str) or a callable, not {type(mapping).__name__}")
    return resolve(trace, mapping)


def _describe(mapping: Mapping_) -> Any:
    if mapping is None or isinstance(mapping, str):
        return mapping
    return f"{getattr(mapping, '__module__', '?')}.{getattr(mapping, '__qualname__', repr(mapping))}"


def _load(traces: Iterable[Any], store: Any) -> list[Trace]:
    from ragtrail.tracing._model import Trace

    items = list(traces)
    ids = [t for t in items if isinstance(t, str)]
    by_id: dict[str, Trace] = {}
    if ids:
        for t in _by_ids(store, ids):
            by_id[t.trace_id] = t
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DatasetError(f"from_traces: trace {missing[0]!r} is not in the store")
    out: list[Trace] = []
    for t in items:
        if isinstance(t, str):
            out.append(by_id[t])
        elif isinstance(t, Trace):
            out.append(t)
        else:
            raise DatasetError(f"from_traces: expected Trace objects or trace ids, got {type(t).__name__}")
    return out


def _by_ids(store: Any, ids: list[str]) -> list[Trace]:
    from ragtrail._production import trace_feedback
    from ragtrail._store_of import store_of
    from ragtrail.store import _evals as repo
    from ragtrail.tracing._model import SpanRecord, Trace

    store = store_of(store)
    by: dict[str, list[SpanRecord]] = {}
    for row in repo.trace_span_rows(store, ids):
        s = SpanRecord.from_row(row)
        by.setdefault(s.trace_id, []).append(s)
    fb = trace_feedback(store, list(by))
    out = []
    for tid, spans in by.items():
        t = Trace(spans)
        t.feedback = fb.get(tid, {})
        out.append(t)
    return out


def examples_from_traces(
    traces: list[Trace],
    input: Mapping_,  # noqa: A002 - the public name of the mapping
    output: Mapping_,
    reference: Mapping_,
) -> list[Example]:
    """One example per trace (in the given order); traces without a root span are an error."""
    out = []
    for t in traces:
        root = t.root
        if root is None:
            raise DatasetError(f"trace {t.trace_id!r} has no spans; it cannot become an example")
        inp = _value(t, input, "input")
        if inp is _MISSING:
            raise DatasetError(
                f"trace {t.trace_id}: the input {_describe(input)!r} is missing (the root span recorded no such value;"
                " was content capture off?); pass input= another path or a callable"
            )
        md: dict[str, Any] = {"source_trace_id": t.trace_id}
        out_v = _value(t, output, "output")
        if out_v is not _MISSING:
            md["output"] = out_v
        for key, attr in (("session_id", semconv.SESSION_ID), ("user_id", semconv.USER_ID)):
            v = root.attributes.get(attr)
            if v is not None:
                md[key] = v
        ref = _value(t, reference, "reference")
        out.append(Example(id=t.trace_id, input=inp, reference=None if ref is _MISSING else ref, metadata=md))
    return out


def from_traces(
    cls: type[Dataset],
    traces: Iterable[Any],
    input: Mapping_ = "input",  # noqa: A002 - the public name of the mapping
    output: Mapping_ = "output",
    reference: Mapping_ = None,
    *,
    name: str = "traces",
    description: str | None = None,
    store: Any = None,
    base: Dataset | None = None,
) -> Dataset:
    loaded = _load(traces, store)
    if base is not None:
        have = set(base.ids)
        loaded = [t for t in loaded if t.trace_id not in have]
    seen: set[str] = set()
    uniq = []
    for t in loaded:
        if t.trace_id not in seen:
            seen.add(t.trace_id)
            uniq.append(t)
    new = examples_from_traces(uniq, input, output, reference)
    mapping = {"input": _describe(input), "output": _describe(output), "reference": _describe(reference)}
    prev_ids: list[str] = []
    meta: dict[str, Any] = {"source": "traces", "mapping": mapping}
    examples = new
    if base is not None:
        prev_ids = list(base.meta.get("trace_ids") or [])
        examples = [*base.examples, *new]
        meta["parent"] = base.ref
        description = description or base.description
    meta["trace_ids"] = prev_ids + [t.trace_id for t in uniq]
    return cls(examples, name, description=description, meta=meta)


__all__ = ["examples_from_traces", "from_traces", "resolve"]
