"""Notifiers driven by the real pipeline: configure_perfmon + a TracerProvider + a Flask app
(test client). One message per fingerprint; a hung, failing or unreachable receiver never
delays the app or the report files, failures are counted, and shutdown stays bounded."""

from __future__ import annotations

import os
import time

from conftest import free_port
from notify_support import HANG, RecordingServer, perfmon_app, report_files
from otel_perfmon.testing import wait_until


def test_one_message_per_fingerprint(tmp_path):
    with RecordingServer() as hook, RecordingServer() as slack:
        exporters = [{"type": "webhook", "url": hook.url("/hook"), "secret": "s"},
                     {"type": "slack", "webhook_url": slack.url("/services/T/B/X")}]
        with perfmon_app(tmp_path, exporters,
                         report_url_template="https://perf.example.com/r/{report_id}") as (perfmon, client, report_dir):
            assert client.get("/slow").status_code == 200
            assert client.get("/slow").status_code == 200
            assert client.get("/fast").status_code == 200
            wait_until(lambda: perfmon.stats()["reports_deduplicated"] == 1, 10,
                       message="second slow span deduplicated")
            assert perfmon.force_flush(timeout_seconds=10)
            stats = perfmon.stats()
            [hook_request] = hook.received()
            [slack_request] = slack.received()
    assert stats["reports_created"] == 1 and stats["export_failures"] == 0
    body = hook_request.json()
    assert body["http"]["route"] == "/slow" and body["http"]["method"] == "GET"
    assert body["service_name"] == "notify-test" and body["duration_ms"] >= 150
    assert body["report_url"] == f"https://perf.example.com/r/{body['report_id']}"
    assert os.path.exists(os.path.join(report_dir, body["report_id"] + ".json"))
    text = slack_request.json()["text"]
    assert "`GET /slow`" in text and body["trace_id"] in text and body["report_url"] in text


def test_hung_failing_and_unreachable_receivers_do_not_affect_the_app(tmp_path):
    with RecordingServer(lambda i, r: HANG) as hung, RecordingServer(lambda i, r: 500) as failing, \
            RecordingServer() as healthy:
        exporters = [
            {"type": "webhook", "url": hung.url("/hung"), "timeout_seconds": 30},
            {"type": "slack", "webhook_url": failing.url("/fail"), "max_retries": 1, "backoff_seconds": 0.01},
            {"type": "mattermost", "webhook_url": f"http://127.0.0.1:{free_port()}/hooks/x", "max_retries": 0},
            {"type": "webhook", "url": healthy.url("/ok")},
        ]
        with perfmon_app(tmp_path, exporters) as (perfmon, client, report_dir):
            started = time.monotonic()
            response = client.get("/slow")
            request_seconds = time.monotonic() - started
            assert response.status_code == 200 and response.data == b"slow"
            assert request_seconds < 2.0, request_seconds  # 0.3 s of work; exporters run elsewhere
            wait_until(lambda: len(report_files(report_dir)) == 3, 10, message="report files written")
            wait_until(lambda: healthy.received(), 10, message="the healthy exporter to deliver")
            wait_until(lambda: perfmon.stats()["export_failures"] >= 2, 10, message="failures counted")
            assert len(failing.received()) == 2  # first attempt + 1 retry
            assert hung.received()  # still waiting for an answer
            assert client.get("/fast").status_code == 200
            started = time.monotonic()
            perfmon.shutdown(timeout_seconds=1)
            shutdown_seconds = time.monotonic() - started
    assert shutdown_seconds < 3.0, shutdown_seconds
    assert perfmon.stats()["reports_created"] == 1


def test_exporter_timeout_counts_a_failure(tmp_path):
    with RecordingServer(lambda i, r: HANG) as hung:
        exporters = [{"type": "webhook", "url": hung.url("/hung"), "timeout_seconds": 0.5}]
        with perfmon_app(tmp_path, exporters) as (perfmon, client, report_dir):
            client.get("/slow")
            wait_until(lambda: perfmon.stats()["export_failures"] == 1, 10, message="the timeout to be counted")
            assert len(report_files(report_dir)) == 3
            assert len(hung.received()) == 1
