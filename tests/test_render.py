"""Report files built through the real pipeline: SDK TracerProvider + Flask test client.

One slow request with hostile path, query and headers, one fast request, and one more slow
request to the same route (deduplicated); then the files, their JSON schema, the HTML
escaping and CSP, the Markdown escaping, hotspots, file modes and the span links are checked.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from urllib.parse import urlencode

import jsonschema
import pytest

from otel_perfmon import attributes as attr
from otel_perfmon.testing import InMemoryReportExporter, wait_until

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "src", "otel_perfmon", "report", "schema.json")
THRESHOLD = 0.1
SLOW = 0.35
XSS = "<script>alert(1)</script>"
XSS_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
MD_SPECIALS = "a|b *bold* _it_ `code` [link](http://evil.example/x) # ~~s~~ <b>"
BINARY = "bin\x01\x02\x7f\xfe\xff"
LONG = "L" * 4993 + "ENDMARK"  # 5000 characters
URL_TEMPLATE = "https://perf.example.com/reports/{report_id}"


def burn_cpu_in_test_module(seconds: float) -> int:
    """The hotspot the reports must name: a pure-Python busy loop in this test module."""
    deadline = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < deadline:
        count += 1
    return count


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from flask import Flask, request
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_perfmon import configure_perfmon

    app = Flask(__name__)

    @app.get("/echo/<path:rest>")
    def echo(rest):
        burn_cpu_in_test_module(SLOW)
        return "echo " + str(len(request.args))

    @app.get("/fast")
    def fast():
        return "fast"

    report_dir = str(tmp_path_factory.mktemp("render") / "reports")  # created by otel-perfmon
    provider = TracerProvider(resource=Resource.create({"service.name": "render-test"}))
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    memory = InMemoryReportExporter()
    perfmon = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                                report_dir=report_dir, dedup_store="memory", report_url_template=URL_TEMPLATE,
                                exporters=[memory], profile_policy="always")
    client = app.test_client()
    client.set_cookie("session", "SUPERSECRETCOOKIE")  # the test client sends Cookie from its jar
    headers = {
        "X-Request-ID": XSS,
        "X-Correlation-ID": MD_SPECIALS,
        "Referer": BINARY,
        "User-Agent": LONG,
        "Accept": "text/html",
        "Authorization": "Bearer SUPERSECRETTOKEN",
        "X-Not-Captured": "invisible",
    }
    slow_path = "/echo/" + XSS + "/a|b*_`"
    query = urlencode({"q": XSS, "md": "x|y*z_", "api_key": "SUPERSECRETKEY"})
    # real servers (gunicorn) put the query into RAW_URI / REQUEST_URI, which OTel's WSGI
    # instrumentation reads as http.target; werkzeug's test client leaves it out.
    raw_uri = slow_path + "?" + query
    response = client.get(slow_path, query_string=query, headers=headers,
                          environ_overrides={"RAW_URI": raw_uri, "REQUEST_URI": raw_uri})
    assert response.status_code == 200
    assert client.get("/fast").status_code == 200
    assert perfmon.force_flush(10)
    wait_until(lambda: len(memory.reports) == 1, 10, message="the report to reach the exporter")
    report = memory.reports[0]
    # a second slow request to the same route: deduplicated, linked to the same report
    assert client.get("/echo/other").status_code == 200
    assert perfmon.force_flush(10)
    data = {
        "perfmon": perfmon, "report_dir": report_dir, "spans": list(spans.get_finished_spans()),
        "report": report, "memory": memory, "stats": perfmon.stats(),
    }
    yield data
    perfmon.shutdown(timeout_seconds=2)


def _read(pipeline, suffix):
    path = os.path.join(pipeline["report_dir"], f"{pipeline['report'].report_id}.{suffix}")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _span(pipeline, name_part):
    found = [s for s in pipeline["spans"] if name_part in s.name]
    assert found, [s.name for s in pipeline["spans"]]
    return found


# ---------------------------------------------------------------------------------- files
def test_exactly_three_files_per_report_plus_its_flame_graph(pipeline):
    report_id = pipeline["report"].report_id
    assert re.fullmatch(r"[0-9a-z][0-9a-z-]{7,63}", report_id)
    suffixes = ("html", "json", "md", "speedscope.json")  # the report has samples: a flame-graph file too
    assert sorted(os.listdir(pipeline["report_dir"])) == sorted(f"{report_id}.{s}" for s in suffixes)
    assert sorted(pipeline["report"].files) == sorted(
        os.path.join(pipeline["report_dir"], f"{report_id}.{s}") for s in suffixes)


def test_file_and_directory_modes(pipeline):
    assert stat.S_IMODE(os.stat(pipeline["report_dir"]).st_mode) == 0o700
    for path in pipeline["report"].files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_stats_after_the_three_requests(pipeline):
    stats = pipeline["stats"]
    assert stats["spans_started"] == 3
    assert stats["slow_spans"] == 2
    assert stats["reports_created"] == 1
    assert stats["reports_deduplicated"] == 1
    assert stats["reports_dropped"] == 0
    assert stats["export_failures"] == 0
    assert stats["internal_errors"] == 0


# ---------------------------------------------------------------------------------- JSON
def test_json_validates_against_the_schema(pipeline):
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        schema = json.load(handle)
    document = json.loads(_read(pipeline, "json"))
    jsonschema.validate(document, schema)
    assert document == pipeline["report"].to_dict()


def test_json_contents(pipeline):
    document = json.loads(_read(pipeline, "json"))
    assert document["schema_version"] == 1
    assert document["report_id"] == pipeline["report"].report_id
    assert document["service_name"] == "render-test"
    assert document["span_name"] == "GET /echo/<path:rest>"
    http = document["http"]
    assert http["method"] == "GET"
    assert http["route"] == "/echo/<path:rest>"
    assert http["path"].startswith("/echo/")
    assert "alert(1)" in http["path"]
    assert http["status_code"] == 200
    assert "SUPERSECRETKEY" not in http["query"]
    assert "api_key=" in http["query"]
    assert "md=x%7Cy%2Az_" in http["query"] or "md=x|y*z_" in http["query"]
    assert SLOW * 1000 <= document["duration_ms"] < SLOW * 1000 + 2000
    assert document["threshold_ms"] == THRESHOLD * 1000
    assert document["start_time"] < document["end_time"]
    assert document["report_url"] == URL_TEMPLATE.format(report_id=document["report_id"])
    assert document["profile"]["sample_count"] > 10
    assert "burn_cpu_in_test_module" in document["profile"]["call_tree_text"]
    assert document["host"]["pid"] == os.getpid()


def test_json_headers_are_captured_redacted_and_truncated(pipeline):
    headers = json.loads(_read(pipeline, "json"))["headers"]
    assert headers["x-request-id"] == XSS
    assert headers["x-correlation-id"] == MD_SPECIALS
    assert headers["referer"] == BINARY
    assert headers["accept"] == "text/html"
    assert headers["authorization"] == "[REDACTED]"
    assert headers["cookie"] == "[REDACTED]"
    assert "x-not-captured" not in headers
    assert headers["user-agent"].startswith("L" * 1000)
    assert "ENDMARK" not in headers["user-agent"]
    assert len(headers["user-agent"]) < 1100
    for suffix in ("json", "html", "md"):
        text = _read(pipeline, suffix)
        for secret in ("SUPERSECRETTOKEN", "SUPERSECRETCOOKIE", "SUPERSECRETKEY", "invisible", "ENDMARK"):
            assert secret not in text, (suffix, secret)


def test_hotspots_name_the_slow_function(pipeline):
    hotspots = json.loads(_read(pipeline, "json"))["profile"]["hotspots"]
    assert hotspots
    mine = [h for h in hotspots if h["function"] == "burn_cpu_in_test_module"]
    assert mine, hotspots
    assert mine[0]["file"].endswith("test_render.py")
    assert mine[0]["line"] > 0
    assert mine[0]["self_ms"] > 0
    # top self-time frames: sorted by self time, and the busy loop (plus the perf_counter
    # builtin it calls) dominates
    assert [h["self_ms"] for h in hotspots] == sorted((h["self_ms"] for h in hotspots), reverse=True)
    busy = sum(h["percent"] for h in hotspots if h["function"] in ("burn_cpu_in_test_module", "perf_counter"))
    assert busy > 50
    assert pipeline["report"].hotspots == hotspots


# ---------------------------------------------------------------------------------- span links
def test_slow_span_links_to_the_report(pipeline):
    report_id = pipeline["report"].report_id
    document = json.loads(_read(pipeline, "json"))
    slow_spans = [s for s in _span(pipeline, "/echo/") if s.attributes.get("http.target", "").startswith("/echo/%3C")
                  or XSS in s.attributes.get("http.target", "") or "alert" in s.attributes.get("http.target", "")]
    assert len(slow_spans) == 1, [dict(s.attributes) for s in pipeline["spans"]]
    span = slow_spans[0]
    assert document["trace_id"] == f"{span.context.trace_id:032x}"
    assert document["span_id"] == f"{span.context.span_id:016x}"
    assert span.attributes[attr.PERFMON_SLOW] is True
    assert span.attributes[attr.PERFMON_REPORT_ID] == report_id
    assert span.attributes[attr.PERFMON_REPORT_URL] == URL_TEMPLATE.format(report_id=report_id)


def test_deduplicated_slow_span_links_to_the_existing_report(pipeline):
    report_id = pipeline["report"].report_id
    (other,) = [s for s in pipeline["spans"] if s.attributes.get("http.target") == "/echo/other"]
    assert other.attributes[attr.PERFMON_SLOW] is True
    assert other.attributes[attr.PERFMON_REPORT_ID] == report_id
    entry = pipeline["perfmon"].store.get(pipeline["report"].fingerprint)
    assert entry is not None and entry.report_id == report_id
    assert entry.count == 2
    assert entry.last_trace_id == f"{other.context.trace_id:032x}"
    assert len(pipeline["memory"].reports) == 1


def test_fast_span_has_no_perfmon_attributes(pipeline):
    (fast,) = _span(pipeline, "/fast")
    assert not [key for key in fast.attributes if key.startswith("perfmon.")]
    assert not set(attr.ALL) & set(fast.attributes)


# ---------------------------------------------------------------------------------- HTML
def test_html_escapes_request_derived_text(pipeline):
    html = _read(pipeline, "html")
    assert XSS not in html
    assert "<script>alert" not in html
    assert XSS_ESCAPED in html
    assert "&lt;b&gt;" in html  # from the X-Correlation-ID value
    assert "SUPERSECRET" not in html


def test_html_has_a_content_security_policy(pipeline):
    html = _read(pipeline, "html")
    match = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert match, html[:500]
    policy = match.group(1)
    assert "default-src 'none'" in policy
    head_end = html.index("</head>") if "</head>" in html else len(html)
    assert match.start() < head_end


def test_html_loads_nothing_from_the_network(pipeline):
    html = _read(pipeline, "html")
    report_url = URL_TEMPLATE.format(report_id=pipeline["report"].report_id)
    loaded = []
    for match in re.finditer(r"https?://[^\s\"'<>()\\]+", html):
        url = match.group(0)
        if url.startswith("http://www.w3.org/"):  # XML namespace names (SVG), never fetched
            continue
        if url.startswith("http://evil.example/"):  # request-derived text: escaped, never a link
            before = html[max(0, match.start() - 20):match.start()]
            assert not re.search(r"(href|src)=\"?$", before), before
            continue
        if url.startswith(report_url):
            before = html[max(0, match.start() - 200):match.start()]
            assert re.search(r"<a\s[^>]*href=\"$", before), "the report URL may only be a plain link"
            continue
        loaded.append(url)
    assert not loaded, loaded
    # no external resources in tags either (protocol-relative URLs included)
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=\"(https?:)?//", html, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", html, re.I)
    assert "<!DOCTYPE html>" in html[:200] or "<!doctype html>" in html[:200].lower()


def test_html_contains_the_interactive_call_tree(pipeline):
    html = _read(pipeline, "html")
    assert "burn_cpu_in_test_module" in html
    assert pipeline["report"].trace_id in html and pipeline["report"].span_id in html


# ---------------------------------------------------------------------------------- Markdown
def _unescaped_pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))


def test_markdown_escapes_specials(pipeline):
    markdown = _read(pipeline, "md")
    assert XSS not in markdown
    assert "<b>" not in markdown
    assert "&lt;script&gt;" in markdown
    assert "a\\|b" in markdown
    assert "\\*bold\\*" in markdown
    assert "\\_it\\_" in markdown
    assert "\\[link\\]\\(http" in markdown
    # every table row keeps its column count: request-derived pipes are escaped
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
            continue
        if in_code or not line.startswith("|"):
            continue
        assert _unescaped_pipes(line) in (3, 5), line


def test_markdown_summary(pipeline):
    markdown = _read(pipeline, "md")
    report = pipeline["report"]
    # the report link is a CommonMark autolink, where backslash escapes would end up in the URL
    assert f"<{URL_TEMPLATE.format(report_id=report.report_id)}>" in markdown
    assert report.report_id in markdown
    assert report.trace_id in markdown and report.span_id in markdown
    assert "burn\\_cpu\\_in\\_test\\_module" in markdown or "burn_cpu_in_test_module" in markdown
    assert "[REDACTED]" in markdown.replace("\\[", "[").replace("\\]", "]")
    assert "```" in markdown


def test_markdown_autolink_cannot_be_broken_out_of():
    from otel_perfmon.report.render import md_autolink

    assert md_autolink("https://perf.example.com/r/2026-1_a.b?x=1&y=2#f") == \
        "https://perf.example.com/r/2026-1_a.b?x=1&y=2#f"
    assert md_autolink("https://x.example/a b>c<d\n") == "https://x.example/a%20b%3Ec%3Cd%0A"


def test_request_derived_span_name_cannot_escape_the_call_tree_script(tmp_path):
    """OTel's Flask instrumentor names a request without a matching route after its raw path
    (``GET /nope/</script>...``); that name is the profile's description, which pyinstrument
    embeds in a <script> block of the HTML."""
    from flask import Flask
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_perfmon import configure_perfmon

    app = Flask(__name__)

    @app.errorhandler(404)
    def slow_not_found(error):
        burn_cpu_in_test_module(SLOW)
        return "not here", 404

    provider = TracerProvider()
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    memory = InMemoryReportExporter()
    perfmon = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                                report_dir=str(tmp_path), dedup_store="memory", exporters=[memory],
                                profile_policy="always")
    try:
        hostile = "/nope/</script><script>alert(1)</script>"
        assert app.test_client().get(hostile).status_code == 404
        assert perfmon.force_flush(10)
        (span,) = spans.get_finished_spans()
        assert XSS in span.name  # the premise: the span name is request-derived here
        (report,) = memory.reports
        with open(report.html_path, encoding="utf-8") as handle:
            html = handle.read()
        assert "<script>alert(1)" not in html
        assert "</script><script>alert" not in html
        assert "burn_cpu_in_test_module" in html  # the call tree is still there
        # the embedded session data still decodes to the original name
        start = html.index("const sessionData = ") + len("const sessionData = ")
        end = html.index("pyinstrumentHTMLRenderer.render(", start)
        data = json.loads(html[start:end].strip().rstrip(";"))
        assert data["session"]["target_description"] == span.name
        with open(report.json_path, encoding="utf-8") as handle:
            assert json.load(handle)["span_name"] == span.name
    finally:
        perfmon.shutdown(timeout_seconds=2)
