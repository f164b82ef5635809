"""``otel-perfmon test-notifiers`` run as a subprocess against loopback receivers."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess

from conftest import BIN, free_port
from notify_support import RecordingServer, smtp_server


def _run(tmp_path, **env_vars):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_PERFMON_")}
    env["OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS"] = "5"
    env.update(env_vars)
    return subprocess.run([os.path.join(BIN, "otel-perfmon"), "test-notifiers"], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60)


def test_every_channel_ok(tmp_path):
    def respond(index, request):
        if request.path == "/api/v4/files":
            return 201, {"file_infos": [{"id": "fid"}]}
        return 200

    with RecordingServer(respond) as server, smtp_server() as (controller, envelopes):
        result = _run(tmp_path,
                      OTEL_PERFMON_EXPORTERS="webhook,slack,mattermost,email",
                      OTEL_PERFMON_WEBHOOK_URL=server.url("/webhook"), OTEL_PERFMON_WEBHOOK_SECRET="s",
                      OTEL_PERFMON_SLACK_WEBHOOK_URL=server.url("/slack"),
                      OTEL_PERFMON_MATTERMOST_WEBHOOK_URL=server.url("/hooks/mm"),
                      OTEL_PERFMON_MATTERMOST_BOT_TOKEN="bot", OTEL_PERFMON_MATTERMOST_CHANNEL_ID="chan",
                      OTEL_PERFMON_SMTP_HOST="127.0.0.1", OTEL_PERFMON_SMTP_PORT=str(controller.port),
                      OTEL_PERFMON_SMTP_SENDER="perfmon@example.com",
                      OTEL_PERFMON_SMTP_RECIPIENTS="oncall@example.com", OTEL_PERFMON_SMTP_USE_TLS="false",
                      OTEL_PERFMON_REPORT_URL_TEMPLATE="https://perf.example.com/r/{report_id}")
        paths = sorted(r.path for r in server.received())
        webhook_body = server.received("/webhook")[0].json()
        messages = [email.message_from_bytes(e.original_content, policy=email.policy.default) for e in envelopes]
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["webhook: ok", "slack: ok", "mattermost: ok", "email: ok"]
    assert paths == ["/api/v4/files", "/api/v4/posts", "/hooks/mm", "/slack", "/webhook"]
    assert webhook_body["http"]["route"] == "/otel-perfmon/test-notifiers"
    assert webhook_body["report_url"] == f"https://perf.example.com/r/{webhook_body['report_id']}"
    [message] = messages
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == f"{webhook_body['report_id']}.zip"


def test_one_failure_exits_1_and_says_why(tmp_path):
    with RecordingServer(lambda i, r: (404, "no_service") if r.path == "/slack" else 200) as server:
        closed = free_port()
        result = _run(tmp_path, OTEL_PERFMON_EXPORTERS="webhook,slack,mattermost",
                      OTEL_PERFMON_WEBHOOK_URL=server.url("/webhook"),
                      OTEL_PERFMON_SLACK_WEBHOOK_URL=server.url("/slack"),
                      OTEL_PERFMON_MATTERMOST_WEBHOOK_URL=f"http://127.0.0.1:{closed}/hooks/SECRETKEY")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "webhook: ok"
    assert lines[1].startswith("slack: failed (HTTP 404 from 127.0.0.1:") and "no_service" in lines[1]
    assert lines[2].startswith("mattermost: failed (cannot connect to 127.0.0.1:") and "refused" in lines[2]
    assert "SECRETKEY" not in result.stdout + result.stderr


def test_nothing_configured_exits_2(tmp_path):
    result = _run(tmp_path)
    assert result.returncode == 2
    assert result.stdout == "" and "OTEL_PERFMON_EXPORTERS" in result.stderr


def test_invalid_configuration_exits_2_naming_exporter_and_field(tmp_path):
    result = _run(tmp_path, OTEL_PERFMON_EXPORTERS="slack,email", OTEL_PERFMON_SLACK_WEBHOOK_URL="https://x.example/h",
                  OTEL_PERFMON_SMTP_HOST="smtp.example.com")
    assert result.returncode == 2
    assert "configuration error" in result.stderr and "email" in result.stderr and "sender" in result.stderr
    unknown = _run(tmp_path, OTEL_PERFMON_EXPORTERS="pigeon")
    assert unknown.returncode == 2 and "pigeon" in unknown.stderr


def _list(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_PERFMON_")}
    return subprocess.run([os.path.join(BIN, "otel-perfmon"), "list", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_list_missing_report_dir_is_an_error(tmp_path):
    missing = tmp_path / "none"
    result = _list("--report-dir", str(missing))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == "" and str(missing) in result.stderr and "does not exist" in result.stderr
    (tmp_path / "file").write_text("x")
    result = _list("--report-dir", str(tmp_path / "file"))
    assert result.returncode == 2 and "not a directory" in result.stderr
    (tmp_path / "empty").mkdir()
    result = _list("--report-dir", str(tmp_path / "empty"))
    assert result.returncode == 0 and "no reports in" in result.stdout


def test_list_shows_service_mode_coverage_and_count(tmp_path):
    from otel_perfmon.dedup.sqlite import SqliteDedupStore
    from viewer_reports import make_report, write

    report_dir = str(tmp_path / "reports")
    start = 1_795_000_000.0
    counted = write(make_report(report_dir, start, service="billing", with_session=False,
                                profile_mode="after_threshold", coverage=0.625))
    newest = write(make_report(report_dir, start + 60, service="shop", route="/slow", with_session=False))
    store = SqliteDedupStore.in_report_dir(report_dir)
    store.claim(counted.fingerprint, counted.report_id, start, 864000)
    for k in range(4):
        store.record_occurrence(counted.fingerprint, counted.report_id, 1200.0, "ab" * 16, start + k)
    store.close()
    result = _list("--report-dir", report_dir)
    assert result.returncode == 0, result.stderr
    header, first, second = result.stdout.splitlines()
    assert header.split()[4:] == ["route", "service", "mode", "coverage", "count", "report", "id"]
    # newest first; a report without a dedup entry has an empty count column
    assert first.split()[-5:] == ["shop", "full", "100", "%", newest.report_id]
    assert second.split()[-6:] == ["billing", "after_threshold", "62", "%", "4", counted.report_id]
    limited = _list("--report-dir", report_dir, "--limit", "1", "--dedup-store", "none")
    lines = limited.stdout.splitlines()
    assert len(lines) == 3 and lines[1].split()[-1] == newest.report_id
    assert lines[2].startswith("(1 older report not shown")
