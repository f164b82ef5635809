"""Flame graphs: each report with samples gets ``<id>.speedscope.json`` (pyinstrument's speedscope
renderer), which the viewer serves (authenticated, ids checked) and opens in its own copy of
speedscope (``make speedscope-assets``) under a policy of its own; without that copy the report
page offers the file only. Profiled and sampled slow spans of a real Flask app and a real
browser (Debian chromium, driven by Playwright)."""

from __future__ import annotations

import io
import json
import os
import re
import stat
import time
import zipfile
from urllib.parse import quote

import pytest

pytest.importorskip("starlette")

from otel_perfmon.policy.base import ProfilePolicy  # noqa: E402
from otel_perfmon.report import render  # noqa: E402
from otel_perfmon.report.render import write_report_files  # noqa: E402
from otel_perfmon.testing import InMemoryReportExporter, wait_until  # noqa: E402
from otel_perfmon.viewer import app as viewer_app  # noqa: E402
from test_viewer_security import asgi_request  # noqa: E402
from viewer_reports import make_report, write  # noqa: E402

TOKEN = "flame-graph-token-9x"
BEARER = {"authorization": f"Bearer {TOKEN}"}
THRESHOLD = 0.1
SLOW = 0.35
#: request-derived text in the span name, hence in the speedscope profile's name
HOSTILE = 'GET /full/</script><img src=x onerror=alert(1)>"\\\u2028&amp;'
SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"
HAVE_SPEEDSCOPE = os.path.isfile(os.path.join(viewer_app.SPEEDSCOPE_DIR, "index.html"))
NEEDS_SPEEDSCOPE = pytest.mark.skipif(not HAVE_SPEEDSCOPE, reason="no speedscope build: make speedscope-assets")


def culprit_profiled_in_flamegraph_test(seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < deadline:
        count += 1
    return count


def culprit_sampled_in_flamegraph_test(seconds: float) -> int:
    deadline = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < deadline:
        count += 1
    return count


class FullOnly(ProfilePolicy):
    """pyinstrument for the spans named ``.../full/...``; the others are only sampled."""

    description = "full only"

    def should_profile(self, span):
        return "/full/" in span.name

    def on_span_end(self, key, duration_seconds, profiled, slow):
        pass


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """A profiled slow span (a hand-made SERVER span with a hostile name) and a sampled slow
    Flask request, through the real processor, worker and renderers."""
    from flask import Flask
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from otel_perfmon import configure_perfmon

    app = Flask(__name__)

    @app.get("/sampled")
    def sampled():
        culprit_sampled_in_flamegraph_test(SLOW)
        return "ok"

    report_dir = str(tmp_path_factory.mktemp("flame") / "reports")
    provider = TracerProvider()
    memory = InMemoryReportExporter()
    perfmon = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                                report_dir=report_dir, dedup_store="memory", exporters=[memory],
                                profile_policy=FullOnly())
    try:
        with provider.get_tracer("flame-test").start_as_current_span(HOSTILE, kind=SpanKind.SERVER):
            culprit_profiled_in_flamegraph_test(SLOW)
        assert app.test_client().get("/sampled").status_code == 200
        assert perfmon.force_flush(10)
        wait_until(lambda: len(memory.reports) == 2, 20, message="both reports exported")
        by_mode = {r.profile_mode: r for r in memory.reports}
        yield {"dir": report_dir, "full": by_mode["full"], "sampled": by_mode["sampled"]}
    finally:
        perfmon.shutdown(timeout_seconds=2)


def speedscope(report):
    with open(report.speedscope_path, encoding="utf-8") as handle:
        text = handle.read()
    return text, json.loads(text)


def frame_names(data):
    return [frame["name"] for frame in data["shared"]["frames"]]


# --- the file ---------------------------------------------------------------------------------
def test_profiled_span_gets_a_speedscope_file(reports):
    report = reports["full"]
    assert report.span_name == HOSTILE
    assert report.speedscope_path in report.files and report.has_flame_graph
    assert sorted(os.listdir(reports["dir"])) == sorted(
        os.path.basename(p) for p in reports["full"].files + reports["sampled"].files)
    assert stat.S_IMODE(os.stat(report.speedscope_path).st_mode) == 0o600
    text, data = speedscope(report)
    assert data["$schema"] == SCHEMA_URL and data["exporter"] == "pyinstrument" and data["activeProfileIndex"] == 0
    assert HOSTILE in data["name"]  # the span name, intact once parsed
    assert not re.search(r"[<>&\u2028]", text)  # and escaped in the file itself
    (profile,) = data["profiles"]
    assert profile["type"] == "evented" and profile["unit"] == "seconds" and profile["name"] == data["name"]
    assert profile["endValue"] > 0 and len(profile["events"]) >= 2
    assert "culprit_profiled_in_flamegraph_test" in frame_names(data)
    culprit = frame_names(data).index("culprit_profiled_in_flamegraph_test")
    assert data["shared"]["frames"][culprit]["file"].endswith("test_flamegraph.py")
    opened = [e for e in profile["events"] if e["frame"] == culprit]
    assert opened[0]["type"] == "O" and opened[-1]["type"] == "C"
    assert opened[-1]["at"] - opened[0]["at"] >= 0.5 * SLOW  # most of the span, in the culprit


def test_sampled_span_gets_a_speedscope_file(reports):
    report = reports["sampled"]
    assert report.has_flame_graph
    _, data = speedscope(report)
    assert data["$schema"] == SCHEMA_URL
    assert "culprit_sampled_in_flamegraph_test" in frame_names(data)
    assert data["profiles"][0]["endValue"] > 0


@NEEDS_SPEEDSCOPE
def test_files_match_speedscopes_own_schema(reports):
    jsonschema = pytest.importorskip("jsonschema")
    with open(os.path.join(viewer_app.SPEEDSCOPE_DIR, "file-format-schema.json"), encoding="utf-8") as handle:
        schema = json.load(handle)
    for mode in ("full", "sampled"):
        jsonschema.validate(speedscope(reports[mode])[1], schema)


def test_written_before_the_json_and_removed_with_the_samples(tmp_path, monkeypatch):
    opened = []
    real_fdopen = os.fdopen

    def fdopen(fd, *args, **kwargs):
        opened.append(os.readlink(f"/proc/self/fd/{fd}").rsplit(".tmp-", 1)[0])
        return real_fdopen(fd, *args, **kwargs)

    monkeypatch.setattr(render.os, "fdopen", fdopen)
    report_dir = str(tmp_path / "reports")
    report = make_report(report_dir, 1_795_000_000.0)
    assert write_report_files(report) == report.files
    rid = report.report_id
    assert [os.path.basename(p) for p in opened] == [f"{rid}.html", f"{rid}.md", f"{rid}.speedscope.json",
                                                     f"{rid}.json"]  # the JSON last
    assert os.path.isfile(report.speedscope_path)
    # a later version of the same report without samples: no flame graph left behind
    later = make_report(report_dir, 1_795_000_000.0, report_id=rid, with_session=False)
    write_report_files(later)
    assert not later.has_flame_graph and later.speedscope_path not in later.files
    assert sorted(os.listdir(report_dir)) == sorted(os.path.basename(p) for p in later.files)


# --- the viewer -------------------------------------------------------------------------------
@pytest.fixture
def served(tmp_path):
    report_dir = str(tmp_path / "reports")
    with_samples = write(make_report(report_dir, 1_795_000_000.0, route="/checkout"))
    without = write(make_report(report_dir, 1_795_000_100.0, route="/plain", with_session=False))
    return {"dir": report_dir, "with": with_samples, "without": without}


def test_viewer_serves_the_file_with_auth_only(served):
    app = viewer_app.create_app(served["dir"], auth_token=TOKEN, dedup_store=None)
    rid = served["with"].report_id
    path = f"/reports/{rid}/speedscope.json"
    assert asgi_request(app, "GET", path).status == 401
    assert asgi_request(app, "GET", path, {"accept": "text/html"}).status == 303  # to the login form
    assert asgi_request(app, "GET", path, {"authorization": "Bearer wrong"}).status == 401
    response = asgi_request(app, "GET", path, BEARER)
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["content-disposition"] == f'attachment; filename="{rid}.speedscope.json"'
    assert response.headers["x-content-type-options"] == "nosniff"
    with open(served["with"].speedscope_path, "rb") as handle:
        assert response.body == handle.read()
    assert json.loads(response.body)["$schema"] == SCHEMA_URL


@pytest.mark.parametrize("target", [
    "/reports/{without}/speedscope.json",  # a report without samples has none
    "/reports/20261202-000000-deadbeef/speedscope.json",  # no such report
    "/reports/..%2F..%2Fetc%2Fpasswd/speedscope.json",
    "/reports/{with}.speedscope.json%00/speedscope.json",
    "/reports/%2E%2E/speedscope.json",
    "/reports/{with}%2F..%2F{with}/speedscope.json",
    "/reports/UPPER-{with}/speedscope.json",
])
def test_bad_ids_answer_404(served, target):
    app = viewer_app.create_app(served["dir"], auth_token=TOKEN, dedup_store=None)
    target = target.format(**{k: served[k].report_id for k in ("with", "without")})
    assert asgi_request(app, "GET", target, BEARER).status == 404


def test_report_page_links_the_flame_graph_and_the_download(served):
    app = viewer_app.create_app(served["dir"], auth_token=TOKEN, dedup_store=None)
    rid = served["with"].report_id
    page = asgi_request(app, "GET", f"/reports/{rid}", BEARER)
    assert page.status == 200
    file_url = f"/reports/{rid}/speedscope.json"
    if HAVE_SPEEDSCOPE:
        viewer = f'/static/speedscope/index.html#profileURL={quote(file_url, safe="")}'
        assert f'id="flame-graph" href="{viewer}"' in page.text
        assert 'id="flame-graph-missing"' not in page.text
    assert f'id="flame-graph-file" href="{file_url}" download="{rid}.speedscope.json"' in page.text
    # the report page's own policy is unchanged: no script at all
    assert page.headers["content-security-policy"] == viewer_app.PAGE_CSP
    assert "script-src" not in page.headers["content-security-policy"]
    plain = asgi_request(app, "GET", f"/reports/{served['without'].report_id}", BEARER).text
    assert 'id="flame-graph' not in plain  # no samples, no flame graph


def test_zip_download_holds_the_speedscope_file(served):
    app = viewer_app.create_app(served["dir"], dedup_store=None)
    for key, names in (("with", ("html", "md", "json", "speedscope.json")), ("without", ("html", "md", "json"))):
        rid = served[key].report_id
        response = asgi_request(app, "GET", f"/reports/{rid}/download")
        assert response.status == 200
        with zipfile.ZipFile(io.BytesIO(response.body)) as archive:
            assert sorted(archive.namelist()) == sorted(f"{rid}.{s}" for s in names)


@NEEDS_SPEEDSCOPE
def test_speedscope_is_served_with_its_own_policy(served):
    app = viewer_app.create_app(served["dir"], auth_token=TOKEN, dedup_store=None)
    index = asgi_request(app, "GET", "/static/speedscope/index.html")  # open: no report data in it
    assert index.status == 200 and "speedscope" in index.text
    assert index.headers["content-security-policy"] == viewer_app.SPEEDSCOPE_CSP
    assert index.headers["x-frame-options"] == "DENY"
    scripts = re.findall(r'<script src="([^"]+)"', index.text)
    assert scripts and all("/" not in s and ":" not in s for s in scripts)  # its own files only
    script = asgi_request(app, "GET", "/static/speedscope/" + scripts[0])
    assert script.status == 200 and "javascript" in script.headers["content-type"]
    assert asgi_request(app, "GET", "/static/speedscope/../app.py").status == 404
    for page in ("/reports", "/login"):  # every other page keeps the script-free policy
        assert asgi_request(app, "GET", page, BEARER).headers["content-security-policy"] == viewer_app.PAGE_CSP


@NEEDS_SPEEDSCOPE
def test_mounted_viewer_links_below_its_mount_point(served):
    from starlette.applications import Starlette
    from starlette.routing import Mount

    outer = Starlette(routes=[Mount("/perfmon", app=viewer_app.create_app(served["dir"], dedup_store=None))])
    rid = served["with"].report_id
    page = asgi_request(outer, "GET", f"/perfmon/reports/{rid}").text
    file_url = f"/perfmon/reports/{rid}/speedscope.json"
    assert f'href="/perfmon/static/speedscope/index.html#profileURL={quote(file_url, safe="")}"' in page
    assert asgi_request(outer, "GET", "/perfmon/static/speedscope/index.html").status == 200
    assert asgi_request(outer, "GET", file_url).status == 200


def test_without_speedscope_the_page_offers_the_file_only(served, tmp_path):
    app = viewer_app.create_app(served["dir"], auth_token=TOKEN, dedup_store=None,
                                speedscope_dir=str(tmp_path / "not-installed"))
    rid = served["with"].report_id
    page = asgi_request(app, "GET", f"/reports/{rid}", BEARER).text
    assert 'id="flame-graph"' not in page and "/static/speedscope/" not in page
    assert f'id="flame-graph-file" href="/reports/{rid}/speedscope.json"' in page
    assert re.search(r'id="flame-graph-missing">The flame-graph viewer \(speedscope\) is not installed', page)
    assert asgi_request(app, "GET", "/static/speedscope/index.html").status == 404
    assert asgi_request(app, "GET", f"/reports/{rid}/speedscope.json", BEARER).status == 200


# --- a real browser ---------------------------------------------------------------------------
@NEEDS_SPEEDSCOPE
def test_browser_opens_the_flame_graph(reports, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright missing: pip install -e '.[test]'")
    from conftest import ROOT, free_port, run_server
    from test_viewer import serve_argv
    from test_viewer_browser import CHROMIUM_ARGS, chromium_path

    chromium = chromium_path()
    if chromium is None:
        pytest.skip("Debian chromium is not installed (make system-deps, or apt-get install chromium)")
    report = reports["full"]
    port = free_port()
    with run_server(serve_argv(reports["dir"], port, "--auth-token", TOKEN), {}, port,
                    str(tmp_path / "serve.log"), cwd=ROOT, health_path="/healthz") as server, \
            sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, timeout=60_000)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.goto(server.url(f"/reports/{report.report_id}"))  # the login form first
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(server.url(f"/reports/{report.report_id}"))
            href = page.locator("#flame-graph").get_attribute("href")
            assert href and href.startswith("/static/speedscope/index.html#profileURL=%2Freports%2F")
            page.close()

            flame = context.new_page()  # speedscope's page alone: every message below is its own
            problems, violations, outside = [], [], []
            flame.expose_function("reportViolation", lambda v: violations.append(v))
            flame.add_init_script(
                "document.addEventListener('securitypolicyviolation', function (e) { window.reportViolation("
                "{directive: e.violatedDirective, blocked: e.blockedURI, line: e.lineNumber, column: e.columnNumber,"
                " source: e.sourceFile}); });")
            flame.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                     if m.type == "error" or (m.type == "warning" and "GL Driver Message" not in m.text) else None)
            flame.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            flame.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
            flame.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
            flame.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
            flame.on("request", lambda r: outside.append(r.url)
                     if not r.url.startswith((server.url("/"), "data:", "blob:")) else None)
            flame.goto(server.url(href))
            # speedscope fetched the file (with the login cookie) and drew it: the profile's name,
            # the span name shown as text, and the flame chart's canvas
            flame.get_by_text("CPU profile for", exact=False).first.wait_for(state="visible", timeout=30_000)
            assert HOSTILE.replace("\u2028", "") in flame.locator("body").inner_text().replace("\u2028", "")
            canvas = flame.locator("canvas").first
            canvas.wait_for(state="visible", timeout=10_000)
            box = canvas.bounding_box()
            assert box is not None and box["width"] > 200 and box["height"] > 100
            flame.get_by_text("Sandwich").first.click()  # the table view names the culprit
            flame.get_by_text("culprit_profiled_in_flamegraph_test").first.wait_for(state="visible", timeout=10_000)
            assert problems == [] and outside == []
            # nothing blocked but protobuf.js probing for Node's require() with eval, which it
            # survives (the same null without a policy): speedscope's script, at that probe
            assert all(v["directive"] == "script-src" and v["blocked"] == "eval" for v in violations), violations
            script = _speedscope_script()
            for v in violations:
                assert v["source"].endswith(os.path.basename(script))
                with open(script, encoding="utf-8") as handle:
                    line = handle.read().split("\n")[v["line"] - 1]
                around = line[max(0, v["column"] - 120):v["column"] + 40]
                assert 'function inquire(moduleName){try{var mod=eval("quire".replace(/^/,"re"))' in around, around
            context.close()
        finally:
            browser.close()


def _speedscope_script() -> str:
    with open(os.path.join(viewer_app.SPEEDSCOPE_DIR, "index.html"), encoding="utf-8") as handle:
        (name,) = re.findall(r'<script src="([^"]+)"', handle.read())
    return os.path.join(viewer_app.SPEEDSCOPE_DIR, name)
