"""slack and mattermost exporters against loopback HTTP servers: message content, escaping
of request-derived text, the Mattermost files-API upload, and configuration errors."""

from __future__ import annotations

import io
import zipfile

import pytest

from notify_support import RecordingServer, make_report
from otel_perfmon import ConfigurationError, ExportResult
from otel_perfmon.exporters.mattermost import MattermostExporter
from otel_perfmon.exporters.registry import build_exporters, validate_exporter_specs
from otel_perfmon.exporters.slack import SlackExporter

HOSTILE_ROUTE = "/x/<script>&amp;*bold*_i_`tick`@channel\n[fake](http://evil)"


def test_slack_message_content(tmp_path):
    report = make_report(tmp_path, url="https://perf.example.com/reports/abc")
    with RecordingServer() as server:
        assert SlackExporter(webhook_url=server.url("/services/T/B/X")).export(report) is ExportResult.SUCCESS
        [request] = server.received()
    payload = request.json()
    text = payload["text"]
    assert payload["blocks"][0]["text"] == {"type": "mrkdwn", "text": text}
    assert "`GET /items/&lt;int:item_id&gt;`" in text
    assert "1500.0 ms" in text and "threshold 1000.0 ms" in text
    assert report.trace_id in text
    assert "<https://perf.example.com/reports/abc|" + report.report_id + ">" in text
    assert "synthetic_slow_query" in text and "80.0%" in text


def test_slack_escapes_request_derived_text(tmp_path):
    report = make_report(tmp_path, route=HOSTILE_ROUTE, method="GET")
    with RecordingServer() as server:
        assert SlackExporter(webhook_url=server.url()).export(report) is ExportResult.SUCCESS
        text = server.received()[0].json()["text"]
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "&amp;amp;" in text  # the route's literal "&amp;" shows as typed
    first_line = text.splitlines()[0]
    assert "\\n" in first_line and "[fake]" in first_line  # the newline cannot start a new line
    assert "'tick'" in first_line and "`tick`" not in first_line  # cannot close the code span
    # no report link here, so no raw < or > may remain at all (Slack would parse them as markup)
    assert "<" not in text and ">" not in text


def test_slack_without_report_url_shows_the_id(tmp_path):
    report = make_report(tmp_path)
    with RecordingServer() as server:
        SlackExporter(webhook_url=server.url()).export(report)
        text = server.received()[0].json()["text"]
    assert f"Report id: `{report.report_id}`" in text and "<http" not in text


def test_mattermost_webhook_message_escapes_markdown_and_mentions(tmp_path):
    report = make_report(tmp_path, route=HOSTILE_ROUTE, url="https://perf.example.com/r/abc")
    with RecordingServer() as server:
        exporter = MattermostExporter(webhook_url=server.url("/hooks/abc123"), username="perfmon")
        assert exporter.export(report) is ExportResult.SUCCESS
        [request] = server.received()
    payload = request.json()
    assert payload["username"] == "perfmon"
    text = payload["text"]
    heading = text.splitlines()[0]
    assert heading.startswith("#### ") and "`GET /x/<script>" in heading
    assert "@channel" not in text and "@\u200bchannel" in text
    assert "\\n[fake](http://evil)" in heading  # inside the code span, on the same line
    assert heading.count("`") == 2  # the route's backticks cannot end the code span
    assert "[" + report.report_id + "](https://perf.example.com/r/abc)" in text
    assert "| `synthetic_slow_query` |" in text


def test_mattermost_bot_mode_uploads_the_zip_and_posts_it(tmp_path):
    report = make_report(tmp_path)

    def respond(index, request):
        if request.path == "/api/v4/files":
            return 201, {"file_infos": [{"id": "file-123"}]}
        return 201, {"id": "post-1"}

    with RecordingServer(respond) as server:
        exporter = MattermostExporter(webhook_url=server.url("/hooks/abc123"), bot_token="bot-token-xyz",
                                      channel_id="chan-42")
        assert exporter.url == server.url("")
        assert exporter.export(report) is ExportResult.SUCCESS
        paths = [r.path for r in server.received()]
        upload = server.received("/api/v4/files")[0]
        post = server.received("/api/v4/posts")[0]
    assert paths == ["/hooks/abc123", "/api/v4/files", "/api/v4/posts"]
    assert upload.header("Authorization") == "Bearer bot-token-xyz"
    assert upload.header("Content-Type").startswith("multipart/form-data")
    assert b'name="channel_id"' in upload.body and b"chan-42" in upload.body
    assert f'filename="{report.report_id}.zip"'.encode() in upload.body
    archive_bytes = _multipart_file(upload)
    with zipfile.ZipFile(io.BytesIO(archive_bytes)) as archive:
        assert sorted(archive.namelist()) == sorted([f"{report.report_id}.html", f"{report.report_id}.md"])
        with open(report.html_path, "rb") as handle:
            assert archive.read(f"{report.report_id}.html") == handle.read()
    body = post.json()
    assert post.header("Authorization") == "Bearer bot-token-xyz"
    assert body["channel_id"] == "chan-42" and body["file_ids"] == ["file-123"]
    assert report.report_id in body["message"]


def test_mattermost_bot_mode_without_webhook_posts_full_message(tmp_path):
    report = make_report(tmp_path)
    with RecordingServer(lambda i, r: (201, {"file_infos": [{"id": "f1"}]})) as server:
        exporter = MattermostExporter(bot_token="tok-abcd", channel_id="c1", url=server.url("/mm/"))
        assert exporter.export(report) is ExportResult.SUCCESS
        paths = [r.path for r in server.received()]
        post = server.received("/mm/api/v4/posts")[0].json()
    assert paths == ["/mm/api/v4/files", "/mm/api/v4/posts"]
    assert "Slow request" in post["message"] and post["file_ids"] == ["f1"]


def test_mattermost_upload_failure_is_a_failure_without_the_token(tmp_path):
    with RecordingServer(lambda i, r: (401, "invalid token") if r.path == "/api/v4/files" else 200) as server:
        exporter = MattermostExporter(webhook_url=server.url("/hooks/k"), bot_token="tok-secret-1",
                                      channel_id="c", backoff_seconds=0.01)
        assert exporter.export(make_report(tmp_path)) is ExportResult.FAILURE
        assert len(server.received("/api/v4/files")) == 1 and not server.received("/api/v4/posts")
    assert "HTTP 401" in exporter.last_error and "tok-secret-1" not in exporter.last_error


@pytest.mark.parametrize("spec, env, field", [
    ("slack", {}, "webhook_url"),
    ({"type": "slack", "webhook_url": "not a url"}, {}, "webhook_url"),
    ("mattermost", {}, "webhook_url"),
    ("mattermost", {"OTEL_PERFMON_MATTERMOST_WEBHOOK_URL": "https://mm.example.com/hooks/x",
                    "OTEL_PERFMON_MATTERMOST_BOT_TOKEN": "t"}, "channel_id"),
    ({"type": "mattermost", "bot_token": "t", "channel_id": "c"}, {}, "url"),
    ({"type": "mattermost", "webhook_url": "https://mm.example.com/hooks/x", "channel_id": "c"}, {}, "bot_token"),
])
def test_invalid_configuration_names_exporter_and_field(spec, env, field):
    with pytest.raises(ConfigurationError) as info:
        build_exporters(validate_exporter_specs([spec]), env)
    name = spec if isinstance(spec, str) else spec["type"]
    assert f"exporters: {name}:" in str(info.value) and field in str(info.value)


def test_env_configuration_matches_dicts():
    env = {"OTEL_PERFMON_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
           "OTEL_PERFMON_MATTERMOST_WEBHOOK_URL": "https://mm.example.com/sub/hooks/x",
           "OTEL_PERFMON_MATTERMOST_BOT_TOKEN": "t", "OTEL_PERFMON_MATTERMOST_CHANNEL_ID": "c",
           "OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS": "4"}
    slack, mattermost = build_exporters(validate_exporter_specs("slack,mattermost"), env)
    assert slack.webhook_url == env["OTEL_PERFMON_SLACK_WEBHOOK_URL"] and slack.timeout_seconds == 4
    assert mattermost.url == "https://mm.example.com/sub" and mattermost.channel_id == "c"


def _multipart_file(request) -> bytes:
    boundary = request.header("Content-Type").split("boundary=")[1].encode()
    for part in request.body.split(b"--" + boundary):
        if b'name="files"' in part:
            return part.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
    raise AssertionError("no files part")
