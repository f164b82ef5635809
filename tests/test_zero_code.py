"""Zero code: ``opentelemetry-instrument`` on apps that never import otel_perfmon, checked on the wire.

Each test starts a real server (gunicorn / uvicorn / ``python app.py``) under the launcher with
the real OTLP/HTTP exporters pointed at a loopback receiver that decodes the protobuf bodies.
"""

from __future__ import annotations

import os

import pytest

from conftest import BIN, free_port, gunicorn_argv, http_get, read_reports, run_server, uvicorn_argv, wait_until
from otel_perfmon import attributes as attr
from otel_perfmon.exporters import otlp
from otel_perfmon.metrics import PREFIX, SLOW_SPAN_DURATION
from otlp_receiver import OtlpReceiver

APPS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps")
LAUNCHER = os.path.join(BIN, "opentelemetry-instrument")
THRESHOLD = 0.25
SLOW = 0.6
SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER


def zero_code_env(workdir, receiver, service, **extra):
    env = {
        "OTEL_SERVICE_NAME": service,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_BLRP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "OTEL_PERFMON_THRESHOLD_SECONDS": str(THRESHOLD),
        "OTEL_PERFMON_REPORT_DIR": workdir["reports"],
        "OTEL_PERFMON_EXPORTERS": "otlp",
        "APP_SLOW_SECONDS": str(SLOW),
        "OTEL_SEMCONV_STABILITY_OPT_IN": "",
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "",
    }
    env.update(extra)
    return env


def server_spans(receiver):
    return [s for s in receiver.spans() if s["kind"] == SERVER_KIND and s["name"] != "GET /health"]


def spans_for(receiver, path):
    return [s for s in server_spans(receiver)
            if s["attributes"].get("http.target", s["attributes"].get("url.path", "")).split("?")[0] == path]


def request_all(server, paths):
    for path in paths:
        status, _ = http_get(server.url(path))
        assert status == 200, path


def check_linked(receiver, workdir, service, slow_paths, fast_paths, route_of):
    """Reports match the slow spans on the wire; fast spans carry nothing; events link back."""
    reports = wait_until(lambda: (lambda r: r if len(r) >= len(slow_paths) else None)(read_reports(workdir["reports"])),
                         30, message="the reports")
    by_id = {r["report_id"]: r for r in reports}
    assert len(by_id) == len(slow_paths)
    for path in slow_paths:
        spans = wait_until(lambda path=path: spans_for(receiver, path), 20, message=f"the span of {path}")
        assert len(spans) == 1
        span = spans[0]
        attributes = span["attributes"]
        assert attributes[attr.PERFMON_SLOW] is True  # a real OTLP bool, not a string
        report_id = attributes[attr.PERFMON_REPORT_ID]
        assert isinstance(report_id, str) and report_id in by_id
        report = by_id[report_id]
        assert (report["trace_id"], report["span_id"]) == (span["trace_id"], span["span_id"])
        assert report["http"]["route"] == route_of[path]
        assert report["http"]["method"] == "GET"
        assert report["http"]["path"] == path
        assert report["http"]["status_code"] == 200
        assert report["duration_ms"] >= SLOW * 1000 * 0.9
        assert report["threshold_ms"] == THRESHOLD * 1000
        assert span["resource"]["service.name"] == service == report["service_name"]
    for path in fast_paths:
        spans = wait_until(lambda path=path: spans_for(receiver, path), 20, message=f"the span of {path}")
        for span in spans:
            assert not set(attr.ALL) & set(span["attributes"]), span["attributes"]
    # the otlp exporter: one perfmon.report event per report, on the slow span's trace and span ids
    events = wait_until(lambda: (lambda e: e if len(e) >= len(slow_paths) else None)(
        [r for r in receiver.logs() if r["event_name"] == otlp.EVENT_NAME]), 20, message="the report events")
    assert len(events) == len(slow_paths)
    for event in events:
        report = by_id[event["attributes"][attr.PERFMON_REPORT_ID]]
        assert (event["trace_id"], event["span_id"]) == (report["trace_id"], report["span_id"])
        assert event["attributes"]["http.route"] == report["http"]["route"]
        assert event["attributes"]["http.request.method"] == "GET"
        assert event["attributes"][otlp.ATTR_DURATION_MS] == pytest.approx(report["duration_ms"])
        assert event["attributes"][otlp.ATTR_THRESHOLD_MS] == THRESHOLD * 1000
        assert event["attributes"][otlp.ATTR_REPORT_FILE].endswith(report_id_html(report))
        assert event["resource"]["service.name"] == service
        assert event["scope"] == otlp.SCOPE_NAME
    return by_id


def report_id_html(report):
    return report["report_id"] + ".html"


def check_metrics(receiver, slow_routes):
    def ready():
        points = receiver.metric_points()
        slow = [p["value"] for p in points if p["name"] == PREFIX + "slow_spans"]
        routes = {p["attributes"].get("http.route") for p in points if p["name"] == SLOW_SPAN_DURATION}
        return points if slow and max(slow) >= len(slow_routes) and set(slow_routes) <= routes else None

    points = wait_until(ready, 20, message="the perfmon.* metrics")
    names = {p["name"] for p in points}
    assert {PREFIX + "spans_started", PREFIX + "reports_created", SLOW_SPAN_DURATION} <= names
    histogram = [p for p in points if p["name"] == SLOW_SPAN_DURATION]
    assert all(p["kind"] == "histogram" and p["unit"] == "ms" for p in histogram)
    assert max(p["value"]["sum"] / p["value"]["count"] for p in histogram) >= SLOW * 1000 * 0.9


def test_flask_under_gunicorn_default_semconv(workdir):
    port = free_port()
    with OtlpReceiver() as receiver:
        # metrics are checked under uvicorn: the SDK's PeriodicExportingMetricReader can hang in a
        # gunicorn worker forked while the master was exporting (its export lock is not reset).
        env = zero_code_env(workdir, receiver, "zc-flask", OTEL_METRICS_EXPORTER="none",
                            OTEL_PERFMON_REPORT_URL_TEMPLATE="https://perf.example.com/r/{report_id}")
        argv = [LAUNCHER, *gunicorn_argv("flask_plain:app", port, workers=2)]
        with run_server(argv, env, port, workdir["log"], cwd=APPS) as server:
            request_all(server, ["/slow", "/fast", "/items/7?q=shoes", "/items/2"])
            by_id = check_linked(receiver, workdir, "zc-flask", ["/slow", "/items/7"], ["/fast", "/items/2"],
                                 {"/slow": "/slow", "/items/7": "/items/<int:item_id>"})
    slow = spans_for(receiver, "/slow")[0]["attributes"]
    assert slow["http.method"] == "GET" and "http.request.method" not in slow  # old conventions
    assert slow[attr.PERFMON_REPORT_URL] == f"https://perf.example.com/r/{slow[attr.PERFMON_REPORT_ID]}"
    event = next(e for e in receiver.logs()
                 if e["attributes"].get(attr.PERFMON_REPORT_ID) == slow[attr.PERFMON_REPORT_ID])
    assert event["attributes"][attr.PERFMON_REPORT_URL] == slow[attr.PERFMON_REPORT_URL]
    assert by_id[slow[attr.PERFMON_REPORT_ID]]["http"]["query"] == ""
    assert next(r for r in by_id.values() if r["http"]["path"] == "/items/7")["http"]["query"] == "q=shoes"


def test_fastapi_under_uvicorn_stable_http_semconv(workdir):
    port = free_port()
    with OtlpReceiver() as receiver:
        env = zero_code_env(workdir, receiver, "zc-fastapi", OTEL_SEMCONV_STABILITY_OPT_IN="http")
        argv = [LAUNCHER, *uvicorn_argv("fastapi_plain:app", port)]
        with run_server(argv, env, port, workdir["log"], cwd=APPS) as server:
            request_all(server, ["/slow", "/fast", "/items/7?q=shoes", "/items/2"])
            by_id = check_linked(receiver, workdir, "zc-fastapi", ["/slow", "/items/7"], ["/fast", "/items/2"],
                                 {"/slow": "/slow", "/items/7": "/items/{item_id}"})
            check_metrics(receiver, ["/slow", "/items/{item_id}"])
    slow = spans_for(receiver, "/items/7")[0]["attributes"]
    assert slow["http.request.method"] == "GET" and "http.method" not in slow  # stable conventions only
    report = by_id[slow[attr.PERFMON_REPORT_ID]]
    assert report["http"]["query"] == "q=shoes"


def test_python_app_py_dup_semconv(workdir):
    port = free_port()
    with OtlpReceiver() as receiver:
        env = zero_code_env(workdir, receiver, "zc-plain", OTEL_SEMCONV_STABILITY_OPT_IN="http/dup",
                            OTEL_METRICS_EXPORTER="none", APP_PORT=str(port))
        argv = [LAUNCHER, os.path.join(BIN, "python"), "flask_plain.py"]
        with run_server(argv, env, port, workdir["log"], cwd=APPS) as server:
            request_all(server, ["/items/9?q=x", "/fast"])
            by_id = check_linked(receiver, workdir, "zc-plain", ["/items/9"], ["/fast"],
                                 {"/items/9": "/items/<int:item_id>"})
    slow = spans_for(receiver, "/items/9")[0]["attributes"]
    assert slow["http.method"] == slow["http.request.method"] == "GET"  # both sets present
    assert list(by_id.values())[0]["http"]["query"] == "q=x"


def test_disabled_by_otel_python_disabled_instrumentations(workdir):
    port = free_port()
    with OtlpReceiver() as receiver:
        env = zero_code_env(workdir, receiver, "zc-off", OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="perfmon",
                            OTEL_METRICS_EXPORTER="none")
        argv = [LAUNCHER, *uvicorn_argv("fastapi_plain:app", port)]
        with run_server(argv, env, port, workdir["log"], cwd=APPS) as server:
            request_all(server, ["/slow", "/fast"])
            spans = wait_until(lambda: spans_for(receiver, "/slow"), 20, message="the slow span")
            wait_until(lambda: spans_for(receiver, "/fast"), 20, message="the fast span")
    # the app is still traced (the FastAPI instrumentor ran), but perfmon did nothing.
    assert all(not set(attr.ALL) & set(s["attributes"]) for s in server_spans(receiver))
    assert spans[0]["resource"]["service.name"] == "zc-off"
    assert not os.path.exists(workdir["reports"]) or not read_reports(workdir["reports"])
    assert not [r for r in receiver.logs() if r["event_name"] == otlp.EVENT_NAME]


# ---------------------------------------------------------------------- in-process, fast
def test_entry_point_and_no_instruments_extra():
    from importlib.metadata import entry_points, metadata

    from otel_perfmon.instrumentation import PerfmonInstrumentor

    try:
        eps = {ep.name: ep for ep in entry_points(group="opentelemetry_instrumentor")}
    except TypeError:  # Python 3.9
        eps = {ep.name: ep for ep in entry_points().get("opentelemetry_instrumentor", [])}
    assert eps["perfmon"].value == "otel_perfmon.instrumentation:PerfmonInstrumentor"
    assert eps["perfmon"].load() is PerfmonInstrumentor
    assert list(PerfmonInstrumentor().instrumentation_dependencies()) == []
    extras = set(metadata("otel-perfmon").get_all("Provides-Extra") or [])
    assert {"flask", "fastapi", "redis", "apprise", "viewer", "test", "all"} <= extras
    assert "instruments" not in extras and "instruments-any" not in extras


def test_instrument_never_raises_into_the_launcher(monkeypatch, caplog):
    import otel_perfmon.api
    from otel_perfmon.instrumentation import PerfmonInstrumentor

    def broken(**_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(otel_perfmon.api, "configure_perfmon", broken)
    instrumentor = PerfmonInstrumentor()
    instrumentor._instrument()  # what BaseInstrumentor.instrument() calls
    assert PerfmonInstrumentor.handle is None
    assert "zero-code set-up failed" in caplog.text
    instrumentor._uninstrument()  # nothing configured: a no-op


def test_report_event_of_a_request_right_before_shutdown_is_not_lost(workdir):
    """At exit, queued reports reach the app's LoggerProvider before the SDK shuts it down."""
    import signal

    port = free_port()
    with OtlpReceiver() as receiver:
        env = zero_code_env(workdir, receiver, "zc-exit", OTEL_METRICS_EXPORTER="none",
                            OTEL_BLRP_SCHEDULE_DELAY="5000", OTEL_BSP_SCHEDULE_DELAY="5000")
        # gunicorn workers exit through sys.exit on SIGTERM, so atexit handlers run (uvicorn
        # re-raises SIGTERM after its shutdown and the process dies without them).
        argv = [LAUNCHER, *gunicorn_argv("flask_plain:app", port, workers=1)]
        with run_server(argv, env, port, workdir["log"], cwd=APPS) as server:
            request_all(server, ["/slow"])
            os.kill(server.process.pid, signal.SIGTERM)
            server.process.wait(timeout=20)
        reports = read_reports(workdir["reports"])
        events = [r for r in receiver.logs() if r["event_name"] == otlp.EVENT_NAME]
    assert len(reports) == 1, server.log()
    assert [e["attributes"][attr.PERFMON_REPORT_ID] for e in events] == [reports[0]["report_id"]], server.log()
