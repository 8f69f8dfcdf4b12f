"""The OTel columns of ``Client.spans_df`` (issue 21): span_kind, links, resource, scope_name, scope_version.

Kept apart from the fast frame builder in ``_client``: the extra columns ride along in the same row
batches (selected after the 15 classic columns) and are collected column-wise as the batches stream by.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

OTEL_COLUMNS = ("span_kind", "links", "resource", "scope_name", "scope_version")
SELECT = ", ".join(OTEL_COLUMNS)
_FIRST = 15  # the OTel columns follow the 15 classic spans_df columns in each row


def collect(batches: Iterable[list[tuple[Any, ...]]], out: list[list[Any]]) -> Iterator[list[tuple[Any, ...]]]:
    """Pass the batches through unchanged, keeping the OTel columns' values in ``out`` (5 lists)."""
    for rows in batches:
        if rows:
            cols = list(zip(*rows, strict=True))
            for i in range(len(OTEL_COLUMNS)):
                out[i].extend(cols[_FIRST + i])
        yield rows


def _json(text: Any, empty: Any) -> Any:
    if not text:
        return empty
    try:
        return json.loads(text)
    except ValueError:
        return empty


def add_columns(df: Any, out: list[list[Any]], parse: bool = True) -> Any:
    """The frame with span_kind, links (a list per span), resource (a dict), scope_name, scope_version."""
    import pandas as pd

    kinds, links, resources, names, versions = out
    df["span_kind"] = pd.array(kinds, dtype="string")
    df["links"] = pd.Series([_json(x, []) for x in links] if parse else links, dtype=object, index=df.index)
    df["resource"] = pd.Series([_json(x, {}) for x in resources] if parse else resources, dtype=object, index=df.index)
    df["scope_name"] = pd.array(names, dtype="string")
    df["scope_version"] = pd.array(versions, dtype="string")
    return df
