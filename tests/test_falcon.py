"""End to end: examples/falcon_app.py (OTel's FalconInstrumentor) under real gunicorn over real HTTP.

Falcon is not special-cased anywhere in otel-perfmon: its instrumentor makes local-root SERVER
spans with the HTTP attributes the processor reads (docs/frameworks.md), so it works as is.
"""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("falcon")
pytest.importorskip("opentelemetry.instrumentation.falcon")

import jsonschema  # noqa: E402

from conftest import free_port, gunicorn_argv, http_get, read_reports, read_spans, run_server, wait_until  # noqa: E402
from otel_perfmon import attributes as attr  # noqa: E402
from otel_perfmon.dedup import fingerprint  # noqa: E402

SCHEMA = json.load(open(os.path.join(os.path.dirname(__file__), "..", "src", "otel_perfmon", "report",
                                     "schema.json"), encoding="utf-8"))

THRESHOLD = 0.25
SLOW = 0.9
SERVICE = "shop-falcon"


def reports_in(report_dir):
    """The report JSON files (not the other ``*.json`` renderings, e.g. speedscope profiles)."""
    return [r for r in read_reports(report_dir) if "schema_version" in r]


def test_falcon_server_spans_get_reports(workdir):
    env = {"OTEL_PERFMON_THRESHOLD_SECONDS": str(THRESHOLD), "EXAMPLE_SLOW_SECONDS": str(SLOW),
           "OTEL_PERFMON_REPORT_DIR": workdir["reports"], "EXAMPLE_SPAN_DIR": workdir["spans"],
           "OTEL_SERVICE_NAME": SERVICE, "OTEL_SEMCONV_STABILITY_OPT_IN": ""}
    port = free_port()
    with run_server(gunicorn_argv("falcon_app:app", port), env, port, workdir["log"]) as server:
        for path in ("/fast", "/cpu", "/io", "/items/3?q=shoes", "/items/2"):
            status, _ = http_get(server.url(path), headers={"Authorization": "Bearer s3cret", "X-Request-ID": "f-1"})
            assert status == 200, path
        wait_until(lambda: len(reports_in(workdir["reports"])) >= 3, 30, message="three reports")
        wait_until(lambda: len([s for s in read_spans(workdir["spans"]) if s["kind"] == "SpanKind.SERVER"
                                and s["name"] != "GET /health"]) >= 5, 30, message="the server spans")
    reports = {r["http"]["route"]: r for r in reports_in(workdir["reports"])}
    assert set(reports) == {"/cpu", "/io", "/items/{item_id:int}"}
    spans = [s for s in read_spans(workdir["spans"]) if s["kind"] == "SpanKind.SERVER"]
    by_target = {s["attributes"]["http.target"]: s for s in spans}
    for path in ("/fast", "/items/2"):  # fast requests: no perfmon.* attribute, no report
        assert not [k for k in by_target[path]["attributes"] if k.startswith("perfmon.")]
    for path, route in (("/cpu", "/cpu"), ("/io", "/io"), ("/items/3?q=shoes", "/items/{item_id:int}")):
        span, report = by_target[path], reports[route]
        jsonschema.validate(report, SCHEMA)
        assert span["attributes"][attr.PERFMON_SLOW] is True
        assert span["attributes"][attr.PERFMON_REPORT_ID] == report["report_id"]
        assert (report["trace_id"], report["span_id"]) == (span["context"]["trace_id"][2:],
                                                           span["context"]["span_id"][2:])
        assert report["span_name"] == span["name"] == f"GET {route}"
        assert report["fingerprint"] == fingerprint(SERVICE, "GET", route)
        assert report["headers"]["authorization"] == "[REDACTED]" and report["headers"]["x-request-id"] == "f-1"
        assert report["duration_ms"] >= SLOW * 1000 * 0.95
    assert reports["/items/{item_id:int}"]["http"]["path"] == "/items/3"
    assert reports["/items/{item_id:int}"]["http"]["query"] == "q=shoes"
    cpu = reports["/cpu"]["profile"]
    assert "Cpu.on_get" in cpu["call_tree_text"] or "on_get" in cpu["call_tree_text"]
    assert "build_invoice" in cpu["call_tree_text"] and cpu["coverage"] >= 0.9, cpu
    assert "load_from_slow_backend" in reports["/io"]["profile"]["call_tree_text"]
