"""The viewer in a real browser: Debian's headless Chromium driven by Playwright for Python.

Needs the ``chromium`` Debian package (``make system-deps`` installs it) and ``playwright``
(the ``test`` extra). Playwright's own browser downloads are never used.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("starlette")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[test]'")

from conftest import ROOT, free_port, run_server  # noqa: E402
from test_viewer import EVIL, serve_argv  # noqa: E402
from viewer_reports import make_report, write  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium_path():
    for candidate in (os.environ.get("PERFMON_TEST_CHROMIUM"), shutil.which("chromium"), "/usr/bin/chromium"):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.skip("Debian chromium is not installed (make system-deps, or apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, timeout=60_000)
        yield instance
        instance.close()


def test_list_click_into_report_and_call_tree_renders(browser, tmp_path):
    report_dir = str(tmp_path / "reports")
    slow = write(make_report(report_dir, 1_795_000_000.0, duration_ms=2500.0, route="/checkout"))
    write(make_report(report_dir, 1_795_000_000.0 - 60, duration_ms=1100.0, route="/x/" + EVIL,
                      headers={"x-request-id": EVIL}))
    port = free_port()
    with run_server(serve_argv(report_dir, port), {}, port, str(tmp_path / "serve.log"), cwd=ROOT,
                    health_path="/healthz") as server:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        dialogs, errors = [], []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url("/reports"))
        assert page.locator("a.report-link").count() == 2
        assert EVIL in page.locator("table.reports").inner_text()  # shown as text, not run

        page.locator(f"a.report-link[href='/reports/{slow.report_id}']").click()
        page.wait_for_url(server.url(f"/reports/{slow.report_id}"))
        assert "/checkout" in page.locator("h1").inner_text()
        tree = page.frame_locator("#call-tree")
        # pyinstrument's interactive viewer rendered the profiled functions inside the sandbox
        tree.get_by_text("_load_rows").first.wait_for(state="visible", timeout=20_000)
        tree.get_by_text("Call stack").first.wait_for(state="visible", timeout=5_000)
        assert page.locator("table.hotspots tbody tr").count() >= 1

        page.goto(server.url("/reports"))
        page.locator("a.report-link").nth(1).click()
        page.wait_for_load_state()
        assert EVIL in page.locator("table.headers").inner_text()
        assert dialogs == [] and errors == []
        page.close()
