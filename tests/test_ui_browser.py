"""`ragtrail ui` in a real browser: Playwright driving Debian's Chromium against the real server (uvicorn
on 127.0.0.1) over real SQLite and PostgreSQL stores, clicking as a user would. Every test checks the
request log: nothing leaves 127.0.0.1. Data: tests/_ui_fixtures.py (fake LLM answers, no model)."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

pytest.importorskip("jinja2")
sync_api = pytest.importorskip("playwright.sync_api")

sys.path.insert(0, str(Path(__file__).parent))
import _ui_fixtures as fx  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if os.environ.get("RAGTRAIL_REQUIRE_CHROMIUM") == "1" and CHROMIUM is None:  # pragma: no cover
    raise RuntimeError("RAGTRAIL_REQUIRE_CHROMIUM=1 but no chromium on PATH")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[tuple[str, dict]]:  # type: ignore[no-untyped-def]
    from ragtrail.ui import start

    path = str(tmp_path_factory.mktemp("uib") / "ui.db")
    info = fx.build(path)
    ui = start(path)
    try:
        yield ui.url, dict(info, store=path)
    finally:
        ui.stop()


class Page:
    """A page with its request log and a tripwire for script execution from stored text."""

    def __init__(self, browser: Any) -> None:
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def close(self) -> None:
        hosts = {urlparse(u).hostname for u in self.requests if not u.startswith(("data:", "about:"))}
        self.page.close()
        assert hosts <= {"127.0.0.1"}, f"requests left 127.0.0.1: {sorted(hosts)}"
        assert not self.dialogs and not self.errors, (self.dialogs, self.errors)


@pytest.fixture
def page(browser) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    p = Page(browser)
    yield p
    p.close()


def _trace_flow(pg: Any, url: str) -> None:
    """Trace list → filter by kind → open a trace → click spans: documents, then tokens."""
    pg.goto(url + "/traces")
    assert pg.locator("#traces tbody tr").count() > 30
    pg.select_option("select[name=kind]", "RETRIEVER")
    pg.fill("input[name=model]", "gpt-4o")
    pg.click("#trace-filters button[type=submit]")
    pg.wait_for_url("**/traces?*kind=RETRIEVER*")
    names = pg.locator("#traces tbody .trace-link").all_text_contents()
    assert sorted(names) == ["answer-1", "answer-3", "answer-5"]
    pg.click("text=answer-5")
    pg.wait_for_selector("#waterfall.drawn")
    width = pg.eval_on_selector(f"#row-{_row_id(pg, 'search')} .bar", "e => e.getBoundingClientRect().width")
    assert width > 0  # the waterfall is drawn on the shared axis
    pg.click(f"#row-{_row_id(pg, 'search')}")
    pg.wait_for_selector("#documents")
    assert pg.locator("#documents tbody tr").count() == 3
    assert "doc-5-1" in pg.locator("#documents").inner_text()
    assert "span=" in pg.url  # the URL carries the selected span
    pg.click(f"#row-{_row_id(pg, 'chat gpt-4o')}")
    pg.wait_for_selector("#usage")
    usage = pg.locator("#usage").inner_text()
    assert "205" in usage and "64" in usage and "provider" in usage and "price_table" in usage
    pg.reload()  # a deep link reopens the same span
    assert "price_table" in pg.locator("#span-panel").inner_text()


def _row_id(pg: Any, name: str) -> str:
    return str(pg.locator(".wf-row", has_text=name).first.get_attribute("id"))[4:]


def test_trace_list_filter_trace_and_span_panel(site, page) -> None:  # type: ignore[no-untyped-def]
    url, _ = site
    _trace_flow(page.page, url)


def test_run_failures_to_trace_and_compare_to_trace_diff(site, page) -> None:  # type: ignore[no-untyped-def]
    url, info = site
    pg = page.page
    pg.goto(url + "/runs")
    pg.click(f"text={info['v2']}")
    pg.wait_for_selector("#metrics")
    assert "recall@1" in pg.locator("#metrics").inner_text()
    pg.select_option("select[name=show]", "failures")
    pg.click("#example-filters button[type=submit]")
    pg.wait_for_url("**show=failures*")
    rows = pg.locator("#examples tbody tr")
    assert (
        rows.count() == 1 and "q07" in rows.first.inner_text() and "model server went away" in rows.first.inner_text()
    )
    rows.first.locator("a.example-trace").click()
    pg.wait_for_selector("#waterfall.drawn")
    assert pg.locator(".wf-row.err").count() >= 1
    assert "q07" in pg.locator("#eval-link").locator("..").inner_text()

    pg.goto(url + "/compare")
    pg.select_option("select[name=a]", info["v1"])
    pg.select_option("select[name=b]", info["v2"])
    pg.click("button[type=submit]")
    pg.wait_for_selector("svg.forest")
    assert "better" in pg.locator("#metric-deltas").inner_text()
    pg.locator("#improvements a.diff-link").first.click()
    pg.wait_for_selector("#doc-diff")
    diff = pg.locator("#doc-diff").inner_text()
    assert "moved" in diff and "relevant" in diff
    assert "generate" in pg.locator("#span-diff").inner_text()


def test_hostile_content_shows_as_text_on_every_page(site, page) -> None:  # type: ignore[no-untyped-def]
    url, info = site
    pg = page.page
    pg.goto(url + "/traces")
    pg.click(".trace-link >> text=<script>")
    pg.wait_for_selector("#waterfall.drawn")
    trace_url = pg.url.split("?")[0]
    span_ids = [str(x) for x in pg.locator(".wf-row").evaluate_all("rows => rows.map(r => r.id.slice(4))")]
    pages = ["/traces", "/overview", "/runs", f"/runs/{info['v2']}", "/datasets", "/datasets/qa",
             f"/compare?a={info['v1']}&b={info['v2']}"]  # fmt: skip
    for p in pages:
        pg.goto(url + p)
        assert pg.title().endswith("ragtrail") and pg.title() != "pwned", p
    for sid in span_ids:
        pg.goto(f"{trace_url}?span={sid}")
        assert pg.title() != "pwned"  # the payload would set exactly this
        assert pg.locator("img").count() == 0 and pg.locator("#span-panel b").count() == 0
    pg.goto(f"{trace_url}?span={span_ids[1]}")  # the retriever: hostile ids and contents as table text
    text = pg.locator("#documents").inner_text()
    assert "<script>document.title='pwned'</script>" in text
    assert '"><img src=x onerror=' in text and "<b>bold</b>" in text and "\\x1b[31mred" in text
    for h in pg.locator("#span-panel a").evaluate_all("links => links.map(a => a.getAttribute('href'))"):
        assert not str(h).lower().startswith("javascript:")
    # second line of defence: the CSP blocks eval and inline handlers even if markup got through
    pg.evaluate("""() => { const s = document.createElement('script'); s.textContent = 'window.__inline = 1';
        document.body.appendChild(s); const d = document.createElement('div');
        d.innerHTML = '<img src="data:," onerror="window.__inline = 1">';
        document.body.appendChild(d); }""")
    pg.wait_for_timeout(300)
    assert pg.evaluate("() => window.__inline === undefined")
    pg.click(f"#row-{span_ids[0]}")  # clicking swaps the panel in without running anything
    pg.wait_for_selector(f"#span-panel [data-span='{span_ids[0]}']")
    assert "<script>document.title='pwned'</script>" in pg.locator("#span-input").inner_text()
    assert pg.title() != "pwned"


def test_long_trace_appends_its_rows_after_the_first_paint(site, page) -> None:  # type: ignore[no-untyped-def]
    url, _ = site
    pg = page.page
    pg.goto(f"{url}/traces/{fx.BIG_TRACE}")
    pg.wait_for_selector("#waterfall.complete")
    assert pg.locator(".wf-row").count() == fx.BIG_SPANS and pg.locator("#more-rows").count() == 0
    hostile = pg.locator(".wf-row", has_text="<script>")  # an appended row: its name is text
    assert hostile.count() == 1 and pg.title() != "pwned"
    width = hostile.locator(".bar").evaluate("e => e.getBoundingClientRect().width")
    assert width > 0
    hostile.click()
    pg.wait_for_selector(f"#span-panel [data-span='{850:016x}']")
    assert "<script>document.title='pwned'</script>" in pg.locator("#span-panel h2").inner_text()


def test_live_mode_shows_new_traces(site, page) -> None:  # type: ignore[no-untyped-def]
    import ragtrail

    url, info = site
    pg = page.page
    pg.goto(url + "/traces?live=1")
    assert pg.locator("#live").is_checked()
    ragtrail.init(project=fx.PROJECT, store=info["store"])
    try:
        with ragtrail.span("arrived-live", kind="CHAIN"):
            pass
        ragtrail.flush(10)
    finally:
        ragtrail.shutdown()
    pg.wait_for_selector("text=arrived-live", timeout=15_000)  # polling reloads the list


def test_postgres_store_in_the_browser(pg_url, browser) -> None:  # type: ignore[no-untyped-def]
    from ragtrail.ui import start

    fx.build(pg_url)
    ui = start(pg_url)
    p = Page(browser)
    try:
        _trace_flow(p.page, ui.url)
    finally:
        p.close()
        ui.stop()
