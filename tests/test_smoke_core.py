"""Smoke test of the quick start (the core issue's user story)."""

import ragtrail


def test_quick_start_roundtrip(traced):
    @ragtrail.trace(kind="CHAIN")
    def answer(q):
        with ragtrail.span("lookup", kind="RETRIEVER"):
            pass
        return q.upper()

    assert answer("hi") == "HI"
    df = traced.client().spans_df(project="test")
    assert sorted(df["name"]) == ["answer", "lookup"]
    root = df[df.name == "answer"].iloc[0]
    child = df[df.name == "lookup"].iloc[0]
    assert child.parent_span_id == root.span_id
    assert root.attributes["ragtrail.output.value"] == "HI"
