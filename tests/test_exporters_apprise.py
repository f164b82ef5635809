"""apprise exporter (optional extra) through apprise's json:// plugin to a loopback server."""

from __future__ import annotations

import base64
import io
import zipfile

import pytest

from notify_support import RecordingServer, make_report
from otel_perfmon import ConfigurationError, ExportResult
from otel_perfmon.exporters.registry import build_exporters, validate_exporter_specs

pytest.importorskip("apprise")

from otel_perfmon.exporters.apprise import AppriseExporter  # noqa: E402


def test_message_and_zip_attachment(tmp_path):
    report = make_report(tmp_path, route="/users/@channel/<id>")
    with RecordingServer() as server:
        exporter = AppriseExporter(urls=[f"json://127.0.0.1:{server.port}/notify"], timeout_seconds=5)
        assert exporter.export(report) is ExportResult.SUCCESS, exporter.last_error
        [request] = server.received()
    assert request.path == "/notify"
    body = request.json()
    assert body["title"].startswith("Slow request: GET /users/@channel/<id>")
    assert report.trace_id in body["message"] and "@channel" not in body["message"]
    [attachment] = body["attachments"]
    assert attachment["filename"] == f"{report.report_id}.zip"
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(attachment["base64"]))) as archive:
        assert sorted(archive.namelist()) == sorted([f"{report.report_id}.html", f"{report.report_id}.md"])


def test_failure_is_reported_without_the_url(tmp_path):
    with RecordingServer(lambda i, r: 500) as server:
        url = f"json://user:hunter2pass@127.0.0.1:{server.port}/notify"
        exporter = AppriseExporter(urls=url, timeout_seconds=5)
        assert exporter.export(make_report(tmp_path)) is ExportResult.FAILURE
        assert server.received()
    assert "apprise could not notify" in exporter.last_error and "hunter2pass" not in exporter.last_error


def test_env_configuration_and_errors(tmp_path):
    with RecordingServer() as server:
        env = {"OTEL_PERFMON_APPRISE_URLS": f"json://127.0.0.1:{server.port}/a, json://127.0.0.1:{server.port}/b"}
        [exporter] = build_exporters(validate_exporter_specs(["apprise"]), env)
        assert exporter.export(make_report(tmp_path)) is ExportResult.SUCCESS
        assert sorted(r.path for r in server.received()) == ["/a", "/b"]
    with pytest.raises(ConfigurationError, match="apprise.*urls"):
        build_exporters(validate_exporter_specs(["apprise"]), {})
    with pytest.raises(ConfigurationError, match="apprise.*item 2"):
        AppriseExporter(urls=["json://127.0.0.1/x", "notascheme-at-all"])
