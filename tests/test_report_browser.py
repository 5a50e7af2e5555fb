"""`report.html` opened in a real headless browser: every figure decodes, every section is there.

Uses the Debian `chromium` package (installed by .ci/run) through Python
playwright; no browser is downloaded. Without /usr/bin/chromium the test is
skipped on a developer's machine and fails in CI (CI set).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from analysis import build_report
from analysis.report import REPORT_HTML, SECTION_TITLES
from helpers import NORMS, make_runs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def test_report_html_renders_in_headless_chromium(tmp_path, tiny_mnist):
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found (install Debian's chromium: apt-get install -y chromium)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    make_runs(tiny_mnist, tmp_path / "runs", [NORMS, ["batch_size=16", "batch_size=64"], ["seed=0", "seed=1"]])
    report = build_report([tmp_path / "runs"])
    figures = sorted(report.glob("*.png"))
    assert len(figures) >= 4

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((report / REPORT_HTML).resolve().as_uri(), wait_until="load")
            widths = page.evaluate("Array.from(document.images, img => img.complete ? img.naturalWidth : 0)")
            headings = page.evaluate("Array.from(document.querySelectorAll('h2'), h => h.textContent)")
            captions = page.evaluate("Array.from(document.querySelectorAll('figcaption'), c => c.textContent)")
        finally:
            browser.close()

    assert len(widths) == len(figures), widths
    assert all(w > 0 for w in widths), f"images that did not decode: {widths}"
    assert headings == list(SECTION_TITLES)
    assert len(captions) == len(figures) and all("n = " in c for c in captions)
