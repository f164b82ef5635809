"""Viewer security: CSRF on the login and logout forms, security headers on every response,
the failed-login throttle (a fake clock: no window is waited out), the token never in a URL,
a page or a log line. In-process: the ASGI app called directly (:func:`asgi_request`)."""

from __future__ import annotations

import asyncio
import logging
import re
from html.parser import HTMLParser
from typing import Dict, List, Optional, Tuple
from urllib.parse import unquote, urlencode

import pytest

pytest.importorskip("starlette")

from otel_perfmon.testing import FakeClock  # noqa: E402
from otel_perfmon.viewer import create_app  # noqa: E402
from otel_perfmon.viewer.auth import CSRF_COOKIE_NAME, LoginThrottle  # noqa: E402
from viewer_reports import make_report, write  # noqa: E402

TOKEN = "viewer-token-Zq8-secret"
FORM = {"content-type": "application/x-www-form-urlencoded"}
BROWSER = {**FORM, "origin": "http://testserver", "sec-fetch-site": "same-origin"}


class Response:
    def __init__(self, status: int, headers: List[Tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.header_list = headers
        self.headers = {k: v for k, v in headers}
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def cookies(self) -> Dict[str, str]:
        found = {}
        for k, v in self.header_list:
            if k == "set-cookie":
                name, _, rest = v.partition("=")
                found[name] = rest.split(";")[0]
        return found


def asgi_request(app, method: str, target: str, headers: Optional[Dict[str, str]] = None, body: bytes = b"",
                 client: Tuple[str, int] = ("127.0.0.1", 50000), root_path: str = "") -> Response:
    """One HTTP request to the ASGI ``app``, in process; ``target`` is sent as given (raw)."""
    raw_path, _, query = target.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": root_path + unquote(raw_path), "raw_path": (root_path + raw_path).encode(
                 "latin-1", "replace"), "query_string": query.encode("latin-1", "replace"), "root_path": root_path,
             "headers": [(k.lower().encode("latin-1"), v.encode("latin-1", "replace"))
                         for k, v in {"host": "testserver", **(headers or {})}.items()],
             "client": client, "server": ("testserver", 80)}
    messages: List[dict] = []
    sent = [False]

    async def receive():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)

    async def run():
        await app(scope, receive, send)

    asyncio.run(run())
    start = next(m for m in messages if m["type"] == "http.response.start")
    payload = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return Response(start["status"], [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]],
                    payload)


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inputs: Dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        if tag == "input":
            values = dict(attrs)
            if values.get("name"):
                self.inputs[values["name"]] = values.get("value") or ""


def form_fields(html: str) -> Dict[str, str]:
    parser = _Inputs()
    parser.feed(html)
    return parser.inputs


@pytest.fixture
def viewer(tmp_path):
    report_dir = str(tmp_path / "reports")
    report = write(make_report(report_dir, 1_795_000_000.0, with_session=True))
    app = create_app(report_dir, auth_token=TOKEN, dedup_store=None, refresh_interval_seconds=0)
    clock = FakeClock()
    app.state.throttle.clock = clock
    app.state.throttle.failure_pause_seconds = 0
    return {"app": app, "report": report, "clock": clock, "dir": report_dir}


def login_page(app, **headers) -> Tuple[str, Dict[str, str]]:
    """GET /login: (the CSRF cookie pair, the form's fields)."""
    page = asgi_request(app, "GET", "/login?next=%2Froutes", headers)
    assert page.status == 200
    nonce = page.cookies().get(CSRF_COOKIE_NAME) or ""
    return f"{CSRF_COOKIE_NAME}={nonce}", form_fields(page.text)


def post(app, path, fields, headers, client=("127.0.0.1", 50000)):
    return asgi_request(app, "POST", path, headers, urlencode(fields).encode(), client=client)


# --- CSRF ---------------------------------------------------------------------------------------
def test_login_form_carries_a_csrf_token_bound_to_its_cookie(viewer):
    app = viewer["app"]
    cookie, fields = login_page(app)
    assert fields["csrf_token"] and fields["next"] == "/routes" and "token" in fields
    set_cookie = [v for k, v in asgi_request(app, "GET", "/login").header_list if k == "set-cookie"][0].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    good = {"token": TOKEN, "next": "/routes", "csrf_token": fields["csrf_token"]}
    # a browser POST without the token, with another browser's token, or from another site: refused
    assert post(app, "/login", {**good, "csrf_token": ""}, {**BROWSER, "cookie": cookie}).status == 403
    other_cookie, other = login_page(app)
    assert other["csrf_token"] != fields["csrf_token"]
    assert post(app, "/login", {**good, "csrf_token": other["csrf_token"]},
                {**BROWSER, "cookie": cookie}).status == 403
    assert post(app, "/login", good, {**BROWSER}).status == 403  # no CSRF cookie at all
    assert post(app, "/login", good, {**BROWSER, "cookie": cookie, "sec-fetch-site": "cross-site"}).status == 403
    refused = post(app, "/login", {**good, "csrf_token": "x"}, {**BROWSER, "cookie": cookie})
    assert "set-cookie" not in refused.headers or "otel_perfmon_viewer=" not in refused.headers["set-cookie"]
    # the matching pair logs in
    ok = post(app, "/login", good, {**BROWSER, "cookie": cookie})
    assert ok.status == 303 and ok.headers["location"] == "/routes" and "otel_perfmon_viewer" in ok.cookies()
    # a client that is not a browser (no Origin, no Sec-Fetch-*) cannot be a forged form post
    assert post(app, "/login", {"token": TOKEN}, FORM).status == 303


def test_logout_needs_the_csrf_token(viewer):
    app = viewer["app"]
    cookie, fields = login_page(app)
    ok = post(app, "/login", {"token": TOKEN, "csrf_token": fields["csrf_token"]}, {**BROWSER, "cookie": cookie})
    session = "otel_perfmon_viewer=" + ok.cookies()["otel_perfmon_viewer"]
    both = f"{cookie}; {session}"
    page = asgi_request(app, "GET", "/routes", {"cookie": both})
    assert page.status == 200
    logout_token = form_fields(page.text)["csrf_token"]
    assert logout_token == fields["csrf_token"]  # the same browser session
    forged = post(app, "/logout", {}, {**BROWSER, "cookie": both})
    assert forged.status == 403 and "max-age=0" not in forged.headers.get("set-cookie", "").lower()
    assert post(app, "/logout", {"csrf_token": "0" * 64}, {**BROWSER, "cookie": both}).status == 403
    done = post(app, "/logout", {"csrf_token": logout_token}, {**BROWSER, "cookie": both})
    assert done.status == 303 and "max-age=0" in done.headers["set-cookie"].lower()


# --- headers ------------------------------------------------------------------------------------
def test_security_headers_on_every_response(viewer):
    app, rid = viewer["app"], viewer["report"].report_id
    bearer = {"authorization": f"Bearer {TOKEN}"}
    cases = [("GET", "/reports", bearer), ("GET", f"/reports/{rid}", bearer), ("GET", "/routes", bearer),
             ("GET", f"/api/reports/{rid}", bearer), ("GET", "/api/reports", bearer),
             ("GET", f"/reports/{rid}/download", bearer), ("GET", "/reports/nope-0000000", bearer),
             ("GET", "/api/reports/../../etc/passwd", bearer), ("GET", "/", bearer), ("GET", "/healthz", {}),
             ("GET", "/login", {}), ("GET", "/reports", {}), ("GET", "/reports", {"accept": "text/html"}),
             ("GET", "/logout", bearer), ("POST", "/login", FORM), ("GET", "/static/viewer.css", {}),
             ("GET", "/route", bearer)]
    for method, path, headers in cases:
        response = asgi_request(app, method, path, headers)
        assert response.headers.get("x-content-type-options") == "nosniff", (path, response.status)
        assert response.headers.get("referrer-policy") == "no-referrer", path
        csp = response.headers.get("content-security-policy", "")
        assert "frame-ancestors 'none'" in csp, (path, csp)
        assert "script-src" not in csp and "default-src 'none'" in csp, path
    too_large = asgi_request(app, "POST", "/login", FORM, b"token=" + b"x" * 10000)
    assert too_large.status == 413 and "frame-ancestors 'none'" in too_large.headers["content-security-policy"]
    assert too_large.headers["x-content-type-options"] == "nosniff"
    tree = asgi_request(app, "GET", f"/reports/{rid}/tree", bearer)
    assert tree.status == 200 and b"pyinstrument" in tree.body
    csp = tree.headers["content-security-policy"]
    assert "frame-ancestors 'self'" in csp and "sandbox allow-scripts" in csp
    assert tree.headers["x-frame-options"] == "SAMEORIGIN" and tree.headers["x-content-type-options"] == "nosniff"
    page = asgi_request(app, "GET", f"/reports/{rid}", bearer).text
    assert re.search(r'<iframe[^>]+src="/reports/' + rid + r'/tree"[^>]+sandbox="allow-scripts', page)


# --- throttle -----------------------------------------------------------------------------------
def test_login_throttled_after_five_failures_with_growing_delay(viewer, caplog):
    caplog.set_level(logging.DEBUG)
    app, clock = viewer["app"], viewer["clock"]
    me, other = ("10.0.0.7", 1234), ("10.0.0.8", 1234)
    for _ in range(4):
        assert post(app, "/login", {"token": "guess"}, FORM, client=me).status == 401
    fifth = post(app, "/login", {"token": "guess"}, FORM, client=me)
    assert fifth.status == 429 and fifth.headers["retry-after"] == "30"
    locked = post(app, "/login", {"token": TOKEN}, FORM, client=me)  # even the right token now
    assert locked.status == 429 and int(locked.headers["retry-after"]) == 30
    assert "frame-ancestors 'none'" in locked.headers["content-security-policy"]
    assert "otel_perfmon_viewer" not in locked.cookies()
    assert post(app, "/login", {"token": TOKEN}, FORM, client=other).status == 303  # per address
    clock.advance(29)
    assert post(app, "/login", {"token": "guess"}, FORM, client=me).headers["retry-after"] == "1"
    clock.advance(1.5)
    for _ in range(4):
        assert post(app, "/login", {"token": "guess"}, FORM, client=me).status == 401
    again = post(app, "/login", {"token": "guess"}, FORM, client=me)
    assert again.status == 429 and int(again.headers["retry-after"]) == 60  # doubled
    clock.advance(61)
    assert post(app, "/login", {"token": TOKEN}, FORM, client=me).status == 303
    assert post(app, "/login", {"token": "guess"}, FORM, client=me).status == 401  # a success resets it
    # failures spread wider than the window never lock
    for _ in range(12):
        clock.advance(15)
        assert post(app, "/login", {"token": "guess"}, FORM, client=other).status == 401
    assert TOKEN not in caplog.text


def test_throttle_bounds_its_memory():
    clock = FakeClock()
    throttle = LoginThrottle(max_clients=100, clock=clock)
    for i in range(1000):
        throttle.failed(f"10.1.{i // 256}.{i % 256}")
    assert len(throttle._clients) == 100
    for _ in range(5):
        throttle.failed("10.9.9.9")
    assert throttle.retry_after("10.9.9.9") == 30
    clock.advance(3601 + 30)
    assert throttle.retry_after("10.9.9.9") == 0 and throttle.failed("10.9.9.9") == 0  # forgotten


# --- the token stays secret -----------------------------------------------------------------------
def test_token_never_in_a_url_a_page_or_a_log_line(viewer, caplog):
    caplog.set_level(logging.DEBUG)
    app, rid = viewer["app"], viewer["report"].report_id
    # a token in the query string is not a credential (URLs end up in logs and histories)
    for path in (f"/reports?token={TOKEN}", f"/api/reports?token={TOKEN}", f"/reports/{rid}?auth_token={TOKEN}"):
        assert asgi_request(app, "GET", path).status == 401
    redirect = asgi_request(app, "GET", "/reports", {"accept": "text/html"})
    assert redirect.status == 303 and TOKEN not in redirect.headers["location"]
    login = asgi_request(app, "GET", "/login")
    assert 'method="post"' in login.text and TOKEN not in login.text
    responses = [post(app, "/login", {"token": TOKEN + "x", "next": "/routes"}, FORM),
                 post(app, "/login", {"token": TOKEN, "next": f"/reports?t={TOKEN[:4]}"}, FORM),
                 post(app, "/login", {"token": TOKEN}, FORM)]
    for response in responses:
        everything = response.text + " ".join(f"{k}: {v}" for k, v in response.header_list)
        assert TOKEN not in everything
    assert responses[2].status == 303 and responses[2].headers["location"] == "/reports"
    assert TOKEN not in caplog.text
