"""The ``otlp`` exporter in-process: a report becomes a ``perfmon.report`` log record on the span's ids."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from conftest import free_port
from otel_perfmon import attributes as attr
from otel_perfmon.config import ConfigurationError
from otel_perfmon.exporters import ExportResult, otlp
from otel_perfmon.exporters.registry import available_exporters, build_exporters
from otlp_receiver import OtlpReceiver

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"


def fake_report(**changes):
    values = dict(
        report_id="20261122-110720-1ecb7f4e", fingerprint="abc123", trace_id=TRACE_ID, span_id=SPAN_ID,
        service_name="shop", span_name="GET /items/<int:item_id>", method="GET", route="/items/<int:item_id>",
        path="/items/7", query="q=1", status_code=200, duration_ms=612.25, threshold_ms=250.0, headers={},
        hotspots=[{"function": "load_rows", "file": "app/db.py", "line": 42, "self_ms": 580.0, "percent": 94.7},
                  {"function": "render", "file": "app/views.py", "line": 9, "self_ms": 20.0, "percent": 3.3}],
        url="https://perf.example.com/r/20261122-110720-1ecb7f4e",
        html_path="/var/perfmon/20261122-110720-1ecb7f4e.html")
    values.update(changes)
    return SimpleNamespace(**values)


def test_registered_by_name_with_options():
    assert "otlp" in available_exporters()
    exporter, = build_exporters([{"type": "otlp", "max_hotspots": 1}])
    assert isinstance(exporter, otlp.OtlpReportExporter)
    with pytest.raises(ConfigurationError, match="max_hotspots"):
        build_exporters([{"type": "otlp", "max_hotspots": -1}])
    with pytest.raises(ConfigurationError, match="timeout_seconds"):
        otlp.OtlpReportExporter(timeout_seconds=0)


def test_record_attributes():
    values = otlp.report_attributes(fake_report(), max_hotspots=1)
    assert values[attr.PERFMON_REPORT_ID] == "20261122-110720-1ecb7f4e"
    assert values[attr.PERFMON_REPORT_URL] == "https://perf.example.com/r/20261122-110720-1ecb7f4e"
    assert values["http.route"] == "/items/<int:item_id>" and values["http.request.method"] == "GET"
    assert values[otlp.ATTR_DURATION_MS] == 612.25 and values[otlp.ATTR_THRESHOLD_MS] == 250.0
    assert values[otlp.ATTR_HOTSPOTS] == ["load_rows (app/db.py:42) 580.0 ms 94.7%"]
    bare = otlp.report_attributes(fake_report(url=None, hotspots=[], method=None, status_code=None))
    assert attr.PERFMON_REPORT_URL not in bare and otlp.ATTR_HOTSPOTS not in bare
    assert "http.request.method" not in bare and bare[otlp.ATTR_REPORT_FILE].endswith(".html")


def test_through_an_explicit_logger_provider():
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    exporter = otlp.OtlpReportExporter(logger_provider=provider)
    assert exporter.export(fake_report()) is ExportResult.SUCCESS
    assert exporter.force_flush(timeout_seconds=2.0)
    record, = [r.log_record for r in memory.get_finished_logs()]
    assert record.event_name == otlp.EVENT_NAME
    assert (f"{record.trace_id:032x}", f"{record.span_id:016x}") == (TRACE_ID, SPAN_ID)
    assert record.attributes[attr.PERFMON_REPORT_ID] == "20261122-110720-1ecb7f4e"
    assert record.severity_text == "WARN" and "612.2 ms > 250.0 ms" in record.body
    exporter.shutdown()  # leaves the app's provider alone
    assert exporter.export(fake_report(report_id="20261122-110721-00000000")) is ExportResult.SUCCESS


def test_own_otlp_http_pipeline_on_the_wire():
    from opentelemetry._logs import get_logger_provider

    if otlp._is_real_provider(get_logger_provider()):
        pytest.skip("a global LoggerProvider is set in this process; the private pipeline is not used")
    with OtlpReceiver() as receiver:
        exporter = otlp.OtlpReportExporter(endpoint=f"{receiver.endpoint}/v1/logs", timeout_seconds=5)
        assert exporter.export(fake_report()) is ExportResult.SUCCESS  # synchronous: already received
        record, = receiver.logs()
        exporter.shutdown()
    assert record["event_name"] == otlp.EVENT_NAME
    assert (record["trace_id"], record["span_id"]) == (TRACE_ID, SPAN_ID)
    assert record["severity_number"] == 13  # WARN
    assert record["attributes"][attr.PERFMON_REPORT_ID] == "20261122-110720-1ecb7f4e"
    assert record["attributes"][otlp.ATTR_HOTSPOTS][0].startswith("load_rows (app/db.py:42)")
    assert record["scope"] == otlp.SCOPE_NAME


def test_own_pipeline_reports_failure_when_the_collector_is_down():
    from opentelemetry._logs import get_logger_provider

    if otlp._is_real_provider(get_logger_provider()):
        pytest.skip("a global LoggerProvider is set in this process; the private pipeline is not used")
    exporter = otlp.OtlpReportExporter(endpoint=f"http://127.0.0.1:{free_port()}/v1/logs", timeout_seconds=1)
    started = time.monotonic()
    assert exporter.export(fake_report()) is ExportResult.FAILURE
    assert time.monotonic() - started < 10
    exporter.shutdown()
