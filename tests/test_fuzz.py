"""Hostile input, property-based (hypothesis, bounded examples, no deadline): header names and
values (unicode, control characters, values up to 1 MB), paths with ``<script>``, ``../``, NUL
and bad percent-encodings, query strings; through capture and redaction, the three renderers,
every notifier message and the viewer's pages. No exception escapes, no element or event
handler from the input appears in any HTML output, and no secret from the input appears in
any output or log line. Plus: a bad ``OTEL_PERFMON_EXPORTERS`` name warns once per command."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from html.parser import HTMLParser
from typing import Dict, List, Tuple
from urllib.parse import quote

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis missing: pip install -e '.[test]'")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from conftest import BIN  # noqa: E402
from otel_perfmon.config import DEFAULT_CAPTURE_HEADERS, DEFAULT_REDACT_HEADERS  # noqa: E402
from otel_perfmon.exporters import _message  # noqa: E402
from otel_perfmon.redaction import REDACTED  # noqa: E402
from otel_perfmon.report.capture import MAX_HEADER_VALUE_CHARS, http_info, redact_query, select_headers  # noqa: E402
from otel_perfmon.report.render import HtmlRenderer, JsonRenderer, MarkdownRenderer, write_report_files  # noqa: E402
from viewer_reports import make_report  # noqa: E402

FUZZ = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.data_too_large])
CAPTURE = {h.lower() for h in DEFAULT_CAPTURE_HEADERS}
REDACT = {h.lower() for h in DEFAULT_REDACT_HEADERS}
#: Every secret fed in contains this; it must never come out.
MARK = "Zq7SeKr1t"
PAYLOADS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '"><svg onload=alert(1)>',
            "'><iframe src=javascript:alert(1)>", "</textarea></title></style><script>x</script>",
            "javascript:alert(1)", "../../etc/passwd", "..%2f..%2f", "\x00", "%00", "%E0%A4%A", "%zz", "%",
            "\r\nSet-Cookie: x=1", "\u2028\u2029", "```", "@channel", "<!--", "]]>", "{{7*7}}", "\x1b[31m",
            "*_`|~#[x](javascript:alert(1))", "&amp;&lt;", "\ud7ff\ue000\U0010ffff"]

hostile_text = st.lists(st.one_of(st.sampled_from(PAYLOADS), st.text(max_size=40)), max_size=6).map("".join)
secrets_ = st.text(alphabet="abcdefXYZ0123456789-_.~", max_size=20).map(lambda s: MARK + s)
header_names = st.one_of(st.sampled_from(sorted(CAPTURE | REDACT | {"x-session-id", "x-my-token", "x-client-secret",
                                                                     "password", "x-other"})),
                         st.text(min_size=1, max_size=30))
big_value = st.builds(lambda c, n: c * n, st.sampled_from(["A", "<", "\x00", "é", "😀"]),
                      st.integers(MAX_HEADER_VALUE_CHARS - 2, 1_000_000))
header_values = st.one_of(hostile_text, big_value)
SENSITIVE_HEADERS = ["authorization", "cookie", "x-api-key", "x-auth-token", "proxy-authorization", "set-cookie",
                     "x-session-id", "x-my-token", "x-client-secret"]
SENSITIVE_PARAMS = ["token", "access_token", "api_key", "apikey", "password", "secret", "auth", "signature",
                    "X-Amz-Signature", "session", "%74oken", "client%5Fsecret"]


class Elements(HTMLParser):
    """Every start tag of a document and every event-handler attribute."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: List[str] = []
        self.handlers: List[Tuple[str, str]] = []
        self.js_urls: List[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.handlers.append((tag, name))
            if name.lower() in ("href", "src", "action", "formaction") and value and \
                    value.strip().lower().startswith("javascript:"):
                self.js_urls.append(value)

    handle_startendtag = handle_starttag


def elements(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    parser.close()
    return parser


def tag_counts(html: str) -> Dict[str, int]:
    counts: Dict[str, int] = {}
    for tag in elements(html).tags:
        counts[tag] = counts.get(tag, 0) + 1
    return counts


def assert_no_injection(html: str, baseline: str) -> None:
    """``html`` has the same elements as ``baseline`` (the same page from benign input): nothing
    from the input became a tag, an event handler or a javascript: link."""
    found, base = elements(html), elements(baseline)
    assert tag_counts(html) == tag_counts(baseline)
    assert found.handlers == base.handlers == []
    assert found.js_urls == []


def hostile_report(report_dir: str, route: str, path: str, headers: Dict[str, str], query: str, service: str):
    report = make_report(report_dir, 1_795_000_000.0, route=route, path=path, headers=headers, service=service,
                         with_session=False)
    report.query = query
    report.span_name = f"GET {route}"
    report.url = "https://perfmon.example/reports/" + quote(report.report_id)
    return report


# --- capture and redaction ---------------------------------------------------------------------
@FUZZ
@given(pairs=st.lists(st.tuples(header_names, header_values), max_size=8),
       secret_pairs=st.lists(st.tuples(st.sampled_from(SENSITIVE_HEADERS), secrets_), min_size=1, max_size=4),
       case=st.sampled_from([str.lower, str.upper, str.title]))
def test_select_headers_redacts_and_bounds(pairs, secret_pairs, case):
    mixed = pairs + [(case(name), value) for name, value in secret_pairs]
    out = select_headers(mixed, CAPTURE, REDACT)
    assert MARK not in json.dumps(out)
    for name, value in out.items():
        assert name == name.lower()
        assert len(value) <= MAX_HEADER_VALUE_CHARS + 40
    for name, _ in secret_pairs:
        assert out[name] == REDACTED


@FUZZ
@given(junk=st.lists(st.tuples(hostile_text, hostile_text), max_size=6),
       secret_params=st.lists(st.tuples(st.sampled_from(SENSITIVE_PARAMS), secrets_), min_size=1, max_size=3),
       separator=st.sampled_from(["&", "&&", "&;"]), order=st.randoms(use_true_random=False))
def test_redact_query_removes_every_secret(junk, secret_params, separator, order):
    parts = [f"{quote(k)}={quote(v)}" for k, v in junk] + [f"{k}={v}" for k, v in secret_params]
    order.shuffle(parts)
    query = separator.join(parts)
    out = redact_query(query)
    assert MARK not in out
    assert len(out) <= MAX_HEADER_VALUE_CHARS + 40


@pytest.mark.parametrize("query", ["=?token=" + MARK, "a=b?token=" + MARK, "a=1;api_key=" + MARK,
                                   "x=%3F&secret=" + MARK])
def test_a_parameter_after_a_stray_separator_is_redacted(query):
    # hypothesis found the first: a path of "?=" before "?token=…" left the token in the query
    out = redact_query(query)
    assert MARK not in out and REDACTED in out


@FUZZ
@given(path=hostile_text, query=st.one_of(st.none(), hostile_text), url=hostile_text, status=st.one_of(
    st.none(), st.integers(-10, 10**6), hostile_text, st.sampled_from(["²", "٣٠٠", "1" * 5000, "200"])),
       method=hostile_text, name=hostile_text, secret=secrets_)
def test_http_info_never_raises(path, query, url, status, method, name, secret):
    for attributes in (
            {"http.method": method, "http.target": path + "?token=" + secret, "http.status_code": status},
            {"http.request.method": method, "url.path": path, "url.query": f"{query or ''}&api_key={secret}",
             "http.response.status_code": status},
            {"url.full": f"http://[{url}/x?password={secret}", "http.status_code": status},
            {"http.url": f"https://{url}{path}?secret={secret}"}):
        info = http_info(attributes, name)
        assert MARK not in info["query"]
        assert info["status_code"] is None or isinstance(info["status_code"], int)


# --- renderers and notifier messages -----------------------------------------------------------
@pytest.fixture(scope="module")
def baselines(tmp_path_factory):
    """HTML of each output for a benign report with the same shape (one header, a query)."""
    report = hostile_report(str(tmp_path_factory.mktemp("benign")), "/benign", "/benign", {"x-request-id": "r"},
                            "a=1", "shop")
    return {"report": HtmlRenderer().render(report), "mail": _message.html_body(report),
            "mail_attached": _message.html_body(report, attached=True)}


@FUZZ
@given(route=hostile_text, path=hostile_text, service=hostile_text,
       header_pairs=st.lists(st.tuples(header_names, header_values), max_size=4),
       secret_header=st.tuples(st.sampled_from(SENSITIVE_HEADERS), secrets_),
       junk_query=hostile_text, secret_param=st.tuples(st.sampled_from(SENSITIVE_PARAMS), secrets_))
def test_renderers_and_messages_escape_and_never_leak(tmp_path, baselines, caplog, route, path, service,
                                                      header_pairs, secret_header, junk_query, secret_param):
    caplog.set_level(logging.DEBUG)
    headers = select_headers(header_pairs + [secret_header], CAPTURE, REDACT)
    query = redact_query(f"q={quote(junk_query)}&{secret_param[0]}={secret_param[1]}")
    headers = {k: v for k, v in headers.items() if k in ("x-request-id", "referer", "user-agent", secret_header[0])}
    report = hostile_report(str(tmp_path / "r"), "/" + route, "/" + path, headers, query, service or "s")
    html = HtmlRenderer().render(report)
    benign = hostile_report(str(tmp_path / "b"), "/b", "/b", {k: "v" for k in headers}, "a=1", "s")
    assert_no_injection(html, HtmlRenderer().render(benign))
    data = json.loads(JsonRenderer().render(report))
    assert data["http"]["route"] == "/" + route and data["http"]["path"] == "/" + path
    markdown = MarkdownRenderer().render(report)
    assert "<script" not in markdown.lower() and "<img" not in markdown.lower()
    outputs = [html, json.dumps(data), markdown]
    for attached in (False, True):
        mail = _message.html_body(report, attached=attached)
        assert_no_injection(mail, _message.html_body(benign, attached=attached))
        outputs += [mail, _message.text_body(report, attached=attached)]
    slack = _message.slack_text(report)
    assert "<!channel>" not in slack and "<script" not in slack
    outputs += [json.dumps(_message.summary(report)), slack, json.dumps(_message.slack_payload(report)),
                _message.markdown_text(report), _message.title(report), _message.subject(report, "[perfmon]")]
    for text in (_message.subject(report, "[perfmon]"), _message.title(report)):
        assert "\n" not in text and "\r" not in text
    outputs.append(caplog.text)
    for text in outputs:
        assert MARK not in text


# --- the viewer ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hostile_viewer(tmp_path_factory):
    from otel_perfmon.viewer import create_app

    report_dir = str(tmp_path_factory.mktemp("fuzzviewer") / "reports")
    reports = []
    for i, payload in enumerate(PAYLOADS):
        headers = {"x-request-id": payload, "referer": "javascript:" + payload, "authorization": REDACTED}
        report = hostile_report(report_dir, "/r/" + payload, "/p/" + payload, headers,
                                redact_query(f"q={quote(payload)}&token={MARK}{i}"), "svc" + payload)
        report.report_id = f"20261202-0000{i:02d}-0000{i:04x}"
        write_report_files(report)
        reports.append(report)
    return {"app": create_app(report_dir, dedup_store=None, refresh_interval_seconds=0), "reports": reports,
            "dir": report_dir}


def viewer_get(app, target: str):
    from test_viewer_security import asgi_request

    return asgi_request(app, "GET", target)


@FUZZ
@given(path=hostile_text, service=hostile_text, route=hostile_text, since=hostile_text, sort=hostile_text,
       raw=st.sampled_from(["%", "%zz", "%00", "%E0%A4%A", "..%2F..%2Fetc%2Fpasswd", "%3Cscript%3E", "a%2Fb",
                            "\x00", "../", "<script>", "%C0%AE%C0%AE%2F"]))
def test_viewer_pages_survive_hostile_urls(hostile_viewer, caplog, path, service, route, since, sort, raw):
    caplog.set_level(logging.DEBUG)
    app = hostile_viewer["app"]
    rid = hostile_viewer["reports"][0].report_id
    targets = [
        "/reports/" + quote(path, safe="") + raw, "/reports/" + raw + "/tree", "/api/reports/" + raw,
        f"/reports/{rid}/" + raw, "/" + raw,
        "/reports?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in
                               (("service", service), ("route", route), ("since", since), ("sort", sort))),
        "/reports?route=" + raw + "&until=" + raw + "&page=" + raw,
        "/route?service=" + quote(service, safe="") + "&method=GET&route=" + quote(route, safe="") + raw,
        "/api/reports?trace_id=" + raw + "&per_page=" + quote(sort, safe=""), "/routes?service=" + raw,
    ]
    for target in targets:
        response = viewer_get(app, target)
        assert response.status in (200, 303, 307, 400, 404, 405), (target, response.status)
        if response.status in (303, 307):  # Starlette's trailing-slash redirect, or to /login: never off-site
            location = response.headers["location"]
            assert location.startswith(("/", "http://testserver/")) and not location.startswith("//"), location
        if response.headers.get("content-type", "").startswith("text/html"):
            found = elements(response.text)
            assert "script" not in found.tags and "img" not in found.tags, target
            assert found.tags.count("svg") <= 1 and found.tags.count("iframe") <= 1, target
            assert found.handlers == [] and found.js_urls == [], target
    assert MARK not in caplog.text


def test_viewer_pages_of_hostile_reports(hostile_viewer, caplog):
    caplog.set_level(logging.DEBUG)
    app = hostile_viewer["app"]
    listing = viewer_get(app, "/reports?per_page=500")
    assert listing.status == 200 and listing.text.count('class="report-link"') == len(PAYLOADS)
    pages = [listing, viewer_get(app, "/routes"), viewer_get(app, "/api/reports?per_page=500")]
    for report in hostile_viewer["reports"]:
        pages.append(viewer_get(app, f"/reports/{report.report_id}"))
        pages.append(viewer_get(app, "/route?" + "&".join(
            f"{k}={quote(v, safe='')}" for k, v in (("service", report.service_name), ("method", "GET"),
                                                    ("route", report.route)))))
        pages.append(viewer_get(app, f"/api/reports/{report.report_id}"))
    for page in pages:
        assert page.status == 200
        assert MARK not in page.text
        if page.headers["content-type"].startswith("text/html"):
            found = elements(page.text)
            assert "script" not in found.tags and "img" not in found.tags and found.tags.count("iframe") <= 1
            assert found.tags.count("svg") <= 1  # the route page's chart, the only one
            assert found.handlers == [] and found.js_urls == []
    tree = viewer_get(app, f"/reports/{hostile_viewer['reports'][0].report_id}/tree")
    assert tree.status == 200 and MARK not in tree.text
    assert MARK not in caplog.text


# --- the CLI: a bad exporter name warns once ------------------------------------------------------
@pytest.mark.parametrize("argv", [["list", "--report-dir", "{dir}"], ["serve", "--help"], ["test-notifiers"]])
def test_bad_exporter_name_warns_once(tmp_path, argv):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTEL_PERFMON_EXPORTERS="console,no-such-exporter", OTEL_PERFMON_THRESHOLD_SECONDS="soon")
    result = subprocess.run([os.path.join(BIN, "otel-perfmon")] + [a.format(dir=tmp_path) for a in argv],
                            capture_output=True, text=True, timeout=60, env=env, cwd=str(tmp_path))
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert output.count("ignoring OTEL_PERFMON_EXPORTERS") == 1, output
    assert output.count("ignoring OTEL_PERFMON_THRESHOLD_SECONDS") == 1, output
    assert result.returncode == (2 if argv[0] == "test-notifiers" else 0)
