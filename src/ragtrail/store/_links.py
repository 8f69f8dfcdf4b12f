"""Queries over span links (issue 21). Links are stored per span as a JSON list in ``spans.links``."""

from __future__ import annotations

import json
from typing import Any

from ragtrail._exceptions import ConfigError


def spans_linking_to(store: Any, span_id: str, trace_id: str | None = None) -> list[dict[str, Any]]:
    """Spans with a link to ``span_id`` (and ``trace_id`` when given), oldest first.

    The SQL narrows by substring (the same on SQLite and PostgreSQL); the JSON is then checked exactly.
    """
    sid = (span_id or "").strip().lower()
    if len(sid) != 16 or any(c not in "0123456789abcdef" for c in sid):
        raise ConfigError(f"span_id {span_id!r} is not a 16-digit hex span id")
    tid = trace_id.strip().lower() if trace_id else None
    rows = store.query(
        "SELECT trace_id, span_id, name, links FROM spans WHERE links IS NOT NULL AND links LIKE ? "
        "ORDER BY start_time_ns",
        (f"%{sid}%",),
    )
    out = []
    for t, s, name, text in rows:
        try:
            links = json.loads(text)
        except ValueError:
            continue
        for link in links if isinstance(links, list) else []:
            if link.get("span_id") == sid and (tid is None or link.get("trace_id") == tid):
                out.append({"trace_id": t, "span_id": s, "name": name, "attributes": link.get("attributes") or {}})
    return out
