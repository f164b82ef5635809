"""Request parameters the app parsed reach the report scrubbed and capped (report/request.py):
Flask form and JSON in-process, FastAPI JSON body and form under real uvicorn."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import threading
import time
from types import SimpleNamespace

import pytest
from flask import Flask
from flask import request as flask_request

from conftest import free_port, read_reports, run_server, uvicorn_argv, wait_until
from otel_perfmon import configure_perfmon
from otel_perfmon.report.request import parameters_in_frames

SECRET = "hunter2-body-s3cret"
CARD = "4111 1111 1111 1111"


def busy(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(100))


@pytest.fixture
def flask_run(tmp_path):
    app = Flask("params")

    @app.post("/form")
    def form():
        flask_request.form.get("name")  # the app parses the form
        busy(0.25)
        return "ok"

    @app.post("/json")
    def json_route():
        flask_request.get_json()
        busy(0.25)
        return "ok"

    @app.post("/unread")
    def unread():  # never parses its body: nothing may be read for the report
        busy(0.25)
        return "ok"

    handles = []

    def start(**overrides):
        settings = dict(threshold_seconds=0.1, report_dir=str(tmp_path), dedup_store="memory", dedup_window_seconds=0)
        settings.update(overrides)
        handle = configure_perfmon(app=app, tracer_provider=_provider(), **settings)
        handles.append(handle)
        return handle, app.test_client()

    yield start, str(tmp_path)
    for handle in handles:
        handle.shutdown(timeout_seconds=2)


def _provider():
    from opentelemetry.sdk.trace import TracerProvider

    return TracerProvider()


def _only_report(path):
    (name,) = [n for n in os.listdir(path) if n.endswith(".json") and ".speedscope." not in n]
    with open(os.path.join(path, name), encoding="utf-8") as handle:
        return json.load(handle), name


def _no_secret_in(path):
    for name in os.listdir(path):
        with open(os.path.join(path, name), encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        assert SECRET not in text and "4111 1111" not in text, name


def test_flask_form_and_json_are_scrubbed(flask_run):
    start, path = flask_run
    perfmon, client = start()
    assert client.post("/form", data={"name": "Ada", "password": SECRET, "card": CARD, "note": CARD}).status_code == 200
    assert perfmon.force_flush(10)
    report, name = _only_report(path)
    assert report["request"]["form"] == {"name": "Ada", "password": "[REDACTED]", "card": "[REDACTED]",
                                         "note": "[REDACTED]"}
    assert report["request"]["content_type"] == "application/x-www-form-urlencoded"
    os.remove(os.path.join(path, name))
    assert client.post("/json", json={"user": {"name": "Ada", "api_token": SECRET}, "items": [1, 2]}).status_code == 200
    assert perfmon.force_flush(10)
    report, _ = _only_report(path)
    assert report["request"]["json"] == {"user": {"name": "Ada", "api_token": "[REDACTED]"}, "items": [1, 2]}
    md = open(os.path.join(path, report["report_id"] + ".md"), encoding="utf-8").read()
    assert "Request parameters" in md and "Ada" in md
    _no_secret_in(path)


def test_a_body_the_app_did_not_read_is_not_read(flask_run):
    start, path = flask_run
    perfmon, client = start()
    assert client.post("/unread", data={"name": "Ada"}).status_code == 200
    assert perfmon.force_flush(10)
    report, _ = _only_report(path)
    assert "form" not in report["request"] and "json" not in report["request"]


def test_small_level_caps_the_size(flask_run):
    start, path = flask_run
    perfmon, client = start(capture_request_body="small")
    assert client.post("/json", json={"blob": ["x" * 900] * 5}).status_code == 200
    assert perfmon.force_flush(10)
    report, _ = _only_report(path)
    assert report["request"]["truncated"] == ["json"] and "json" not in report["request"]


def test_never_captures_nothing(flask_run):
    start, path = flask_run
    perfmon, client = start(capture_request_body="never")
    assert client.post("/form", data={"name": "Ada"}).status_code == 200
    assert perfmon.force_flush(10)
    report, _ = _only_report(path)
    assert "request" not in report


def test_multipart_gives_file_names_only():
    import io

    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request

    builder = EnvironBuilder(method="POST", data={"comment": SECRET, "upload": (io.BytesIO(b"\x89PNG..."), "cat.png")})
    request = Request(builder.get_environ())
    assert request.form is not None and request.files is not None  # parsed by the app
    found = parameters_in_frames([SimpleNamespace(f_locals={"request": request})], "medium")
    assert [(f["field"], f["filename"]) for f in found["files"]] == [("upload", "cat.png")]
    assert "form" not in found and SECRET not in json.dumps(found)
    assert found["content_type"] == "multipart/form-data"


def test_fastapi_json_body_and_form_under_uvicorn(workdir):
    port = free_port()
    env = {"OTEL_PERFMON_THRESHOLD_SECONDS": "0.2", "OTEL_PERFMON_REPORT_DIR": workdir["reports"],
           "OTEL_PERFMON_DEDUP_WINDOW_SECONDS": "0"}
    with upstream_server() as upstream, \
            run_server(uvicorn_argv("params_fastapi_app:app", port), dict(env, EXAMPLE_UPSTREAM_URL=upstream), port,
                       workdir["log"], cwd=os.path.dirname(__file__)) as server:
        import requests

        body = {"name": "Ada", "password": SECRET, "tags": ["a", "b"]}
        for route in ("/orders", "/sync-orders", "/enrich"):
            assert requests.post(server.url(route), json=body, timeout=30).status_code == 200
        reports = wait_until(lambda: len(read_reports(workdir["reports"])) >= 3 and read_reports(workdir["reports"]),
                             30, message="three reports")
    by_route = {r["http"]["route"]: r for r in reports}
    for route in ("/orders", "/sync-orders", "/enrich"):
        assert by_route[route]["request"]["json"] == {"name": "Ada", "password": "[REDACTED]", "tags": ["a", "b"]}
    calls = [row for row in by_route["/enrich"]["spans"] if row.get("http_method") == "GET"]
    assert len(calls) == 12 and all(row["kind"] == "client" for row in calls)
    assert calls[0]["url_template"] == f"{upstream}/items/{{id}}"
    assert "api_key=%5BREDACTED%5D" in calls[0]["url"] or "api_key=[REDACTED]" in calls[0]["url"]
    (finding,) = by_route["/enrich"]["n_plus_one"]
    assert finding["kind"] == "http" and finding["count"] == 12 and finding["url"] == f"{upstream}/items/{{id}}"
    _no_secret_in(workdir["reports"])


@contextlib.contextmanager
def upstream_server():
    """A loopback HTTP server answering every GET with 200 (the app's upstream)."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
