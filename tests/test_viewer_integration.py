"""The viewer with real apps: a slow span's ``perfmon.report.url`` opens its report page, and the
viewer mounted inside a Starlette (ASGI) and a Flask (WSGI, a2wsgi) app under real servers."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

pytest.importorskip("starlette")
pytest.importorskip("a2wsgi")

from conftest import (  # noqa: E402
    BIN,
    ROOT,
    free_port,
    gunicorn_argv,
    http_get,
    read_reports,
    read_spans,
    run_server,
    uvicorn_argv,
    wait_until,
)
from test_viewer import TOKEN, request, serve_argv  # noqa: E402
from viewer_reports import make_report, write  # noqa: E402


def test_slow_span_report_url_opens_the_report_page(workdir):
    viewer_port, app_port = free_port(), free_port()
    os.makedirs(workdir["reports"], mode=0o700)
    template = f"http://127.0.0.1:{viewer_port}/reports/{{report_id}}"
    env = {"OTEL_PERFMON_THRESHOLD_SECONDS": "0.2", "EXAMPLE_SLOW_SECONDS": "0.4",
           "OTEL_PERFMON_REPORT_DIR": workdir["reports"], "EXAMPLE_SPAN_DIR": workdir["spans"],
           "OTEL_PERFMON_REPORT_URL_TEMPLATE": template, "OTEL_SERVICE_NAME": "shop-flask"}
    with run_server(serve_argv(workdir["reports"], viewer_port, "--trace-url-template",
                               "http://127.0.0.1:16686/trace/{trace_id}"), {}, viewer_port,
                    os.path.join(workdir["root"], "viewer.log"), cwd=ROOT, health_path="/healthz") as viewer:
        with run_server(gunicorn_argv("flask_app:app", app_port, workers=1), env, app_port, workdir["log"]):
            assert http_get(f"http://127.0.0.1:{app_port}/cpu")[0] == 200
            wait_until(lambda: read_reports(workdir["reports"]), 30, message="a report")
            spans = wait_until(lambda: [s for s in read_spans(workdir["spans"])
                                        if s["attributes"].get("perfmon.report.url")], 30, message="linked span")
        url = spans[0]["attributes"]["perfmon.report.url"]
        assert url.startswith(viewer.url("/reports/"))
        status, body = http_get(url)
        page = body.decode()
        assert status == 200 and "/cpu" in page
        trace_id = spans[0]["context"]["trace_id"][2:]
        assert f'href="http://127.0.0.1:16686/trace/{trace_id}"' in page
        data = json.loads(http_get(viewer.url("/api/reports"))[1])
        assert data["total"] == 1 and data["reports"][0]["route"] == "/cpu"  # listed once its page was seen
        # the count comes from the app's SQLite dedup store, re-read at the next refresh (<= 2 s)
        wait_until(lambda: json.loads(http_get(viewer.url("/api/reports"))[1])["reports"][0]["occurrences"] == 1,
                   10, 0.2, "occurrence count")


ASGI_APP = textwrap.dedent('''
    import os
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route
    from otel_perfmon.viewer import create_app

    async def health(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/health", health),
                            Mount("/perfmon", app=create_app(os.environ["VIEWER_REPORT_DIR"]))])
''')

WSGI_APP = textwrap.dedent('''
    import os
    from flask import Flask
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    from otel_perfmon.viewer import create_wsgi_app

    app = Flask(__name__)

    @app.get("/health")
    def health():
        return "ok"

    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, {
        "/perfmon": create_wsgi_app(os.environ["VIEWER_REPORT_DIR"], auth_token=os.environ["VIEWER_TOKEN"])})
''')


@pytest.fixture
def mounted_reports(workdir):
    reports = [write(make_report(workdir["reports"], 1_795_000_000.0 + i * 60, with_session=(i == 0)))
               for i in range(3)]
    return workdir, reports


def _write_module(workdir, name, source):
    with open(os.path.join(workdir["root"], name + ".py"), "w", encoding="utf-8") as handle:
        handle.write(source)


def test_mounted_in_a_starlette_app(mounted_reports):
    workdir, reports = mounted_reports
    _write_module(workdir, "asgi_host", ASGI_APP)
    port = free_port()
    rid = reports[0].report_id
    with run_server(uvicorn_argv("asgi_host:app", port, ["--app-dir", workdir["root"]]),
                    {"VIEWER_REPORT_DIR": workdir["reports"]}, port, workdir["log"], cwd=workdir["root"]) as srv:
        status, _, body = request(srv, "GET", "/perfmon/reports")
        page = body.decode()
        assert status == 200 and f'href="/perfmon/reports/{rid}"' in page
        assert 'href="/perfmon/static/viewer.css"' in page
        status, _, body = request(srv, "GET", f"/perfmon/reports/{rid}")
        assert status == 200 and f'src="/perfmon/reports/{rid}/tree"' in body.decode()
        assert request(srv, "GET", f"/perfmon/reports/{rid}/tree")[0] == 200
        assert request(srv, "GET", "/perfmon/static/viewer.css")[0] == 200
        data = json.loads(request(srv, "GET", "/perfmon/api/reports")[2])
        assert data["total"] == 3 and data["reports"][0]["url"].startswith("/perfmon/reports/")
        assert request(srv, "GET", "/perfmon/reports/..%2F..%2Fetc%2Fpasswd")[0] == 404
        assert request(srv, "GET", "/perfmon/")[1].get("location") == "/perfmon/reports"


def test_mounted_in_a_flask_app_with_auth(mounted_reports):
    workdir, reports = mounted_reports
    _write_module(workdir, "wsgi_host", WSGI_APP)
    port = free_port()
    rid = reports[1].report_id
    env = {"VIEWER_REPORT_DIR": workdir["reports"], "VIEWER_TOKEN": TOKEN}
    argv = [os.path.join(BIN, "gunicorn"), "-w", "1", "-b", f"127.0.0.1:{port}", "--chdir", workdir["root"],
            "--log-level", "warning", "wsgi_host:app"]
    with run_server(argv, env, port, workdir["log"], cwd=workdir["root"]) as srv:
        status, headers, _ = request(srv, "GET", f"/perfmon/reports/{rid}", {"Accept": "text/html"})
        assert status == 303 and headers["location"].startswith("/perfmon/login?next=")
        assert request(srv, "GET", "/perfmon/api/reports")[0] == 401
        ok = request(srv, "GET", "/perfmon/api/reports", {"Authorization": f"Bearer {TOKEN}"})
        assert ok[0] == 200 and json.loads(ok[2])["total"] == 3
        status, headers, _ = request(srv, "POST", "/perfmon/login",
                                     {"Content-Type": "application/x-www-form-urlencoded"},
                                     f"token={TOKEN}&next=%2Freports%2F{rid}".encode())
        assert status == 303 and headers["location"] == f"/perfmon/reports/{rid}"
        assert "Path=/perfmon" in headers["set-cookie"]
        cookie = headers["set-cookie"].split(";")[0]
        status, _, body = request(srv, "GET", f"/perfmon/reports/{rid}", {"Cookie": cookie})
        assert status == 200 and reports[1].trace_id in body.decode()
        assert request(srv, "GET", "/health")[0] == 200  # the host app is untouched
