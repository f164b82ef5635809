"""webhook exporter against a loopback HTTP server: payload, headers, signature, retries,
configuration three ways, and failure reasons that never leak the URL."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from conftest import free_port
from notify_support import HANG, RecordingServer, make_report
from otel_perfmon import ConfigurationError, ExportResult
from otel_perfmon.exporters.registry import build_exporters, validate_exporter_specs
from otel_perfmon.exporters.webhook import WebhookExporter


def test_payload_shape_headers_and_signature_verifies(tmp_path):
    report = make_report(tmp_path, route="/items/<int:item_id>", url="https://perf.example.com/reports/x")
    with RecordingServer() as server:
        exporter = WebhookExporter(url=server.url("/in?x=1"), headers={"X-Team": "checkout"}, secret="k3y")
        assert exporter.export(report) is ExportResult.SUCCESS
        [request] = server.received()
    assert request.path == "/in?x=1"
    assert request.header("Content-Type").startswith("application/json")
    assert request.header("X-Team") == "checkout"
    body = request.json()
    assert body["schema_version"] == 1 and body["event"] == "perfmon.slow_request"
    assert body["report_id"] == report.report_id
    assert body["trace_id"] == report.trace_id and body["span_id"] == report.span_id
    assert body["http"]["route"] == "/items/<int:item_id>" and body["http"]["method"] == "GET"
    assert body["duration_ms"] == report.duration_ms and body["threshold_ms"] == 1000.0
    assert body["report_url"] == "https://perf.example.com/reports/x"
    assert body["hotspots"][0]["function"] == "synthetic_slow_query"
    assert "headers" not in body and "call_tree_text" not in json.dumps(body)
    expected = "sha256=" + hmac.new(b"k3y", request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.header("X-Perfmon-Signature"), expected)
    wrong = "sha256=" + hmac.new(b"other", request.body, hashlib.sha256).hexdigest()
    assert not hmac.compare_digest(request.header("X-Perfmon-Signature"), wrong)


def test_no_signature_header_without_secret(tmp_path):
    with RecordingServer() as server:
        assert WebhookExporter(url=server.url()).export(make_report(tmp_path)) is ExportResult.SUCCESS
        [request] = server.received()
    assert request.header("X-Perfmon-Signature") is None


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_statuses_are_retried_a_bounded_number_of_times(tmp_path, status):
    with RecordingServer(lambda i, r: (status, "busy")) as server:
        exporter = WebhookExporter(url=server.url("/secret-path"), max_retries=2, backoff_seconds=0.01,
                                   timeout_seconds=10)
        assert exporter.export(make_report(tmp_path)) is ExportResult.FAILURE
        assert len(server.received()) == 3
    assert f"HTTP {status}" in exporter.last_error and "3 attempts" in exporter.last_error
    assert "secret-path" not in exporter.last_error


def test_retry_then_success(tmp_path):
    with RecordingServer(lambda i, r: 502 if i < 2 else 200) as server:
        exporter = WebhookExporter(url=server.url(), max_retries=3, backoff_seconds=0.01)
        assert exporter.export(make_report(tmp_path)) is ExportResult.SUCCESS
        assert len(server.received()) == 3
    assert exporter.last_error is None


@pytest.mark.parametrize("status", [400, 401, 404, 410])
def test_client_errors_are_not_retried(tmp_path, status):
    with RecordingServer(lambda i, r: (status, "no_service")) as server:
        exporter = WebhookExporter(url=server.url(), max_retries=3, backoff_seconds=0.01)
        assert exporter.export(make_report(tmp_path)) is ExportResult.FAILURE
        assert len(server.received()) == 1
    assert exporter.last_error.startswith(f"HTTP {status} from 127.0.0.1:") and "no_service" in exporter.last_error


def test_redirect_is_not_followed(tmp_path):
    with RecordingServer(lambda i, r: (302, "", {"Location": "http://127.0.0.1:1/elsewhere"})) as server:
        exporter = WebhookExporter(url=server.url(), backoff_seconds=0.01)
        assert exporter.export(make_report(tmp_path)) is ExportResult.FAILURE
        assert len(server.received()) == 1
    assert "redirect" in exporter.last_error


def test_closed_port_fails_fast_without_leaking_the_url(tmp_path, caplog):
    exporter = WebhookExporter(url=f"http://127.0.0.1:{free_port()}/hooks/SECRETKEY", max_retries=2,
                               backoff_seconds=0.01, secret="hmac-secret")
    assert exporter.export(make_report(tmp_path)) is ExportResult.FAILURE
    assert "Connection refused" in exporter.last_error and "3 attempts" in exporter.last_error
    assert "SECRETKEY" not in exporter.last_error
    assert "SECRETKEY" not in caplog.text and "exporter webhook failed" in caplog.text


def test_hung_receiver_times_out_within_the_deadline(tmp_path):
    with RecordingServer(lambda i, r: HANG) as server:
        exporter = WebhookExporter(url=server.url(), timeout_seconds=0.5, max_retries=3, backoff_seconds=0.01)
        started = time.monotonic()
        assert exporter.export(make_report(tmp_path)) is ExportResult.FAILURE
        elapsed = time.monotonic() - started
        assert len(server.received()) == 1  # a read timeout is not retried (no duplicate post)
    assert elapsed < 5, elapsed
    assert "within the timeout" in exporter.last_error


def test_shutdown_interrupts_backoff(tmp_path):
    import threading

    with RecordingServer(lambda i, r: 500) as server:
        exporter = WebhookExporter(url=server.url(), max_retries=5, backoff_seconds=8, timeout_seconds=60)
        results = []
        thread = threading.Thread(target=lambda: results.append(exporter.export(make_report(tmp_path))))
        thread.start()
        from otel_perfmon.testing import wait_until

        wait_until(lambda: server.received(), 10, message="first attempt")
        started = time.monotonic()
        exporter.shutdown()
        thread.join(10)
        assert not thread.is_alive() and time.monotonic() - started < 5
        assert results == [ExportResult.FAILURE] and len(server.received()) == 1
    assert "shut down" in exporter.last_error


def test_three_configuration_forms_are_equivalent(tmp_path):
    with RecordingServer() as server:
        url = server.url("/eq")
        env = {"OTEL_PERFMON_WEBHOOK_URL": url, "OTEL_PERFMON_WEBHOOK_HEADERS": "X-Team=a%20b,X-Env=prod",
               "OTEL_PERFMON_WEBHOOK_SECRET": "s"}
        specs = [WebhookExporter(url=url, headers={"X-Team": "a b", "X-Env": "prod"}, secret="s"),
                 {"type": "webhook", "url": url, "headers": {"X-Team": "a b", "X-Env": "prod"}, "secret": "s"},
                 "webhook"]
        exporters = build_exporters(validate_exporter_specs(specs), env)
        report = make_report(tmp_path)
        for exporter in exporters:
            assert isinstance(exporter, WebhookExporter)
            assert exporter.export(report) is ExportResult.SUCCESS
        requests = server.received()
    assert len(requests) == 3
    for request in requests:
        assert request.header("X-Team") == "a b" and request.header("X-Env") == "prod"
        assert request.header("X-Perfmon-Signature") == \
            "sha256=" + hmac.new(b"s", request.body, hashlib.sha256).hexdigest()
    bodies = [request.json() for request in requests]
    for body in bodies:
        body.pop("sent_at")
    assert bodies[0] == bodies[1] == bodies[2]


@pytest.mark.parametrize("spec, env, field", [
    ("webhook", {}, "url"),
    ({"type": "webhook"}, {}, "url"),
    ({"type": "webhook", "url": "ftp://example.com/x"}, {}, "url"),
    ({"type": "webhook", "url": "https://example.com", "timeout_seconds": 0}, {}, "timeout_seconds"),
    ({"type": "webhook", "url": "https://example.com", "headers": "X-A=1"}, {}, "headers"),
    ({"type": "webhook", "url": "https://example.com", "bogus": 1}, {}, "bogus"),
])
def test_invalid_configuration_names_exporter_and_field(spec, env, field):
    with pytest.raises(ConfigurationError) as info:
        build_exporters(validate_exporter_specs([spec]), env)
    assert "webhook" in str(info.value) and field in str(info.value)


def test_unknown_type_raises_at_configuration_time(tmp_path):
    from opentelemetry.sdk.trace import TracerProvider

    from otel_perfmon import configure_perfmon

    with pytest.raises(ConfigurationError, match="nosuchexporter"):
        configure_perfmon(tracer_provider=TracerProvider(), report_dir=str(tmp_path), dedup_store="memory",
                          exporters=[{"type": "nosuchexporter"}])
    with pytest.raises(ConfigurationError, match="webhook.*url"):
        configure_perfmon(tracer_provider=TracerProvider(), report_dir=str(tmp_path), dedup_store="memory",
                          exporters=["webhook"])


def test_env_timeout_is_the_default(monkeypatch):
    monkeypatch.setenv("OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS", "7.5")
    assert WebhookExporter(url="https://example.com/x").timeout_seconds == 7.5
    assert WebhookExporter(url="https://example.com/x", timeout_seconds=2).timeout_seconds == 2
    monkeypatch.setenv("OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS", "nonsense")
    assert WebhookExporter(url="https://example.com/x").timeout_seconds == 30.0


def test_retry_after_is_honoured(tmp_path):
    arrivals = []

    def respond(index, request):
        arrivals.append(time.monotonic())
        return (429, "slow down", {"Retry-After": "1"}) if index == 0 else 200

    with RecordingServer(respond) as server:
        exporter = WebhookExporter(url=server.url(), max_retries=1, backoff_seconds=0.01, timeout_seconds=10)
        assert exporter.export(make_report(tmp_path)) is ExportResult.SUCCESS
    assert len(arrivals) == 2 and arrivals[1] - arrivals[0] >= 0.9


def test_retry_after_beyond_the_deadline_gives_up_at_once(tmp_path):
    with RecordingServer(lambda i, r: (503, "maintenance", {"Retry-After": "120"})) as server:
        exporter = WebhookExporter(url=server.url(), max_retries=3, backoff_seconds=0.01, timeout_seconds=5)
        started = time.monotonic()
        assert exporter.export(make_report(tmp_path)) is ExportResult.FAILURE
        assert len(server.received()) == 1 and time.monotonic() - started < 4
    assert "HTTP 503" in exporter.last_error and "timeout of 5 s" in exporter.last_error
