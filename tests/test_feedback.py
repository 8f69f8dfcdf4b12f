"""Feedback on traces and spans: typed values, history never overwritten, DataFrames, sessions, the CLI,
two processes at once (through the CLI and through OTLP into ``ragtrail serve``), SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

import ragtrail
from ragtrail import semconv
from ragtrail.cli import app

CLI = [sys.executable, "-c", "from ragtrail.cli import main; main()"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(ragtrail.__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _make_traces(n: int, session: str = "conv") -> list[str]:
    ids = []
    for i in range(n):
        with ragtrail.context(session_id=f"{session}-{i % 2}", user_id="u1"), ragtrail.span("answer") as sp:
            with ragtrail.span("llm", kind="LLM"):
                pass
            ids.append(ragtrail.current_trace_id())
            assert ids[-1] == format(sp.get_span_context().trace_id, "032x")
    assert ragtrail.current_trace_id() is None
    return ids


def test_values_history_and_dataframes(traced):
    t1, t2, t3 = _make_traces(3)
    ragtrail.flush()
    f1 = ragtrail.log_feedback(t1, "thumbs", False, comment="wrong <b>date</b>", by="alice")
    ragtrail.log_feedback(t1, "thumbs", True, by="bob")  # a later opinion: history keeps both
    ragtrail.log_feedback(t1, "rating", 4)
    ragtrail.log_feedback(t2, "label", "off-topic", source="app")
    client = traced.client()
    llm = next(s for s in client.trace(t3).spans if s.name == "llm")
    ragtrail.log_feedback(llm, "rating", 2.5)  # on one span (a stored SpanRecord)

    fb = client.feedback_df()
    assert len(fb) == 5 and f1 in set(fb["feedback_id"])
    thumbs = fb[fb["name"] == "thumbs"]
    assert list(thumbs["value"]) == [False, True] and list(thumbs["by"]) == ["alice", "bob"]
    assert list(thumbs["value_type"]) == ["boolean", "boolean"]
    assert thumbs.iloc[0]["comment"] == "wrong <b>date</b>"
    assert fb[fb["name"] == "label"].iloc[0][["value", "value_type", "source"]].tolist() == [
        "off-topic",
        "categorical",
        "app",
    ]
    assert len(client.feedback_df(t1, name="thumbs")) == 2 and len(client.feedback_df(source="app")) == 1

    tdf = client.traces_df().set_index("trace_id")
    assert tdf.loc[t1, "feedback.thumbs"] is True and tdf.loc[t1, "feedback.rating"] == 4.0  # the latest value
    assert tdf.loc[t2, "feedback.label"] == "off-topic" and tdf.loc[t3, "feedback.rating"] == 2.5
    sdf = client.spans_df()
    root1 = sdf[(sdf.trace_id == t1) & (sdf.name == "answer")].iloc[0]
    assert root1["feedback.thumbs"] is True
    llm3 = sdf[(sdf.trace_id == t3) & (sdf.name == "llm")].iloc[0]
    assert llm3["feedback.rating"] == 2.5  # span feedback sits on its span
    assert client.trace(t1).feedback == {"thumbs": True, "rating": 4.0}
    ragtrail.log_feedback(t2, "note", "<script>alert(1)</script>")
    page = client.trace(t2)._repr_html_()  # the notebook view shows session, user and feedback, escaped
    assert "session conv-1, user u1" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
    assert [t.feedback for t in client.traces(session_id="conv-0")] == [
        {"rating": 2.5},
        {"thumbs": True, "rating": 4.0},
    ]

    sess = client.sessions_df().set_index("session_id")
    assert sess.loc["conv-0", "n_traces"] == 2 and sess.loc["conv-1", "n_traces"] == 1
    assert sess.loc["conv-0", "user_id"] == "u1" and sess.loc["conv-0", "n_feedback"] == 4
    assert sess.loc["conv-0", "feedback.rating"] == pytest.approx((4.0 + 2.5) / 2)

    for bad, match in (((t1, "", 1), "name"), ((t1, "x", [1]), "value"), ((t1, "x", float("nan")), "finite"),
                       (("nope", "x", 1), "trace id")):  # fmt: skip
        with pytest.raises(ragtrail.ConfigError, match=match):
            ragtrail.log_feedback(*bad)
    with pytest.raises(ragtrail.ConfigError, match="source"):
        ragtrail.log_feedback(t1, "x", 1, source="robot")


def test_feedback_on_a_live_span_travels_as_an_evaluation_event(traced):
    with ragtrail.span("answer") as sp:
        ragtrail.log_feedback(sp, "thumbs", True)
    (root,) = traced.by_name("answer")
    (ev,) = [e for e in root.events if e.name == semconv.GEN_AI_EVALUATION_RESULT]
    assert ev.attributes[semconv.GEN_AI_EVALUATION_NAME] == "thumbs"
    assert ev.attributes[semconv.GEN_AI_EVALUATION_SCORE_LABEL] == "true"
    assert len(traced.client().feedback_df()) == 1  # stored once although it also left as an event


def test_cli_add_list_and_sessions(traced):
    (tid,) = _make_traces(1, session="cli")
    ragtrail.flush()
    store = traced.store_path
    r = CliRunner().invoke(
        app, ["feedback", "add", tid[:10], "thumbs", "false", "-c", "bad", "--by", "carol", "-s", store]
    )
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["feedback", "add", tid, "score", "0.25", "-s", store])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["feedback", "list", "--json", "-s", store])
    recs = [json.loads(line) for line in r.output.splitlines()]
    assert [(x["name"], x["value"], x["by"]) for x in recs][0] == ("thumbs", False, "carol")
    assert recs[1]["value"] == 0.25 and recs[1]["value_type"] == "numeric"
    r = CliRunner().invoke(app, ["sessions", "list", "-s", store])
    assert r.exit_code == 0 and "cli-0" in r.output
    r = CliRunner().invoke(app, ["sessions", "show", "cli-0", "-s", store])
    assert r.exit_code == 0 and tid in r.output and "feedback thumbs = False" in r.output
    r = CliRunner().invoke(app, ["feedback", "add", "f" * 32, "thumbs", "true", "-s", store])
    assert r.exit_code != 0


def test_two_processes_give_feedback_through_the_cli_at_once(traced):
    tids = _make_traces(2)
    ragtrail.flush()
    script = "; ".join(
        f"subprocess.run(CLI + ['feedback', 'add', '{{tid}}', 'n', '{i}', '--by', '{{who}}', '-s', '{traced.store_path}'], check=True)"
        for i in range(4)
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import subprocess, sys; CLI = " + repr(CLI) + "; " + script.format(tid=tid, who=who),
            ],
            env=_env(),
        )
        for tid, who in ((tids[0], "p1"), (tids[1], "p2"))
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    fb = traced.client().feedback_df()
    assert len(fb) == 8
    for tid, who in ((tids[0], "p1"), (tids[1], "p2")):
        mine = fb[fb.trace_id == tid]
        assert list(mine["value"]) == [0.0, 1.0, 2.0, 3.0] and set(mine["by"]) == {who}  # history, in order
    assert traced.client().traces_df().set_index("trace_id").loc[tids[0], "feedback.n"] == 3.0


_OTLP_APP = textwrap.dedent(
    """
    import sys, ragtrail
    port, who = sys.argv[1], sys.argv[2]
    ragtrail.init(project="remote", store_exporter=False, otlp_endpoint=f"http://127.0.0.1:{port}",
                  schedule_delay_ms=50)
    ids = []
    for i in range(5):
        with ragtrail.context(session_id=who), ragtrail.span("answer"):
            ids.append(ragtrail.current_trace_id())
    for i, tid in enumerate(ids):
        ragtrail.log_feedback(tid, "thumbs", i % 2 == 0, comment=who, by=who)
        ragtrail.log_feedback(tid, "thumbs", True, by=who)   # changed their mind: both kept
    assert ragtrail.flush(20)
    print(" ".join(ids))
    """
)


def test_two_processes_send_feedback_over_otlp_to_serve(tmp_path):
    from ragtrail.server import Receiver

    store = str(tmp_path / "served.db")
    app_py = tmp_path / "app.py"
    app_py.write_text(_OTLP_APP)
    with Receiver(store, http_port=0, grpc_port=None) as rec:
        procs = [
            subprocess.Popen([sys.executable, str(app_py), str(rec.http_port), who], env=_env(),
                             stdout=subprocess.PIPE, text=True)
            for who in ("app-a", "app-b")
        ]  # fmt: skip
        outs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0]
        assert rec.queue.drain(20)
    client = ragtrail.Client(store)
    fb = client.feedback_df()
    assert len(fb) == 20
    for who, out in zip(("app-a", "app-b"), outs, strict=True):
        ids = out.split()
        assert len(ids) == 5
        for i, tid in enumerate(ids):
            mine = fb[fb.trace_id == tid]
            assert list(mine["value"]) == [i % 2 == 0, True] and set(mine["by"]) == {who}
        assert set(client.traces_df(session_id=who)["trace_id"]) == set(ids)
    # the carrier spans are in the traces too; their events are the OTel GenAI evaluation event
    carrier = client.spans(name=semconv.FEEDBACK_SPAN_NAME)
    assert len(carrier) == 20 and all(s.parent_span_id for s in carrier)
    assert all(e["name"] == semconv.GEN_AI_EVALUATION_RESULT for s in carrier for e in s.events)


def test_the_same_record_arriving_twice_is_stored_once(tmp_path):
    from ragtrail.server import Receiver

    store = str(tmp_path / "both.db")
    with Receiver(store, http_port=0, grpc_port=None) as rec:
        ragtrail.init(
            project="both", store=store, otlp_endpoint=f"http://127.0.0.1:{rec.http_port}", schedule_delay_ms=50
        )
        try:
            with ragtrail.span("answer"):
                tid = ragtrail.current_trace_id()
            ragtrail.log_feedback(tid, "thumbs", True)  # written directly AND received over OTLP
            assert ragtrail.flush(20)
        finally:
            ragtrail.shutdown()
        assert rec.queue.drain(20)
    assert len(ragtrail.Client(store).feedback_df()) == 1


def test_feedback_and_sessions_on_postgresql(pg_url):
    ragtrail.init(project="pg", store=pg_url, schedule_delay_ms=50)
    try:
        t1, t2 = _make_traces(2, session="pgs")
        ragtrail.flush()
        ragtrail.log_feedback(t1, "thumbs", False)
        ragtrail.log_feedback(t1, "thumbs", True)
        ragtrail.log_feedback(t2, "label", "great")
        client = ragtrail.Client(pg_url)
        assert list(client.feedback_df(t1)["value"]) == [False, True]
        tdf = client.traces_df(session_id="pgs-0").set_index("trace_id")
        assert list(tdf.index) == [t1] and tdf.loc[t1, "feedback.thumbs"] is True
        assert len(client.traces_df(tags=["nope"])) == 0
        with ragtrail.context(tags=["red", "blue"]), ragtrail.span("tagged"):
            pass
        ragtrail.flush()
        assert list(client.traces_df(tags=["blue", "red"])["root_name"]) == ["tagged"]
        sess = client.sessions_df().set_index("session_id")
        assert sess.loc["pgs-0", "n_feedback"] == 2 and sess.loc["pgs-0", "feedback.thumbs"] == 1.0
        assert "feedback.label" not in sess.columns  # labels are not averaged
    finally:
        ragtrail.shutdown()
