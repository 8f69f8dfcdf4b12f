"""Regenerate the screenshots of `ragtrail ui` in docs/img/ from the demo's data.

Runs the offline demo (``python -m ragtrail.demo``) into a temporary store, serves the UI on it and
captures the pages in headless Chromium (Debian's ``chromium`` through Playwright)::

    .venv/bin/python docs/ui_screenshots.py              # writes docs/img/ui-*.png
    .venv/bin/python docs/ui_screenshots.py --store S    # use a store the demo already filled
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "img"


def _json(url: str) -> Any:
    with urllib.request.urlopen(url) as r:  # noqa: S310 - http://127.0.0.1 of the UI started here
        return json.loads(r.read())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default=None, help="a store the demo filled (default: run the demo now)")
    ap.add_argument("--out", default=str(OUT), help="where to write the PNG files")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="ragtrail-shots-")
    store = args.store
    if store is None:
        store = os.path.join(tmp, "demo.db")
        report = os.path.join(tmp, "report.html")
        subprocess.run([sys.executable, "-m", "ragtrail.demo", "--store", store, "--report", report], check=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from ragtrail.ui import start

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ui = start(store)
    try:
        runs = _json(ui.url + "/api/runs")["evaluations"][0]["runs"]
        a, b = runs[-1]["ref"], runs[0]["ref"]
        comp = _json(f"{ui.url}/api/compare?a={a}&b={b}")
        changed = (comp["improvements"] or comp["regressions"] or [{"example_id": ""}])[0]["example_id"]
        traces = _json(ui.url + "/api/traces?project=ragtrail-demo")["traces"]
        first = traces[-1]["trace_id"]  # the demo's single traced question
        spans = _json(f"{ui.url}/api/traces/{first}")["spans"]
        retr = next((s["span_id"] for s in spans if s["kind"] == "RETRIEVER"), spans[0]["span_id"])
        llm = next((s["span_id"] for s in spans if s["kind"] == "LLM"), spans[0]["span_id"])
        shots = {
            "ui-traces.png": "/traces?project=ragtrail-demo",
            "ui-trace.png": f"/traces/{first}?span={retr}",
            "ui-trace-llm.png": f"/traces/{first}?span={llm}",
            "ui-runs.png": "/runs",
            "ui-compare.png": f"/compare?a={a}&b={b}",
            "ui-trace-diff.png": f"/compare/diff?a={a}&b={b}&example={changed}",
            "ui-overview.png": "/overview",
        }
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1360, "height": 820})
            for name, path in shots.items():
                page.goto(ui.url + path)
                page.wait_for_load_state("networkidle")
                page.screenshot(path=str(out / name))
                print(f"wrote {out / name}")
            browser.close()
    finally:
        ui.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
