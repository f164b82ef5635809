"""Test helpers for the notifier exporters: a recording loopback HTTP server, an SMTP
server (aiosmtpd), synthetic reports with real files, and a slow Flask app wired to perfmon."""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from otel_perfmon.cli.test_notifiers import synthetic_report

HANG = "hang"


class Recorded:
    """One request the server received."""

    def __init__(self, method: str, path: str, headers: Dict[str, str], body: bytes) -> None:
        self.method, self.path, self.headers, self.body = method, path, headers, body

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    def header(self, name: str) -> Optional[str]:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


Responder = Callable[[int, Recorded], Any]


class RecordingServer:
    """A ThreadingHTTPServer on 127.0.0.1 that records every request.

    ``respond(index, request)`` returns ``status``, ``(status, body)``,
    ``(status, body, headers)`` or :data:`HANG` (never answer until the server stops).
    """

    def __init__(self, respond: Optional[Responder] = None) -> None:
        self.requests: List[Recorded] = []
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.respond: Responder = respond or (lambda index, request: 200)
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                request = Recorded("POST", self.path, dict(self.headers.items()), body)
                with outer._lock:
                    index = len(outer.requests)
                    outer.requests.append(request)
                answer = outer.respond(index, request)
                if answer == HANG:
                    outer._release.wait(60)
                    self.close_connection = True
                    return
                if isinstance(answer, int):
                    answer = (answer,)
                status = answer[0]
                payload = answer[1] if len(answer) > 1 else b"ok"
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    payload = payload.encode()
                extra = answer[2] if len(answer) > 2 else {}
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def received(self, path: Optional[str] = None) -> List[Recorded]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    def __enter__(self) -> RecordingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


def make_report(tmp_path: Any, route: str = "/items/<int:item_id>", method: str = "GET",
                url: Optional[str] = None, **changes: Any) -> Any:
    """A synthetic Report whose json/html/md files exist under ``tmp_path/reports``."""
    report = synthetic_report(str(tmp_path / "reports"), 1000.0, url=url)
    report = report.replace(route=route, method=method, **changes)
    from otel_perfmon.report.render import write_report_files

    write_report_files(report)
    return report


@contextmanager
def smtp_server(**controller_options: Any) -> Iterator[Tuple[Any, List[Any]]]:
    """An aiosmtpd server on a free loopback port; yields (controller, envelopes)."""
    from aiosmtpd.controller import Controller

    from conftest import free_port

    envelopes: List[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            envelopes.append(envelope)
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=free_port(), **controller_options)
    controller.start()
    try:
        yield controller, envelopes
    finally:
        controller.stop()


def slow_flask_app(sleep_seconds: float = 0.3):
    """A Flask app with ``/slow`` (sleeps), ``/slow/<name>`` and ``/fast``."""
    from flask import Flask

    app = Flask("notify_test_app")

    @app.get("/slow")
    def slow() -> str:
        time.sleep(sleep_seconds)
        return "slow"

    @app.get("/fast")
    def fast() -> str:
        return "fast"

    return app


@contextmanager
def perfmon_app(tmp_path: Any, exporters: List[Any], **overrides: Any) -> Iterator[Tuple[Any, Any, Any]]:
    """(perfmon handle, Flask test client, report dir) with a fresh TracerProvider; the handle
    is shut down (1 s budget) on exit."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from otel_perfmon import configure_perfmon

    provider = TracerProvider(resource=Resource.create({"service.name": "notify-test"}))
    app = slow_flask_app()
    options = dict(threshold_seconds=0.15, report_dir=str(tmp_path / "reports"), dedup_store="memory",
                   exporters=exporters)
    options.update(overrides)
    perfmon = configure_perfmon(app=app, tracer_provider=provider, **options)
    try:
        yield perfmon, app.test_client(), perfmon.report_dir
    finally:
        perfmon.shutdown(timeout_seconds=1)
        provider.shutdown()


def report_files(report_dir: str) -> List[str]:
    try:
        # a report's three files: <id>.json/.html/.md (ids have no dot; <id>.speedscope.json is its flame graph)
        return sorted(n for n in os.listdir(report_dir)
                      if n.endswith((".json", ".html", ".md")) and "." not in n.rsplit(".", 1)[0])
    except FileNotFoundError:
        return []
