"""Datasets curated from production traces: 1,000 traces with feedback → the right examples, a stable
content hash, lineage to the trace ids, the next version with ``add_traces``, the CLI, and eval results
that link back to the production trace each example came from."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import ragtrail
from ragtrail import semconv
from ragtrail.cli import app
from ragtrail.evals import Dataset, Evaluation, load_dataset, scorers
from ragtrail.tracing import set_content

N = 1000


@pytest.fixture
def production(traced):  # type: ignore[no-untyped-def]
    """1,000 recorded conversations; every 7th got a thumbs-down with a reviewer's corrected answer,
    every 5th a thumbs-up."""
    ids: list[str] = []
    for i in range(N):
        with ragtrail.context(session_id=f"s{i % 50}", user_id=f"u{i % 13}"), ragtrail.span("answer") as root:
            set_content(root, semconv.INPUT_VALUE, {"question": f"what is {i}?", "lang": "en"})
            with ragtrail.span("retrieve", kind="RETRIEVER"):
                pass
            set_content(root, semconv.OUTPUT_VALUE, f"it is {i + 1}")
            ids.append(ragtrail.current_trace_id())
    ragtrail.flush()
    down = []
    for i, tid in enumerate(ids):
        if i % 7 == 0:
            ragtrail.log_feedback(tid, "thumbs", True)  # first opinion, replaced by the reviewer's below
            ragtrail.log_feedback(tid, "thumbs", False, by="reviewer")
            ragtrail.log_feedback(tid, "corrected_answer", f"it is {i}", by="reviewer")
            down.append(tid)
        elif i % 5 == 0:
            ragtrail.log_feedback(tid, "thumbs", True)
    return traced, ids, down


def test_dataset_from_1000_traces_with_feedback(production):
    traced, ids, down = production
    client = traced.client()
    traces = client.traces(limit=None)
    assert len(traces) == N
    bad = [t for t in reversed(traces) if t.feedback.get("thumbs") is False]  # oldest first
    ds = Dataset.from_traces(bad, input="input.question", reference="feedback.corrected_answer", name="hard-cases")

    # the right examples: exactly the thumbs-down traces, in order, with the reviewer's answer as reference
    assert ds.ids == down and len(ds) == len(down) == 143
    i0 = ids.index(down[3])
    ex = ds[down[3]]
    assert (ex.input, ex.reference) == (f"what is {i0}?", f"it is {i0}")
    assert ex.metadata == {"source_trace_id": down[3], "output": f"it is {i0 + 1}", "session_id": f"s{i0 % 50}",
                           "user_id": f"u{i0 % 13}"}  # fmt: skip
    # lineage
    assert ds.meta["trace_ids"] == down and ds.meta["source"] == "traces"
    assert ds.meta["mapping"] == {
        "input": "input.question",
        "output": "output",
        "reference": "feedback.corrected_answer",
    }

    # a stable content hash: the same traces give the same version, however they are obtained
    again = Dataset.from_traces(down, input="input.question", reference="feedback.corrected_answer",
                                name="hard-cases", store=traced.store_path)  # fmt: skip
    assert again.version == ds.version
    version = ds.push(client.store)
    stored = load_dataset(client.store, f"hard-cases:{version}")
    assert stored.version == version and stored.meta["trace_ids"] == down
    # callables work like paths
    by_fn = Dataset.from_traces(bad, input=lambda t: t.root.input["question"],
                                reference=lambda t: t.feedback["corrected_answer"], name="hard-cases")  # fmt: skip
    assert by_fn.version == version

    # the next version: new thumbs-down traces are added, existing ones are not repeated
    newer = [t for t in reversed(traces) if t.feedback.get("thumbs") is True][:10]
    v2 = stored.add_traces(newer + bad[:5], store=client.store)
    assert len(v2) == len(ds) + 10 and v2.ids[: len(ds)] == ds.ids
    assert v2.meta["parent"] == f"hard-cases:{version}" and v2.meta["trace_ids"] == down + [t.trace_id for t in newer]
    assert v2[newer[0].trace_id].reference is None  # no corrected answer on a thumbs-up
    assert v2.version != version and v2.push(client.store) == v2.version

    # the CLI gives the same version from a filter
    r = CliRunner().invoke(app, ["datasets", "from-traces", "hard-cases", "--filter", "feedback.thumbs=false",
                                 "--input", "input.question", "--reference", "feedback.corrected_answer",
                                 "-s", traced.store_path])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"hard-cases:{version}  143 examples")
    r = CliRunner().invoke(
        app, ["datasets", "from-traces", "s3-only", "--filter", "session_id=s3", "-s", traced.store_path]
    )
    assert r.exit_code == 0 and "20 examples" in r.output


def test_evaluating_it_links_every_result_to_its_source_trace(production):
    traced, ids, down = production
    client = traced.client()
    bad = [t for t in reversed(client.traces(limit=None)) if t.feedback.get("thumbs") is False][:30]
    ds = Dataset.from_traces(bad, input="input.question", reference="feedback.corrected_answer", name="regress")

    def pipeline(question: str) -> str:  # the fixed app: answers with the number itself
        return "it is " + question.split()[-1].rstrip("?")

    run = Evaluation("regress", ds, pipeline, [scorers.exact_match()], progress=False).run()
    res = run.results_df()
    assert len(res) == 30 and (res["score"] == 1.0).all()
    # each result names its example, whose id and metadata are the production trace
    assert set(res["example_id"]) == {t.trace_id for t in bad}
    for r in res.itertuples():
        assert ds[r.example_id].metadata["source_trace_id"] == r.example_id
        eval_root = client.trace(r.trace_id).root
        assert eval_root is not None and eval_root.attributes[semconv.EVAL_SOURCE_TRACE_ID] == r.example_id
        assert client.trace(r.example_id).root.name == "answer"  # the production conversation itself


def test_bad_mappings_are_dataset_errors(production):
    traced, ids, down = production
    t = traced.client().traces(limit=1)
    with pytest.raises(ragtrail.DatasetError, match="input"):
        Dataset.from_traces(t, input="input.nope")
    with pytest.raises(ragtrail.DatasetError, match="start with"):
        Dataset.from_traces(t, input="root.input")
    with pytest.raises(ragtrail.DatasetError, match="not in the store"):
        Dataset.from_traces(["0" * 32], store=traced.store_path)
    assert json.loads(json.dumps(Dataset.from_traces(t).to_records()))[0]["id"] == t[0].trace_id
