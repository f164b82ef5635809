"""The report viewer against a real ``otel-perfmon serve`` subprocess (HTTP over loopback)."""

from __future__ import annotations

import http.client
import io
import json
import os
import time
import zipfile
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlencode

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from conftest import BIN, ROOT, free_port, http_get, run_server, wait_until  # noqa: E402
from otel_perfmon.dedup.sqlite import SqliteDedupStore  # noqa: E402
from viewer_reports import make_report, write  # noqa: E402

TOKEN = "s3cret-viewer-token"
EVIL = "<script>alert(1)</script>"
TRACE_TEMPLATE = "http://jaeger.example:16686/trace/{trace_id}?uiFind={span_id}"
DAY = 86400.0
BASE = 1_795_000_000.0  # 2026-11-18T...Z, fixed so date filters are deterministic


def serve_argv(report_dir: str, port: int, *extra: str) -> List[str]:
    return [os.path.join(BIN, "otel-perfmon"), "serve", "--report-dir", report_dir, "--port", str(port),
            "--log-level", "warning", *extra]


def request(server, method: str, path: str, headers: Optional[Dict[str, str]] = None,
            body: Optional[bytes] = None) -> Tuple[int, Dict[str, str], bytes]:
    """Raw request: the path is sent exactly as given (no client-side normalization)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def api(server, path: str, **params) -> dict:
    status, body = http_get(server.url(path + ("?" + urlencode(params) if params else "")))
    assert status == 200, body
    return json.loads(body)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """24 ordinary reports over 6 days, 2 services, 3 routes, 2 methods; one with hostile text;
    dedup counts for two of them; a secret file beside report_dir and a symlink to it."""
    root = tmp_path_factory.mktemp("viewer")
    report_dir = str(root / "reports")
    reports = []
    routes = ["/items/<int:item_id>", "/slow", "/orders/<uuid:order_id>"]
    for i in range(24):
        reports.append(write(make_report(
            report_dir, BASE + i * 6 * 3600, duration_ms=1000.0 + ((i * 7919) % 24) * 100.0,
            route=routes[i % 3], method=("GET", "POST")[i % 2], service=("shop", "billing")[(i // 2) % 2],
            with_session=(i < 3))))
    evil = write(make_report(report_dir, BASE + 200 * 3600 + 60, duration_ms=1234.5, route="/x/" + EVIL,
                             service="shop", headers={"x-request-id": EVIL, "referer": "javascript:" + EVIL},
                             path="/x/" + EVIL))
    store = SqliteDedupStore.in_report_dir(report_dir)
    counted = reports[5]
    store.claim(counted.fingerprint, counted.report_id, BASE, 864000)
    for k in range(7):
        store.record_occurrence(counted.fingerprint, counted.report_id, 900.0 + k * 500, "ab" * 16, BASE + DAY * 5 + k)
    store.close()
    secret = root / "outside-secret-1234.json"
    secret.write_text(json.dumps({"report_id": "outside-secret-1234", "secret": "TOP-SECRET-VALUE"}))
    os.symlink(str(secret), os.path.join(report_dir, "linked-secret-1234.json"))
    return {"root": str(root), "dir": report_dir, "reports": reports, "evil": evil, "counted": counted}


@pytest.fixture(scope="module")
def server(dataset):
    port = free_port()
    with run_server(serve_argv(dataset["dir"], port, "--trace-url-template", TRACE_TEMPLATE), {}, port,
                    os.path.join(dataset["root"], "serve.log"), cwd=ROOT, health_path="/healthz") as srv:
        yield srv
        assert "Traceback" not in srv.log()  # no request ended in a server error


@pytest.fixture(scope="module")
def auth_server(dataset):
    port = free_port()
    env = {"OTEL_PERFMON_VIEWER_AUTH_TOKEN": TOKEN}
    with run_server(serve_argv(dataset["dir"], port), env, port, os.path.join(dataset["root"], "serve-auth.log"),
                    cwd=ROOT, health_path="/healthz") as srv:
        yield srv
        assert "Traceback" not in srv.log()


# --- list, sort, filters, paging --------------------------------------------------------------
def test_api_list_newest_first_with_required_fields(server, dataset):
    data = api(server, "/api/reports", per_page=100)
    assert data["total"] == 25 and data["page"] == 1 and data["pages"] == 1
    starts = [r["start_time"] for r in data["reports"]]
    assert starts == sorted(starts, reverse=True)
    first = data["reports"][0]
    assert first["report_id"] == dataset["evil"].report_id
    for key in ("report_id", "route", "method", "duration_ms", "trace_id", "start_time"):
        assert key in first
    assert first["url"] == f"/reports/{first['report_id']}"
    assert {r["report_id"] for r in data["reports"]} == {r.report_id for r in dataset["reports"]} | {
        dataset["evil"].report_id}  # the symlinked file is not listed


def test_api_pagination(server):
    pages = [api(server, "/api/reports", per_page=10, page=n) for n in (1, 2, 3)]
    assert [len(p["reports"]) for p in pages] == [10, 10, 5]
    assert all(p["pages"] == 3 and p["total"] == 25 for p in pages)
    ids = [r["report_id"] for p in pages for r in p["reports"]]
    assert len(set(ids)) == 25
    assert api(server, "/api/reports", per_page=10, page=99)["page"] == 3  # clamped


def test_api_sort_by_duration_and_time(server):
    desc = [r["duration_ms"] for r in api(server, "/api/reports", sort="duration", per_page=100)["reports"]]
    assert desc == sorted(desc, reverse=True)
    asc = [r["duration_ms"] for r in api(server, "/api/reports", sort="duration", order="asc", per_page=100)["reports"]]
    assert asc == sorted(asc)
    oldest = [r["start_time"] for r in api(server, "/api/reports", sort="time", order="asc", per_page=100)["reports"]]
    assert oldest == sorted(oldest)
    assert http_get(server.url("/api/reports?sort=evil"))[0] == 400
    assert http_get(server.url("/api/reports?order=sideways"))[0] == 400


def test_api_filters(server, dataset):
    reports = dataset["reports"]
    by_service = api(server, "/api/reports", service="billing", per_page=100)["reports"]
    assert by_service and {r["service_name"] for r in by_service} == {"billing"}
    assert len(by_service) == sum(r.service_name == "billing" for r in reports)
    by_method = api(server, "/api/reports", method="post", per_page=100)["reports"]
    assert len(by_method) == 12 and {r["method"] for r in by_method} == {"POST"}
    exact = api(server, "/api/reports", route="/slow", per_page=100)["reports"]
    assert len(exact) == 8 and {r["route"] for r in exact} == {"/slow"}
    glob = api(server, "/api/reports", route="/items/*", per_page=100)["reports"]
    assert len(glob) == 8
    combined = api(server, "/api/reports", route="/slow", method="GET", service="shop", per_page=100)["reports"]
    assert combined and all(r["route"] == "/slow" and r["method"] == "GET" and r["service_name"] == "shop"
                            for r in combined)
    trace = reports[4].trace_id
    assert [r["report_id"] for r in api(server, "/api/reports", trace_id=trace)["reports"]] == [reports[4].report_id]


def test_api_date_range(server, dataset):
    day = time.strftime("%Y-%m-%d", time.gmtime(BASE + DAY))
    in_day = api(server, "/api/reports", since=day, until=day, per_page=100)["reports"]
    expected = {r.report_id for r in dataset["reports"] if r.start_time.startswith(day)}
    assert expected and {r["report_id"] for r in in_day} == expected
    since_iso = dataset["reports"][20].start_time
    later = api(server, "/api/reports", since=since_iso, per_page=100)["reports"]
    expected_later = {r.report_id for r in dataset["reports"][20:]} | {dataset["evil"].report_id}
    assert {r["report_id"] for r in later} == expected_later
    assert http_get(server.url("/api/reports?since=yesterday"))[0] == 400


def test_occurrences_from_dedup_store(server, dataset):
    counted = dataset["counted"]
    row = api(server, "/api/reports", trace_id=counted.trace_id)["reports"][0]
    assert row["occurrences"] == 7 and row["worst_duration_ms"] == 3900.0
    assert row["last_seen"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(BASE + DAY * 5)))
    status, body = http_get(server.url("/reports?" + urlencode({"trace_id": counted.trace_id})))
    assert status == 200 and b'<td class="num">7</td>' in body
    page = http_get(server.url(f"/reports/{counted.report_id}"))[1].decode()
    assert "occurrences" in page and "3,900.0" in page


def test_list_page_html(server, dataset):
    status, headers, body = request(server, "GET", "/reports?per_page=10&sort=duration&order=asc")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    page = body.decode()
    assert "page 1 of 3" in page and 'rel="next"' in page
    assert page.count('class="report-link"') == 10
    fastest = api(server, "/api/reports", sort="duration", order="asc", per_page=1)["reports"][0]
    assert page.index(fastest["report_id"]) < page.index("</tbody>")
    assert '<option value="billing">' in page and '<option value="POST">' in page
    filtered = http_get(server.url("/reports?service=billing&method=GET"))[1].decode()
    assert "billing" in filtered and "POST</td>" not in filtered
    assert http_get(server.url("/"))[0] == 200  # redirect followed to the list
    assert http_get(server.url("/reports?until=not-a-date"))[0] == 400


def test_routes_and_route_page(server, dataset):
    page = http_get(server.url("/routes"))[1].decode()
    assert "/orders/&lt;uuid:order_id&gt;" in page
    status, body = http_get(server.url("/route?" + urlencode({"service": "shop", "method": "GET", "route": "/slow"})))
    assert status == 200
    text = body.decode()
    expected = [r for r in dataset["reports"] if r.route == "/slow" and r.method == "GET" and r.service_name == "shop"]
    assert expected and text.count('class="report-link"') == len(expected)
    assert "<svg" in text and text.count("<circle") == len(expected)
    assert http_get(server.url("/route"))[0] == 400


# --- report page, files, API -------------------------------------------------------------------
def test_report_page(server, dataset):
    report = dataset["reports"][0]
    status, headers, body = request(server, "GET", f"/reports/{report.report_id}")
    assert status == 200
    page = body.decode()
    hotspot = report.hotspots[0]["function"].replace("<", "&lt;").replace(">", "&gt;")
    for text in (report.report_id, report.trace_id, report.span_id, "/items/&lt;int:item_id&gt;", "x-request-id",
                 report.headers["x-request-id"], "[REDACTED]", "Hotspots", hotspot):
        assert text in page, text
    assert f'href="http://jaeger.example:16686/trace/{report.trace_id}?uiFind={report.span_id}"' in page
    assert f'src="/reports/{report.report_id}/tree"' in page and 'sandbox="allow-scripts' in page
    assert f'href="/reports/{report.report_id}/download"' in page


def test_report_tree_is_sandboxed(server, dataset):
    report = dataset["reports"][0]
    status, headers, body = request(server, "GET", f"/reports/{report.report_id}/tree")
    assert status == 200 and headers["content-type"].startswith("text/html")
    csp = headers["content-security-policy"]
    assert "sandbox allow-scripts" in csp and "allow-same-origin" not in csp and "default-src 'none'" in csp
    with open(report.html_path, "rb") as handle:
        original = handle.read()
    assert b"pyinstrument" in body and len(body) > len(original)


def test_download_zip(server, dataset):
    report = dataset["reports"][1]
    status, headers, body = request(server, "GET", f"/reports/{report.report_id}/download")
    assert status == 200 and headers["content-type"] == "application/zip"
    assert "attachment" in headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert sorted(archive.namelist()) == sorted(os.path.basename(path) for path in report.files)
        assert {f"{report.report_id}.{s}" for s in ("html", "md", "json")} <= set(archive.namelist())
        with open(report.md_path, "rb") as handle:
            assert archive.read(f"{report.report_id}.md") == handle.read()


def test_api_report_is_the_report_json(server, dataset):
    report = dataset["reports"][2]
    status, headers, body = request(server, "GET", f"/api/reports/{report.report_id}")
    assert status == 200 and headers["content-type"] == "application/json"
    with open(report.json_path, encoding="utf-8") as handle:
        assert json.loads(body) == json.load(handle)


def test_new_changed_and_deleted_reports_are_picked_up(server, dataset):
    new = write(make_report(dataset["dir"], BASE + 40 * DAY, route="/fresh", with_session=False))
    try:
        assert http_get(server.url(f"/reports/{new.report_id}"))[0] == 200  # direct hit: immediate
        wait_until(lambda: api(server, "/api/reports", route="/fresh")["total"] == 1, 10, 0.2, "new report listed")
        os.unlink(new.json_path)
        wait_until(lambda: api(server, "/api/reports", route="/fresh")["total"] == 0, 10, 0.2, "deleted report gone")
        assert http_get(server.url(f"/api/reports/{new.report_id}"))[0] == 404
    finally:
        for path in new.files:
            if os.path.exists(path):
                os.unlink(path)


# --- 404s and traversal ------------------------------------------------------------------------
TRAVERSALS = [
    "/reports/..%2F..%2Fetc%2Fpasswd", "/reports/%2e%2e%2f%2e%2e%2foutside-secret-1234",
    "/reports/..%252Foutside-secret-1234", "/api/reports/..%2Foutside-secret-1234",
    "/api/reports/%2E%2E/outside-secret-1234", "/reports/../outside-secret-1234",
    "/reports//etc/passwd", "/reports/%2Fetc%2Fpasswd", "/api/reports/%2Fetc%2Fpasswd",
    "/reports/linked-secret-1234", "/api/reports/linked-secret-1234", "/reports/linked-secret-1234/download",
    "/reports/linked-secret-1234/tree", "/api/reports/ABCDEFGH-1234", "/api/reports/short",
    "/api/reports/-starts-with-dash", "/reports/20261122-110000-aaaa.json", "/reports/" + "a" * 65,
    "/reports/valid-but-absent-0001", "/api/reports/valid-but-absent-0001",
    "/reports/valid-but-absent-0001/download", "/reports/valid-but-absent-0001/tree",
    "/reports/%00abcdefgh", "/reports/abcdefgh%00.json", "/reports/C:%5Cwindows%5Cwin.ini",
    "/static/..%2F..%2Fapp.py", "/static/../index.py",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_unknown_ids_and_traversal_answer_404(server, path):
    status, _, body = request(server, "GET", path)
    assert status == 404, (path, status)
    assert b"TOP-SECRET" not in body and b"root:" not in body


def test_absolute_url_request_target_is_404(server):
    status, _, body = request(server, "GET", f"http://127.0.0.1:{server.port}/reports/..%2F..%2Fetc%2Fpasswd")
    assert status in (400, 404) and b"root:" not in body


# --- escaping --------------------------------------------------------------------------------
def test_report_derived_text_is_escaped(server, dataset):
    evil = dataset["evil"]
    pages = [http_get(server.url(p))[1].decode() for p in (
        "/reports", f"/reports/{evil.report_id}", "/routes",
        "/route?" + urlencode({"service": "shop", "method": "GET", "route": evil.route}),
        "/reports?" + urlencode({"route": EVIL}))]
    for page in pages:
        assert "<script>" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "javascript:&lt;script&gt;" in pages[1]
    assert 'href="javascript:' not in pages[1]


def test_no_state_changing_get(server):
    assert request(server, "GET", "/logout")[0] == 405
    status, headers, _ = request(server, "GET", "/login")
    assert "set-cookie" not in headers


# --- auth ------------------------------------------------------------------------------------
def test_auth_required_everywhere(auth_server, dataset):
    rid = dataset["reports"][0].report_id
    for path in ("/reports", f"/reports/{rid}", f"/reports/{rid}/tree", f"/reports/{rid}/download", "/routes",
                 "/api/reports", f"/api/reports/{rid}", "/reports/..%2Foutside-secret-1234", "/nope"):
        status, headers, body = request(auth_server, "GET", path)
        assert status == 401, path
        assert headers["www-authenticate"].startswith("Bearer")
        assert rid.encode() not in body
    status, headers, _ = request(auth_server, "GET", f"/reports/{rid}?x=1", {"Accept": "text/html"})
    assert status == 303
    quoted = f"/reports/{rid}?x=1".replace("/", "%2F").replace("?", "%3F").replace("=", "%3D")
    assert headers["location"] == "/login?next=" + quoted
    assert request(auth_server, "GET", "/healthz")[0] == 200


def test_bearer_token(auth_server, dataset):
    ok = request(auth_server, "GET", "/api/reports", {"Authorization": f"Bearer {TOKEN}"})
    assert ok[0] == 200 and json.loads(ok[2])["total"] >= 25
    assert request(auth_server, "GET", "/api/reports", {"Authorization": f"Bearer {TOKEN}x"})[0] == 401
    assert request(auth_server, "GET", "/api/reports", {"Authorization": f"Basic {TOKEN}"})[0] == 401
    page = request(auth_server, "GET", f"/reports/{dataset['reports'][0].report_id}",
                   {"Authorization": f"Bearer {TOKEN}"})
    assert page[0] == 200 and b"Log out" in page[2]


def test_login_form_sets_httponly_cookie(auth_server):
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    status, headers, body = request(auth_server, "POST", "/login", form,
                                    urlencode({"token": "wrong", "next": "/routes"}).encode())
    assert status == 401 and "set-cookie" not in headers and b"Wrong token" in body
    status, headers, _ = request(auth_server, "POST", "/login", form,
                                 urlencode({"token": TOKEN, "next": "//evil.example/x"}).encode())
    assert status == 303 and headers["location"] == "/reports"  # no open redirect
    status, headers, _ = request(auth_server, "POST", "/login", form,
                                 urlencode({"token": TOKEN, "next": "/routes"}).encode())
    assert status == 303 and headers["location"] == "/routes"
    cookie = headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower() and TOKEN not in cookie
    pair = cookie.split(";")[0]
    assert request(auth_server, "GET", "/routes", {"Cookie": pair})[0] == 200
    assert request(auth_server, "GET", "/api/reports", {"Cookie": pair})[0] == 200
    forged = pair.split("=")[0] + "=" + "0" * 64
    assert request(auth_server, "GET", "/api/reports", {"Cookie": forged})[0] == 401
    status, headers, _ = request(auth_server, "POST", "/logout", {"Cookie": pair})
    assert status == 303 and "max-age=0" in headers["set-cookie"].lower()


# --- CLI -------------------------------------------------------------------------------------
def test_serve_defaults_bind_loopback(monkeypatch):
    from otel_perfmon.cli import build_parser

    for name in ("OTEL_PERFMON_VIEWER_HOST", "OTEL_PERFMON_VIEWER_PORT", "OTEL_PERFMON_VIEWER_AUTH_TOKEN",
                 "OTEL_PERFMON_VIEWER_TRACE_URL_TEMPLATE"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.auth_token, args.trace_url_template) == ("127.0.0.1", 8484, None, None)
    monkeypatch.setenv("OTEL_PERFMON_VIEWER_PORT", "9000")
    monkeypatch.setenv("OTEL_PERFMON_VIEWER_HOST", "0.0.0.0")
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == ("0.0.0.0", 9000)
    monkeypatch.setenv("OTEL_PERFMON_VIEWER_PORT", "not-a-port")
    assert build_parser().parse_args(["serve"]).port == 8484
    assert build_parser().parse_args(["list"]).command == "list"


def test_serve_options_one_rule_each(monkeypatch, capsys):
    import otel_perfmon.viewer.server as server_module
    from otel_perfmon.cli import build_parser

    for name in ("OTEL_PERFMON_VIEWER_HOST", "OTEL_PERFMON_VIEWER_PORT", "OTEL_PERFMON_VIEWER_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port) == (server_module.DEFAULT_HOST, server_module.DEFAULT_PORT)
    assert build_parser().parse_args(["serve", "--port", "9001"]).port == 9001
    for bad in ("0", "65536", "http"):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["serve", "--port", bad])
        assert exit_info.value.code == 2 and "port" in capsys.readouterr().err
        monkeypatch.setenv("OTEL_PERFMON_VIEWER_PORT", bad)  # the same rule for the variable: default
        assert build_parser().parse_args(["serve"]).port == server_module.DEFAULT_PORT
    monkeypatch.setenv("OTEL_PERFMON_VIEWER_AUTH_TOKEN", "  ")
    assert build_parser().parse_args(["serve"]).auth_token is None
    assert build_parser().parse_args(["serve", "--auth-token", " t "]).auth_token == "t"


def test_trace_url_template_validation():
    from otel_perfmon.viewer.app import trace_url, validate_trace_url_template

    with pytest.raises(ValueError):
        validate_trace_url_template("javascript:alert(1)//{trace_id}")
    with pytest.raises(ValueError):
        validate_trace_url_template("https://tempo.example/no-placeholder")
    grafana = 'https://g.example/explore?left={"queries":[{"query":"{trace_id}"}]}'
    assert validate_trace_url_template(grafana) == grafana
    assert trace_url(grafana, {"trace_id": "ab" * 16}) == grafana.replace("{trace_id}", "ab" * 16)
    assert trace_url(grafana, {"trace_id": "<script>"}) is None


def test_malformed_report_still_renders(server, dataset):
    path = os.path.join(dataset["dir"], "weird-report-0001.json")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump({"report_id": "something-else", "http": "GET /", "headers": ["x"], "duration_ms": "slow",
                   "host": None, "profile": {"hotspots": [{"self_ms": "x", "function": EVIL}, 3]},
                   "trace_id": "javascript:alert(1)"}, handle)
    try:
        status, _, body = request(server, "GET", "/reports/weird-report-0001")
        assert status == 200 and b"<script>" not in body and b"javascript:alert" in body
        assert b'href="javascript:' not in body
        assert request(server, "GET", "/api/reports/weird-report-0001")[0] == 200
        assert request(server, "GET", "/reports/weird-report-0001/download")[0] == 200
    finally:
        os.unlink(path)


# --- index -----------------------------------------------------------------------------------
def test_a_remote_store_is_synced_in_the_background_so_a_query_never_waits_for_its_listing(tmp_path):
    """The mirror of a remote store: the first scan syncs inline, later refreshes start the
    sync on a thread and answer from the mirror meanwhile; what the sync brings shows next."""
    import threading

    from otel_perfmon.viewer.index import ReportIndex

    mirror = str(tmp_path / "mirror")
    first = write(make_report(mirror, BASE, with_session=False))
    release, calls = threading.Event(), []

    def sync() -> int:  # stands for ReportMirror.sync: the second call hangs until released and brings one report
        calls.append(threading.current_thread().name)
        if len(calls) == 2:  # later calls (each refresh starts one) find nothing new
            release.wait(30)
            write(make_report(mirror, BASE + 1, with_session=False))  # what the listing brought
        return 0

    index = ReportIndex(mirror, refresh_interval_seconds=0)
    index.attach_source(sync)
    assert [r.report_id for r in index.query().items] == [first.report_id]
    assert calls == [threading.current_thread().name]  # the first scan: inline
    answered = []
    asker = threading.Thread(target=lambda: answered.append(index.query().total))
    asker.start()
    asker.join(10)
    assert answered == [1]  # answered from the mirror while the sync hangs
    assert calls[1:] == ["otel-perfmon-viewer-sync"]
    assert len(index) == 1 and len(calls) == 2  # one sync at a time
    release.set()
    assert index.wait_for_sync(30)
    assert index.query().total == 2  # the next query scans what the sync brought


def test_index_parses_only_new_and_changed_files(tmp_path, monkeypatch):
    from otel_perfmon.viewer import index as index_module

    report_dir = str(tmp_path / "reports")
    reports = [write(make_report(report_dir, BASE + i, with_session=False)) for i in range(5)]
    (tmp_path / "reports" / "broken-report-1.json").write_text("{not json")
    (tmp_path / "reports" / "notes.txt").write_text("ignored")
    index = index_module.ReportIndex(report_dir, refresh_interval_seconds=0)
    parsed = []
    original = index._parse
    monkeypatch.setattr(index, "_parse", lambda path, *a: parsed.append(os.path.basename(path)) or original(path, *a))
    index.refresh(force=True)
    assert len(parsed) == 6 and len(index) == 5  # the broken file is skipped
    parsed.clear()
    index._dir_mtime_ns = None  # force a full scan even though the directory just changed
    index.refresh(force=True)
    assert parsed == []  # unchanged files (and the unchanged broken one) are not parsed again
    parsed.clear()
    data = json.loads(open(reports[0].json_path).read())
    data["duration_ms"] = 99999.0
    with open(reports[0].json_path, "w") as handle:
        json.dump(data, handle)
    os.utime(reports[0].json_path, ns=(1, 1))
    index._dir_mtime_ns = None  # an in-place edit does not touch the directory mtime
    index.refresh(force=True)
    assert f"{reports[0].report_id}.json" in parsed
    assert index.query(sort="duration").items[0].duration_ms == 99999.0
    page = index.query(index_module.ReportFilter(route="/items/*"), per_page=2, page=3)
    assert (page.total, page.page, page.pages, len(page.items)) == (5, 3, 3, 1)
