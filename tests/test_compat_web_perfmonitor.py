"""web-perfmonitor's README examples, run on otel_perfmon.compat.web_perfmonitor with only the
import line changed (``from web_perfmonitor import`` -> ``from otel_perfmon.compat.web_perfmonitor
import``), against a Flask app in-process.

Each example runs in its own Python process (one global TracerProvider per process, as in an
app) inside a private mount namespace with fresh tmpfs on ``/tmp`` and ``/var/log``, so the
README's own paths (``/tmp``, ``/var/log/myapp``, ``/var/log/perf-reports``) are used as
written and nothing is left on the machine. A harness appended after the example adds a slow
route, requests it through Flask's test client, flushes, and prints the report files. The
notifier examples' server addresses (``https://mattermost.example.com``, ``smtp.example.com``
port 587) are pointed at loopback receivers started here: a recording HTTP server for
Mattermost's API and aiosmtpd with STARTTLS (a self-signed certificate) and login.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
from email import message_from_bytes
from typing import Any, Dict, List, Optional, Sequence

import pytest

from notify_support import RecordingServer, smtp_server
from otel_perfmon.testing import wait_until

pytest.importorskip("flask")

IMPORT_FROM = "from web_perfmonitor import"
IMPORT_TO = "from otel_perfmon.compat.web_perfmonitor import"
BEARER = "Bearer hdr-secret-7d1f"
REPORT_JSON = re.compile(r"^[0-9a-z][0-9a-z-]{7,63}\.json$")

# ------------------------------------------------------------------ the README's examples
QUICK_START = '''
from flask import Flask
from web_perfmonitor import PerformanceMiddleware

app = Flask(__name__)
PerformanceMiddleware(app)  # That's it!

@app.route("/api/users")
def get_users():
    # Your business logic
    return {"users": [...]}

if __name__ == "__main__":
    app.run()
'''

CUSTOM_CONFIGURATION = '''
from web_perfmonitor import PerformanceMiddleware, MonitorConfig

config = MonitorConfig(
    threshold_seconds=0.5,      # 500ms threshold
    alert_window_days=7,        # 7-day deduplication window
    log_path="/var/log/myapp",  # Report save directory
    url_whitelist=["/api/*"],   # Only monitor /api/* endpoints

    # Request header collection (enabled by default)
    capture_request_headers=True,  # Collect request headers
    included_headers=None,          # None=use default list, or customize like ["X-Custom-ID"]
)

PerformanceMiddleware(app, config=config)
'''

ENVIRONMENT = {"PERF_THRESHOLD": "0.5", "PERF_ALERT_WINDOW": "7", "PERF_LOG_PATH": "/var/log/myapp",
               "PERF_CAPTURE_REQUEST_HEADERS": "true",
               "PERF_INCLUDED_HEADERS": "X-Request-ID,X-Trace-ID,X-Custom-Header", "PERF_URL_WHITELIST": "/api/*"}
ENVIRONMENT_VARIABLES = '''
from web_perfmonitor import PerformanceMiddleware, MonitorConfig

config = MonitorConfig.from_env()
PerformanceMiddleware(app, config=config)
'''

MATTERMOST = '''
from web_perfmonitor import PerformanceMiddleware, MonitorConfig

config = MonitorConfig(
    log_path="/var/log/perf-reports",  # Local reports saved here (mandatory)
    notice_list=[
        # External notifiers only
        {
            "type": "mattermost",
            "format": "markdown",
            "server_url": "https://mattermost.example.com",
            "token": "your-api-token",
            "channel_id": "your-channel-id"
        }
    ]
)
PerformanceMiddleware(app, config=config)
'''

EMAIL = '''
from web_perfmonitor import PerformanceMiddleware, MonitorConfig

config = MonitorConfig(
    log_path="/var/log/perf-reports",
    notice_list=[
        {
            "type": "email",
            "format": "html",  # or "text"
            "smtp_host": "smtp.example.com",
            "smtp_port": 587,
            "username": "alerts@example.com",
            "password": "your-password",
            "sender": "alerts@example.com",
            "recipients": ["dev@example.com", "ops@example.com"],
            "use_tls": True,
            "subject_prefix": "[Perf Alert]"
        }
    ]
)
PerformanceMiddleware(app, config=config)
'''

FUNCTION_PROFILING = '''
from web_perfmonitor import profile

@profile()
def slow_operation():
    # Time-consuming operation
    time.sleep(2)

@profile(threshold=0.1)  # Custom threshold
def critical_function():
    # Critical operation
    pass
'''

WHITELIST = '''
config = MonitorConfig(
    url_whitelist=[
        "/api/*",       # Monitor all /api/* endpoints
        "/v1/users",    # Exact match
    ]
)
'''

BLACKLIST = '''
config = MonitorConfig(
    url_blacklist=[
        "/health",      # Exclude health checks
        "/metrics",     # Exclude metrics endpoint
        "/static/*",    # Exclude static files
    ]
)
'''

# ------------------------------------------------------------------ the harness around them
NEEDS_APP = "from flask import Flask\napp = Flask(__name__)\n"
NEEDS_MIDDLEWARE = "from web_perfmonitor import PerformanceMiddleware, MonitorConfig\n"

HARNESS = '''
# ---- test harness (not part of the README example) ----
import json as _json, os as _os, time as _time
from otel_perfmon import api as _api
from otel_perfmon.compat.web_perfmonitor import get_config as _get_config

_SLOW = float(_os.environ["HARNESS_SLOW_SECONDS"])

def _sleep():
    _time.sleep(_SLOW)
    return "ok"

for _path in ("/api/slow", "/v1/users", "/health", "/metrics", "/static/app.js", "/other"):
    app.add_url_rule(_path, _path, _sleep)
_client = app.test_client()
for _path in _json.loads(_os.environ["HARNESS_PATHS"]):
    assert _client.get(_path, headers={"X-Request-ID": "req-" + _path, "Authorization": _os.environ["HARNESS_BEARER"],
                                       "X-Custom-Header": "custom"}).status_code == 200
for _call in _json.loads(_os.environ.get("HARNESS_CALLS", "[]")):
    globals()[_call]()
_handle = _api.current()
assert _handle.force_flush(20)
_dir = _get_config().log_path
_files = {n: open(_os.path.join(_dir, n), encoding="utf-8").read() for n in sorted(_os.listdir(_dir))
          if n.endswith((".json", ".html", ".md"))}
print("RESULT " + _json.dumps({"log_path": _dir, "files": _files, "stats": _handle.stats()}))
_handle.shutdown(5)
'''


def _unshare_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs tmpfs /tmp && mount -t tmpfs tmpfs /var/log"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.fixture(scope="module")
def sandbox() -> None:
    if not _unshare_works():
        pytest.skip("needs root and a kernel that lets this process mount tmpfs in a private mount namespace")


def _sandbox_script() -> str:
    """Shell steps of the child's private mount namespace: fresh tmpfs on /tmp and /var/log (the
    peer's README paths), with this checkout and its virtualenv bound back in when they live
    there (a CI clone under /tmp, say), so the child still finds its interpreter and code."""
    steps = []
    keep = {os.path.realpath(p) for p in (sys.prefix, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}
    for index, top in enumerate(("/tmp", "/var/log")):
        inside = sorted(p for p in keep if p == top or p.startswith(top + "/"))
        saved = f"/run/perfmon-keep-{index}"
        if inside:
            steps += [f"mkdir -p {saved}", f"mount --bind {top} {saved}"]
        steps.append(f"mount -t tmpfs tmpfs {top}")
        for path in inside:
            rel = os.path.relpath(path, top)
            source = shlex.quote(saved + "/" + rel)
            steps += [f"mkdir -p {shlex.quote(path)}", f"mount --bind {source} {shlex.quote(path)}"]
    return " && ".join(steps)


def run_example(source: str, paths: List[str], slow: float, env: Optional[Dict[str, str]] = None,
                calls: Sequence[str] = (), prelude: str = "") -> Dict[str, Any]:
    """Run ``prelude + source`` (import line changed) + the harness; the parsed RESULT."""
    program = (prelude + textwrap.dedent(source)).replace(IMPORT_FROM, IMPORT_TO)
    assert "web_perfmonitor import" not in program.replace(IMPORT_TO, "")
    program = program.replace('if __name__ == "__main__":\n    app.run()', "")  # the harness serves it
    child_env = dict(os.environ)
    for key in list(child_env):
        if key.startswith(("OTEL_", "PERF_")):
            del child_env[key]
    child_env.update(env or {})
    child_env.update({"HARNESS_SLOW_SECONDS": str(slow), "HARNESS_PATHS": json.dumps(paths),
                      "HARNESS_CALLS": json.dumps(list(calls)), "HARNESS_BEARER": BEARER,
                      "OTEL_SERVICE_NAME": "compat-test", "PYTHONPATH": os.path.dirname(__file__)})
    script = _sandbox_script() + ' && exec "$0" -'
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, sys.executable],
                          input=program + HARNESS, capture_output=True, text=True, env=child_env, timeout=120)
    assert done.returncode == 0, done.stderr[-4000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert line, done.stdout[-2000:] + done.stderr[-2000:]
    result: Dict[str, Any] = json.loads(line[-1][len("RESULT "):])
    result["stderr"] = done.stderr
    result["reports"] = [json.loads(text) for name, text in result["files"].items() if REPORT_JSON.match(name)]
    for text in list(result["files"].values()) + [done.stdout, done.stderr]:
        assert BEARER.split()[1] not in text
    return result


def _routes(result: Dict[str, Any]) -> List[str]:
    return sorted(r["http"]["route"] for r in result["reports"])


def test_quick_start(sandbox: None) -> None:
    result = run_example(QUICK_START, ["/api/slow"], slow=1.2)  # /api/users returns [...]: a placeholder
    assert result["log_path"] == "/tmp"  # web-perfmonitor's default report directory
    (report,) = result["reports"]
    assert report["http"]["route"] == "/api/slow" and report["threshold_ms"] == 1000.0
    assert report["headers"]["x-request-id"] == "req-/api/slow"
    assert report["headers"]["authorization"] == "[REDACTED]"
    assert {f"{report['report_id']}.{s}" for s in ("json", "html", "md")} <= set(result["files"])


def test_custom_configuration(sandbox: None) -> None:
    result = run_example(CUSTOM_CONFIGURATION, ["/api/slow", "/health", "/api/slow"], slow=0.7, prelude=NEEDS_APP)
    assert result["log_path"] == "/var/log/myapp"
    (report,) = result["reports"]  # /health is not whitelisted; the second /api/slow is deduplicated
    assert report["http"]["route"] == "/api/slow" and report["threshold_ms"] == 500.0
    assert result["stats"]["reports_deduplicated"] == 1
    assert "x-custom-header" not in report["headers"]  # the default header list


def test_environment_variables(sandbox: None) -> None:
    result = run_example(ENVIRONMENT_VARIABLES, ["/api/slow", "/other"], slow=0.7, env=ENVIRONMENT,
                         prelude=NEEDS_APP)
    assert result["log_path"] == "/var/log/myapp"
    (report,) = result["reports"]
    assert report["http"]["route"] == "/api/slow" and report["threshold_ms"] == 500.0
    assert report["headers"]["x-request-id"] == "req-/api/slow"
    assert report["headers"]["x-custom-header"] == "custom"
    assert "user-agent" not in report["headers"]  # only the included headers (and redacted ones)


def test_mattermost_notifier(sandbox: None) -> None:
    def respond(index: int, request: Any) -> Any:
        if request.path == "/api/v4/files":
            return 201, {"file_infos": [{"id": "file-1"}]}
        return 201, {"id": "post-1"}

    with RecordingServer(respond) as server:
        source = MATTERMOST.replace("https://mattermost.example.com", server.url(""))
        result = run_example(source, ["/api/slow"], slow=1.2, prelude=NEEDS_APP)
        posts = server.received("/api/v4/posts")
        uploads = server.received("/api/v4/files")
    assert result["log_path"] == "/var/log/perf-reports"
    (report,) = result["reports"]
    assert len(posts) == 1 and len(uploads) == 1
    assert uploads[0].header("Authorization") == "Bearer your-api-token"
    body = posts[0].json()
    assert body["channel_id"] == "your-channel-id" and body["file_ids"] == ["file-1"]
    assert "/api/slow" in body["message"] and report["report_id"] in body["message"]
    assert b"your-channel-id" in uploads[0].body
    assert "format" not in result["stderr"]  # format="markdown" is what the exporter sends: no warning
    for text in result["files"].values():
        assert "your-api-token" not in text


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_email_notifier(sandbox: None, certificate: Any) -> None:
    import ssl

    from aiosmtpd.smtp import AuthResult

    logins = []

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: Any, auth_data: Any) -> Any:
        logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"your-password", handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    with open(certificate[0], encoding="ascii") as handle:
        pem = handle.read()
    # the child's /tmp is a fresh tmpfs: it writes the CA file there before the example runs
    prelude = NEEDS_APP + ("import os\nopen('/tmp/ca.pem', 'w').write(os.environ.pop('HARNESS_CA'))\n"
                           "os.environ['SSL_CERT_FILE'] = '/tmp/ca.pem'\n")
    with smtp_server(tls_context=context, require_starttls=True, authenticator=authenticator) as (controller,
                                                                                                 envelopes):
        source = EMAIL.replace('"smtp.example.com"', '"127.0.0.1"').replace(
            '"smtp_port": 587', f'"smtp_port": {controller.port}')
        result = run_example(source, ["/api/slow"], slow=1.2, env={"HARNESS_CA": pem}, prelude=prelude)
        wait_until(lambda: envelopes, 10, 0.05, "the e-mail")
    (report,) = result["reports"]
    (envelope,) = envelopes
    assert logins == [(b"alerts@example.com", b"your-password")]
    assert envelope.mail_from == "alerts@example.com"
    assert sorted(envelope.rcpt_tos) == ["dev@example.com", "ops@example.com"]
    message = message_from_bytes(envelope.content)
    assert message["Subject"].startswith("[Perf Alert] Slow GET /api/slow")
    kinds = sorted(part.get_content_type() for part in message.walk() if not part.is_multipart())
    assert "text/html" in kinds and "application/zip" in kinds
    assert report["report_id"] in envelope.content.decode("utf-8", "replace")
    for text in result["files"].values():
        assert "your-password" not in text


def test_function_profiling(sandbox: None) -> None:
    prelude = "import time\n" + NEEDS_APP + NEEDS_MIDDLEWARE + "PerformanceMiddleware(app)\n"
    result = run_example(FUNCTION_PROFILING, [], slow=0.0, calls=["slow_operation", "critical_function"],
                         prelude=prelude)
    (report,) = result["reports"]  # critical_function takes far less than its 0.1 s
    assert report["span_name"] == "slow_operation" and report["threshold_ms"] == 1000.0
    assert report["duration_ms"] >= 2000
    assert any(h["function"] == "slow_operation" for h in report["profile"]["hotspots"]) or \
        "slow_operation" in report["profile"]["call_tree_text"]


@pytest.mark.parametrize("snippet, reported", [
    (WHITELIST, ["/api/slow", "/v1/users"]),
    (BLACKLIST, ["/api/slow", "/other", "/v1/users"]),
], ids=["whitelist", "blacklist"])
def test_url_filtering(sandbox: None, snippet: str, reported: List[str]) -> None:
    source = snippet + "PerformanceMiddleware(app, config=config)\n"
    result = run_example(source, ["/api/slow", "/v1/users", "/health", "/static/app.js", "/other"], slow=1.1,
                         prelude=NEEDS_APP + NEEDS_MIDDLEWARE)
    assert _routes(result) == reported


def test_options_without_counterpart_warn_once_naming_them() -> None:
    import logging

    from otel_perfmon.compat import web_perfmonitor as compat

    compat._warned.clear()
    records: List[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("otel_perfmon.compat.web_perfmonitor")
    logger.addHandler(handler)
    try:
        config = compat.MonitorConfig(notice_list=[
            {"type": "email", "format": "text", "smtp_host": "h", "sender": "a@b", "recipients": ["c@d"],
             "reply_to": "x@y"},
            {"type": "email", "format": "text", "smtp_host": "h", "sender": "a@b", "recipients": ["c@d"]},
            {"type": "slack", "webhook_url": "https://hooks.example.com/x"}])
        overrides = config.to_perfmon()
        config.to_perfmon()
    finally:
        logger.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert len(messages) == 3, messages
    assert any("format='text'" in m for m in messages)
    assert any("'reply_to'" in m for m in messages)
    assert any("'slack'" in m for m in messages)
    (email, _) = overrides["exporters"]
    assert email == {"type": "email", "subject_prefix": "[Performance Alert]", "host": "h", "sender": "a@b",
                     "recipients": ["c@d"]}


def test_monitor_config_fields_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    from otel_perfmon import ConfigurationError
    from otel_perfmon.compat.web_perfmonitor import MonitorConfig

    assert MonitorConfig().to_perfmon() == {"report_dir": "/tmp"}
    monkeypatch.setenv("OTEL_PERFMON_REPORT_DIR", "/srv/reports")
    assert MonitorConfig().to_perfmon() == {}  # our variable wins over web-perfmonitor's default
    more = {"PERF_URL_BLACKLIST": "/health, /metrics", "PERF_MAX_OVERHEAD": "0.01", "PERF_NOTICE_TIMEOUT": "5",
            "PERF_NOTICE_QUEUE_SIZE": "10", "PERF_SHUTDOWN_TIMEOUT": "2"}
    for key, value in {**ENVIRONMENT, **more}.items():
        monkeypatch.setenv(key, value)
    config = MonitorConfig.from_env()
    assert config.graceful_shutdown_seconds == 2.0
    assert config.to_perfmon() == {
        "threshold_seconds": 0.5, "dedup_window_seconds": 7 * 86400.0, "report_dir": "/var/log/myapp",
        "include_urls": ["/api/*"], "exclude_urls": ["/health", "/metrics"], "export_timeout_seconds": 5.0,
        "queue_size": 10, "profile_budget": 0.01,
        "capture_headers": ["X-Request-ID", "X-Trace-ID", "X-Custom-Header"]}
    monkeypatch.setenv("PERF_CAPTURE_REQUEST_HEADERS", "false")
    assert MonitorConfig.from_env().to_perfmon()["capture_headers"] == []
    monkeypatch.setenv("PERF_THRESHOLD", "fast")
    with pytest.raises(ConfigurationError, match="PERF_THRESHOLD"):
        MonitorConfig.from_env()
    with pytest.raises(ConfigurationError, match="threshold_seconds"):
        MonitorConfig(threshold_seconds=0)
    assert MonitorConfig().merge(threshold_seconds=2.0).threshold_seconds == 2.0
