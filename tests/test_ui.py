"""`ragtrail ui` without a browser: the query layer (filters, sorts, keyset pages), the JSON twins of the
pages, escaping of hostile stored text, the safety rules (loopback Host, token, login, CSRF, CSP), the
CLI, the notebook launcher and `ragtrail serve`'s mount — on a real SQLite store and real PostgreSQL.
Browser tests are in test_ui_browser.py. Data: tests/_ui_fixtures.py (fake LLM answers, no model)."""

from __future__ import annotations

import json
import re
import sys
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

pytest.importorskip("jinja2")
from fastapi.testclient import TestClient  # noqa: E402

from ragtrail._exceptions import ConfigError  # noqa: E402
from ragtrail.store import _queries as q  # noqa: E402
from ragtrail.store import open_store  # noqa: E402
from ragtrail.ui import create_app, url_for  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import _ui_fixtures as fx  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):  # type: ignore[no-untyped-def]
    path = str(tmp_path_factory.mktemp("ui") / "ui.db")
    info = fx.build(path)
    return path, info


@pytest.fixture(scope="module")
def client(built):  # type: ignore[no-untyped-def]
    path, _ = built
    return TestClient(create_app(path), base_url="http://127.0.0.1")


def _traces(client, **params) -> list[dict]:  # type: ignore[no-untyped-def]
    r = client.get("/api/traces", params=params)
    assert r.status_code == 200, r.text
    return r.json()["traces"]


def _by_name(client, name: str) -> dict:  # type: ignore[no-untyped-def]
    return next(t for t in _traces(client) if t["name"] == name)


# ------------------------------------------------------------------------------------------- queries
def test_filters_select_the_right_traces(client) -> None:  # type: ignore[no-untyped-def]
    names = {t["name"] for t in _traces(client)}
    assert {"answer-0", "answer-5", "broken", "RunnableSequence", fx.HOSTILE[0], "eval rag-qa"} <= names
    assert {t["name"] for t in _traces(client, errors="1")} == {"broken", "eval rag-qa"}  # the tool error; q07 in v2
    assert len([t for t in _traces(client, errors="1") if t["name"] == "eval rag-qa"]) == 1
    tool = _traces(client, kind="TOOL")
    assert [t["name"] for t in tool] == ["broken"]
    assert {t["name"] for t in _traces(client, model="gpt-4o")} == {"answer-1", "answer-3", "answer-5"}
    assert {t["name"] for t in _traces(client, name="tool-call")} == {"broken"}
    assert {t["name"] for t in _traces(client, q="QUESTION 3")} == {"answer-3"}  # the root's input, any case
    assert {t["name"] for t in _traces(client, q_spans="TEXT 3.1")} == {"answer-3"}  # a child span's documents
    assert _traces(client, q="text 3.1") == []  # not in the root span
    assert _traces(client, q="100%_") == [] and _traces(client, q_spans="100%_") == []  # wildcards are literal
    costly = _traces(client, min_cost="0.000001", project=fx.PROJECT)
    assert costly and all(t["cost_usd"] >= 0.000001 for t in costly)
    assert "broken" not in {t["name"] for t in costly}
    slow = _traces(client, min_ms="0.0001")
    assert slow and all(t["duration_ms"] >= 0.0001 for t in slow)
    assert _traces(client, min_ms="100000") == []
    assert _traces(client, project="no-such-project") == []
    a5 = _by_name(client, "answer-5")
    assert (a5["n_spans"], a5["input_tokens"], a5["output_tokens"], a5["n_errors"]) == (3, 205, 20, 0)
    later = _traces(client, start=str(a5["start_time_ns"] + 1))
    assert "answer-5" not in {t["name"] for t in later} and "broken" in {t["name"] for t in later}


@pytest.mark.parametrize("sort", list(q.TRACE_SORTS))
@pytest.mark.parametrize("order", ["desc", "asc"])
def test_keyset_pages_cover_every_trace_once_in_order(built, sort: str, order: str) -> None:  # type: ignore[no-untyped-def]
    store = open_store(built[0])
    everything = q.list_traces(store, sort=sort, order=order, limit=1000).rows
    seen: list[dict] = []
    after = None
    while True:
        page = q.list_traces(store, sort=sort, order=order, after=after, limit=4)
        seen.extend(page.rows)
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert [r["trace_id"] for r in seen] == [r["trace_id"] for r in everything]
    assert len({r["trace_id"] for r in seen}) == len(seen) > 30
    key = {"start": "start_time_ns", "duration": "duration_ms", "spans": "n_spans", "errors": "n_errors",
           "tokens_in": "input_tokens", "tokens_out": "output_tokens", "cost": "cost_usd"}[sort]  # fmt: skip
    vals = [(-1 if r[key] is None else r[key]) for r in seen]
    assert vals == sorted(vals, reverse=order == "desc")


def test_list_sql_never_uses_offset() -> None:
    text = Path(q.__file__).read_text()
    assert not re.search(r"\bOFFSET\b", text.split('"""', 2)[2])


def test_bad_filter_values_are_clear_errors(built, client) -> None:  # type: ignore[no-untyped-def]
    store = open_store(built[0])
    with pytest.raises(ConfigError, match="unknown trace filter"):
        q.list_traces(store, {"colour": "red"})
    with pytest.raises(ConfigError, match="cannot read the time"):
        q.list_traces(store, {"start": "yesterday-ish"})
    with pytest.raises(ConfigError, match="bad page cursor"):
        q.list_traces(store, after="nonsense")
    r = client.get("/api/traces", params={"sort": "colour"})
    assert r.status_code == 400 and "unknown sort" in r.json()["error"]
    r = client.get("/traces", params={"min_cost": "lots"})
    assert r.status_code == 400 and "min_cost" in r.text


def test_migration_6_adds_the_root_span_indices(built) -> None:  # type: ignore[no-untyped-def]
    store = open_store(built[0])
    names = {r[0] for r in store.query("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"spans_roots_start", "spans_roots_project_start", "spans_errors"} <= names
    assert 6 in {r[0] for r in store.query("SELECT version FROM ragtrail_migrations")}
    plan = " ".join(
        str(r)
        for r in store.query(
            "EXPLAIN QUERY PLAN SELECT trace_id FROM spans r WHERE r.parent_span_id IS NULL "
            "ORDER BY r.start_time_ns DESC, r.trace_id DESC LIMIT 51"
        )
    )
    assert "spans_roots_start" in plan and "TEMP B-TREE" not in plan
    cost = q.TRACE_SORTS["cost"]
    plan = " ".join(str(r) for r in store.query(f"EXPLAIN QUERY PLAN SELECT {cost} FROM spans r LIMIT 1"))
    assert "spans_usage_trace" in plan  # per-trace sums read the small usage index, not every span


# ------------------------------------------------------------------------------------- page data
def test_trace_and_span_twins(client) -> None:  # type: ignore[no-untyped-def]
    tid = _by_name(client, "answer-5")["trace_id"]
    data = client.get(f"/api/traces/{tid}").json()
    assert [(s["name"], s["depth"], s["kind"]) for s in data["spans"]] == [
        ("answer-5", 0, "CHAIN"), ("search", 1, "RETRIEVER"), ("chat gpt-4o", 1, "LLM")]  # fmt: skip
    assert all(0 <= s["start_ms"] <= data["duration_ms"] for s in data["spans"])
    ids = {s["name"]: s["span_id"] for s in data["spans"]}
    search = client.get(f"/api/traces/{tid}/spans/{ids['search']}").json()
    assert [(d["rank"], d["id"]) for d in search["documents"]] == [(0, "doc-5-0"), (1, "doc-5-1"), (2, "doc-5-2")]
    llm = client.get(f"/api/traces/{tid[:12]}", params={"span": ids["chat gpt-4o"]}).json()["span"]
    u = llm["usage"]
    assert (u["input_tokens"], u["output_tokens"], u["cached_input_tokens"], u["source"]) == (205, 20, 64, "provider")
    assert u["cost_usd"] > 0 and u["cost_source"] == "price_table" and u["ttft_s"] == pytest.approx(0.12)
    html = client.get(f"/traces/{tid}", params={"span": ids["chat gpt-4o"]}).text
    assert "cached tokens in" in html and ">64<" in html and "price_table" in html
    assert client.get(f"/traces/{tid}/spans/nope").status_code == 404
    r = client.get("/traces/00000000000000000000000000000000")
    assert r.status_code == 404 and "no trace" in r.text


def test_long_trace_renders_its_first_rows_then_the_rest_as_data(client) -> None:  # type: ignore[no-untyped-def]
    from ragtrail.ui._app import FIRST_ROWS

    html = client.get(f"/traces/{fx.BIG_TRACE}").text
    assert html.count('class="wf-row') == FIRST_ROWS and 'id="more-rows"' in html
    data = json.loads(re.search(r'<script type="application/json" id="trace-data">(.*?)</script>', html, re.S).group(1))  # type: ignore[union-attr]
    assert len(data["bars"]) == fx.BIG_SPANS and len(data["rest"]) == fx.BIG_SPANS - FIRST_ROWS
    assert "<script>" not in html.split('id="trace-data">', 1)[1].split("</script>", 1)[0]  # JSON escapes <
    assert fx.HOSTILE[0] in [r[1] for r in data["rest"]]
    full = client.get(f"/traces/{fx.BIG_TRACE}", params={"all": "1"}).text  # reading without JavaScript
    assert full.count('class="wf-row') == fx.BIG_SPANS and 'id="more-rows"' not in full
    assert "&lt;script&gt;document.title" in full


def test_error_span_shows_the_exception(client) -> None:  # type: ignore[no-untyped-def]
    tid = _by_name(client, "broken")["trace_id"]
    spans = client.get(f"/api/traces/{tid}").json()["spans"]
    tool = next(s for s in spans if s["name"] == "tool-call")
    assert tool["status"] == "ERROR"
    panel = client.get(f"/api/traces/{tid}/spans/{tool['span_id']}").json()
    exc = [e for e in panel["events"] if e["exception"]]
    assert (
        exc and exc[0]["type"] == "ValueError" and "boom" in exc[0]["message"] and "Traceback" in exc[0]["stacktrace"]
    )
    assert "boom: the tool failed" in client.get(f"/traces/{tid}", params={"span": tool["span_id"]}).text


def test_langchain_chat_messages_render_as_a_conversation(client) -> None:  # type: ignore[no-untyped-def]
    tid = _by_name(client, "RunnableSequence")["trace_id"]
    spans = client.get(f"/api/traces/{tid}").json()["spans"]
    llm = next(s for s in spans if s["kind"] == "LLM")
    panel = client.get(f"/api/traces/{tid}/spans/{llm['span_id']}").json()
    roles = [m["role"] for m in panel["input_messages"]] + [m["role"] for m in panel["output_messages"]]
    assert roles[:2] == ["system", "user"] and roles[-1] == "assistant"
    assert panel["output_messages"][-1]["parts"][0]["text"] == "Deleted notes stay in the Trash for 30 days."
    html = client.get(f"/traces/{tid}", params={"span": llm["span_id"]}).text
    assert 'class="msg role-system"' in html and "You answer briefly." in html


def test_eval_trace_links_to_its_run_and_labels_documents(client, built) -> None:  # type: ignore[no-untyped-def]
    _, info = built
    run = client.get(f"/api/runs/{info['v2']}").json()
    q00 = next(e for e in run["examples"] if e["example_id"] == "q00")
    data = client.get(f"/api/traces/{q00['trace_id']}").json()
    assert data["eval_run_id"] == run["run_id"] and data["eval_example_id"] == "q00"
    retr = next(s for s in data["spans"] if s["kind"] == "RETRIEVER")
    panel = client.get(f"/api/traces/{q00['trace_id']}/spans/{retr['span_id']}").json()
    assert panel["has_labels"]
    assert [(d["id"], d["relevance"]) for d in panel["documents"]][0] == ("d0", 1.0)  # rank 0 in v2 (rank=0)
    assert all(d["relevance"] == 0.0 for d in panel["documents"][1:])
    html = client.get(f"/traces/{q00['trace_id']}", params={"span": retr["span_id"]}).text
    assert "relevant (1)" in html and f"/runs/{run['run_id']}?example=q00" in html


def test_runs_run_compare_and_diff_twins(client, built) -> None:  # type: ignore[no-untyped-def]
    _, info = built
    runs = client.get("/api/runs").json()["evaluations"]
    assert [r["ref"] for r in runs[0]["runs"]] == [info["v2"], info["v1"]]
    assert runs[0]["metrics"] == ["mrr", "recall@1", "token_f1"]
    m = runs[0]["runs"][0]["metrics"]["recall@1"]
    assert m["ci_low"] < m["mean"] < m["ci_high"] and m["n_ok"] == 11 and m["n_error"] == 1
    failures = client.get(f"/api/runs/{info['v2']}", params={"show": "failures"}).json()
    assert [e["example_id"] for e in failures["examples"]] == ["q07"]
    below = client.get(f"/api/runs/{info['v1']}", params={"scorer": "recall@1", "below": "0.5"}).json()
    assert len(below["examples"]) == 12
    srt = client.get(f"/api/runs/{info['v2']}", params={"sort": "mrr", "order": "desc"}).json()["examples"]
    scores = [e["scores"]["mrr"]["score"] for e in srt if e["scores"]["mrr"]["score"] is not None]
    assert scores == sorted(scores, reverse=True)
    comp = client.get("/api/compare", params={"a": info["v1"], "b": info["v2"]}).json()
    rec = next(x for x in comp["metrics"] if x["metric"] == "recall@1")
    assert rec["delta"] > 0 and rec["ci_low"] > 0 and rec["p_adjusted"] is not None and rec["verdict"] == "better"
    assert {"key": "rank", "a": 2, "b": 0, "changed": True} in comp["config_diff"]
    assert any(r["example_id"] == "q07" for r in comp["regressions"])
    html = client.get("/compare", params={"a": info["v1"], "b": info["v2"]}).text
    assert 'class="chart forest"' in html and "trace diff" in html
    diff = client.get("/api/compare/diff", params={"a": info["v1"], "b": info["v2"], "example": "q02"}).json()
    docs = {d["id"]: d for d in diff["documents"]}
    assert docs["d2"]["change"] == "moved" and (docs["d2"]["rank_a"], docs["d2"]["rank_b"]) == (2, 0)
    assert docs["d2"]["relevance"] == 1.0 and diff["has_labels"]
    assert {s["name"] for s in diff["spans"]} >= {"eval rag-qa", "retrieve", "generate"}
    assert all(s["in"] == "both" for s in diff["spans"])
    gen = next(s for s in diff["spans"] if s["name"] == "generate")
    assert gen["tokens_delta"] == 0 and gen["ms_delta"] is not None
    r = client.get("/compare/diff", params={"a": info["v1"], "b": info["v2"], "example": "nope"})
    assert r.status_code == 404


def test_datasets_and_overview_twins(client) -> None:  # type: ignore[no-untyped-def]
    ds = client.get("/api/datasets").json()["datasets"]
    assert ds[0]["name"] == "qa" and ds[0]["versions"][0]["n_examples"] == 12
    one = client.get("/api/datasets/qa").json()
    assert one["n_examples"] == 12 and one["examples"][0]["id"] == "q00" and one["next"] is None
    assert client.get("/api/datasets/nope").status_code == 404
    ov = client.get("/api/overview", params={"project": fx.PROJECT}).json()
    assert ov["days"] and ov["days"][-1]["requests"] >= 9 and ov["days"][-1]["errors"] >= 1
    models = {r["model"] for r in ov["by_model"]}
    assert {"gpt-4o", "gpt-4o-mini"} <= models
    kinds = {k["kind"]: k for k in ov["by_kind"]}
    assert kinds["LLM"]["cost_usd"] > 0
    assert "cost by span kind" in client.get("/overview").text


# ------------------------------------------------------------------------------------------ safety
def _pages(client, info) -> list[str]:  # type: ignore[no-untyped-def]
    hostile = _by_name(client, fx.HOSTILE[0])["trace_id"]
    spans = client.get(f"/api/traces/{hostile}").json()["spans"]
    return (
        ["/traces", f"/traces?q={fx.HOSTILE[0]}", "/overview", "/runs", "/datasets", "/datasets/qa",
         f"/runs/{info['v2']}", f"/compare?a={info['v1']}&b={info['v2']}",
         f"/compare/diff?a={info['v1']}&b={info['v2']}&example=q02"]
        + [f"/traces/{hostile}?span={s['span_id']}" for s in spans]
        + [f"/traces/{hostile}/spans/{s['span_id']}" for s in spans]
    )  # fmt: skip


def test_hostile_text_is_escaped_on_every_page(client, built) -> None:  # type: ignore[no-untyped-def]
    for path in _pages(client, built[1]):
        r = client.get(path)
        assert r.status_code == 200, path
        html = r.text
        assert "<script>document.title" not in html, path
        assert "<img src=x" not in html and 'onerror="document' not in html, path
        assert "<b>bold</b>" not in html, path
        assert 'href="javascript:' not in html.lower(), path
        assert "\x1b" not in html and "\x00" not in html and "\u202e" not in html, path
        if "/traces/" in path and "/spans/" not in path:
            assert "&lt;script&gt;document.title" in html, path
    every = "".join(client.get(p).text for p in _pages(client, built[1]))
    assert "ctl\\x1b[31mred" in every and "\\u202eevil" in every  # control characters as visible escapes
    raw = client.get("/api/traces", params={"q": "ctl"}).json()
    assert raw["traces"], "the JSON twin keeps the stored text as it is"


def test_headers_host_check_token_login_and_csrf(built) -> None:  # type: ignore[no-untyped-def]
    path, _ = built
    loop = TestClient(create_app(path), base_url="http://127.0.0.1")
    r = loop.get("/traces")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert TestClient(create_app(path), base_url="http://evil.example").get("/traces").status_code == 421
    assert TestClient(create_app(path), base_url="http://localhost:6007").get("/api/traces").status_code == 200

    app = create_app(path, token="s3cret", allowed_hosts=None)
    c = TestClient(app, base_url="http://10.0.0.5", follow_redirects=False)
    assert c.get("/api/traces").status_code == 401
    r = c.get("/traces/abc")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/traces/abc")
    assert c.get("/api/traces", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert c.get("/api/traces", headers={"Authorization": "Bearer wrong"}).status_code == 401
    form = c.get("/login")
    assert form.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
    c.cookies.set("ragtrail_csrf", csrf)
    assert c.post("/login", data={"token": "s3cret", "next": "/runs"}).status_code == 403  # no CSRF field
    bad = c.post("/login", data={"token": "nope", "next": "/runs", "csrf": csrf})
    assert bad.status_code == 401 and "wrong token" in bad.text
    ok = c.post("/login", data={"token": "s3cret", "next": "//evil.example/x", "csrf": csrf})
    assert ok.status_code == 303 and ok.headers["location"] == "/traces"  # never an off-site redirect
    assert "ragtrail_ui_token" in ok.headers["set-cookie"] and "httponly" in ok.headers["set-cookie"].lower()
    assert c.get("/api/traces").status_code == 200  # the cookie now authorises
    assert c.post("/logout", data={}).status_code == 403  # state change without CSRF
    assert c.post("/logout", data={"csrf": csrf}).status_code == 303


def test_non_loopback_without_token_is_refused(built) -> None:  # type: ignore[no-untyped-def]
    from ragtrail.cli import app as cli_app
    from ragtrail.ui._launch import build_app, is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    with pytest.raises(ConfigError, match="without a token"):
        build_app(built[0], host="0.0.0.0")
    res = CliRunner().invoke(cli_app, ["ui", "--store", built[0], "--host", "0.0.0.0", "--port", "0"])
    assert res.exit_code != 0 and "without a token" in str(res.exception)


def test_launch_show_url_for_and_serve_mount(built) -> None:  # type: ignore[no-untyped-def]
    import ragtrail.ui
    from ragtrail.server import Receiver

    path, info = built
    ui = ragtrail.ui.launch(path)
    try:
        assert ragtrail.ui.launch(path) is ui
        assert ui.url.startswith("http://127.0.0.1:")
        body = urllib.request.urlopen(ui.url + "/api/runs").read()
        assert info["v1"] in body.decode()
        assert ragtrail.ui.show("0123456789abcdef").src == ui.url + "/traces/0123456789abcdef"
    finally:
        ui.stop()
    assert url_for(info["v1"]) == "/runs/rag-qa%3Av1"
    with pytest.raises(ConfigError):
        url_for(3.5)
    rec = Receiver(path, http_port=0, grpc_port=None).start()
    try:
        base = f"http://127.0.0.1:{rec.http_port}"
        page = urllib.request.urlopen(base + "/ui/traces").read().decode()
        assert 'href="/ui/static/ui.css"' in page and 'href="/ui/traces/' in page
        data = json.loads(urllib.request.urlopen(base + "/ui/api/traces?kind=TOOL").read())
        assert [t["name"] for t in data["traces"]] == ["broken"]
        assert json.loads(urllib.request.urlopen(base + "/health").read())["status"] == "ok"
    finally:
        rec.stop()


# -------------------------------------------------------------------------------------- PostgreSQL
def test_postgres_store_gives_the_same_pages(pg_url, built, client) -> None:  # type: ignore[no-untyped-def]
    info = fx.build(pg_url)
    pg = TestClient(create_app(pg_url), base_url="http://127.0.0.1")

    def shape(c, **params):  # type: ignore[no-untyped-def]
        return sorted((t["name"], t["n_spans"], t["n_errors"], t["input_tokens"]) for t in _traces(c, **params))

    for params in ({}, {"errors": "1"}, {"kind": "TOOL"}, {"model": "gpt-4o"}, {"q_spans": "text 3.1"}, {"q": "QUESTION 2"},
                   {"min_cost": "0.000001"}, {"sort": "cost", "order": "asc"}):  # fmt: skip
        assert shape(pg, **params) == shape(client, **params), params
    store = open_store(pg_url)
    for sort in q.TRACE_SORTS:
        seen, after = [], None
        while True:
            page = q.list_traces(store, sort=sort, after=after, limit=5)
            seen += [r["trace_id"] for r in page.rows]
            if not page.next_cursor:
                break
            after = page.next_cursor
        assert len(seen) == len(set(seen)) == len(q.list_traces(store, limit=1000).rows), sort
    tid = _by_name(pg, "answer-5")["trace_id"]
    assert (
        "doc-5-1"
        in pg.get(f"/traces/{tid}", params={"span": pg.get(f"/api/traces/{tid}").json()["spans"][1]["span_id"]}).text
    )
    assert pg.get(f"/api/runs/{info['v2']}", params={"show": "failures"}).json()["examples"][0]["example_id"] == "q07"
    assert pg.get("/api/overview").json()["days"]


def test_serve_mounts_the_ui_only_safely(built) -> None:  # type: ignore[no-untyped-def]
    from ragtrail.server import Receiver
    from ragtrail.server._http import create_app as otlp_app

    def mounted(app) -> bool:  # type: ignore[no-untyped-def]
        return any(getattr(r, "path", "") == "/ui" for r in app.routes)

    assert mounted(otlp_app(Receiver(built[0], host="127.0.0.1", http_port=0, grpc_port=None)))
    assert not mounted(otlp_app(Receiver(built[0], host="0.0.0.0", http_port=0, grpc_port=None)))  # no token
    app = otlp_app(Receiver(built[0], host="0.0.0.0", http_port=0, grpc_port=None, token="tok"))
    assert mounted(app)
    c = TestClient(app, base_url="http://10.1.2.3")
    assert c.get("/ui/api/traces").status_code == 401
    assert c.get("/ui/api/traces", headers={"Authorization": "Bearer tok"}).status_code == 200


def test_cli_serves_the_ui(built) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import time

    proc = subprocess.Popen(
        [sys.executable, "-c", "from ragtrail.cli import main; main()", "ui", "--store", built[0], "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        m = re.search(r"(http://127\.0\.0\.1:\d+)/traces", line)
        assert m, line
        deadline = time.monotonic() + 30
        while True:
            try:
                data = json.loads(urllib.request.urlopen(m.group(1) + "/api/traces?kind=TOOL").read())
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert [t["name"] for t in data["traces"]] == ["broken"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_session_user_and_feedback_filters(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Traces recorded under ragtrail.context() and given feedback are found by the list's session, user
    and feedback filters (the production loop's columns and table)."""
    import ragtrail

    path = str(tmp_path / "prod.db")
    ragtrail.init(project="chat-app", store=path)
    try:
        ids = {}
        for name, session, user in (("t-a", "s-1", "u-1"), ("t-b", "s-1", "u-2"), ("t-c", "s-2", "u-2")):
            with ragtrail.context(session_id=session, user_id=user), ragtrail.span(name, kind="CHAIN"):
                ids[name] = ragtrail.current_trace_id()
        assert ragtrail.flush()
        ragtrail.log_feedback(ids["t-b"], "thumbs", False, comment="wrong answer")
        assert ragtrail.flush()
    finally:
        ragtrail.shutdown()
    c = TestClient(create_app(path), base_url="http://127.0.0.1")
    assert {t["name"] for t in _traces(c, session="s-1")} == {"t-a", "t-b"}
    assert {t["name"] for t in _traces(c, user="u-2")} == {"t-b", "t-c"}
    assert {t["name"] for t in _traces(c, session="s-1", user="u-2")} == {"t-b"}
    assert {t["name"] for t in _traces(c, feedback="thumbs")} == {"t-b"}
    assert _traces(c, feedback="no-such-feedback") == [] and _traces(c, session="nobody") == []
    page = c.get("/traces", params={"session": "s-1"}).text
    assert 'name="session" value="s-1"' in page and "t-a" in page and "t-c" not in page
