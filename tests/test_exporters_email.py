"""email exporter against a real SMTP server (aiosmtpd on a loopback port)."""

from __future__ import annotations

import email
import email.policy
import io
import zipfile

import pytest

from conftest import free_port
from notify_support import make_report, smtp_server
from otel_perfmon import ConfigurationError, ExportResult
from otel_perfmon.exporters.email import EmailExporter
from otel_perfmon.exporters.registry import build_exporters, validate_exporter_specs


def _parse(envelope):
    return email.message_from_bytes(envelope.original_content, policy=email.policy.default)


def _exporter(controller, **options):
    values = dict(host="127.0.0.1", port=controller.port, sender="perfmon@example.com",
                  recipients=["oncall@example.com", "dev@example.com"], use_tls=False, timeout_seconds=10)
    values.update(options)
    return EmailExporter(**values)


def test_sends_subject_text_html_and_zip(tmp_path):
    report = make_report(tmp_path, route="/orders/<id>&x", url="https://perf.example.com/r/1")
    with smtp_server() as (controller, envelopes):
        exporter = _exporter(controller, subject_prefix="[perf prod]")
        assert exporter.export(report) is ExportResult.SUCCESS, exporter.last_error
        [envelope] = envelopes
    assert envelope.mail_from == "perfmon@example.com"
    assert envelope.rcpt_tos == ["oncall@example.com", "dev@example.com"]
    message = _parse(envelope)
    assert message["Subject"] == "[perf prod] Slow GET /orders/<id>&x: 1500.0 ms"
    assert message["X-Perfmon-Report-Id"] == report.report_id
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "Slow request: GET /orders/<id>&x" in text and report.trace_id in text
    assert "https://perf.example.com/r/1" in text and "synthetic_slow_query" in text
    assert "/orders/&lt;id&gt;&amp;x" in html and "<id>" not in html
    assert '<a href="https://perf.example.com/r/1">' in html and report.trace_id in html
    [attachment] = list(message.iter_attachments())
    assert attachment.get_filename() == f"{report.report_id}.zip"
    assert attachment.get_content_type() == "application/zip"
    with zipfile.ZipFile(io.BytesIO(attachment.get_content())) as archive:
        assert sorted(archive.namelist()) == sorted([f"{report.report_id}.html", f"{report.report_id}.md"])
        with open(report.md_path, "rb") as handle:
            assert archive.read(f"{report.report_id}.md") == handle.read()


def test_hostile_route_cannot_inject_headers_or_html(tmp_path):
    route = "/a\r\nBcc: victim@example.com\r\n<img src=x onerror=alert(1)>"
    report = make_report(tmp_path, route=route)
    with smtp_server() as (controller, envelopes):
        assert _exporter(controller).export(report) is ExportResult.SUCCESS
        [envelope] = envelopes
    message = _parse(envelope)
    assert message["Bcc"] is None and envelope.rcpt_tos == ["oncall@example.com", "dev@example.com"]
    assert "\\r\\nBcc" in message["Subject"]
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_login_when_username_is_set(tmp_path):
    from aiosmtpd.smtp import AuthResult

    seen = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        seen.append((auth_data.login, auth_data.password))
        return AuthResult(success=auth_data.password == b"pw-123", handled=False)

    options = dict(authenticator=authenticator, auth_require_tls=False)
    with smtp_server(**options) as (controller, envelopes):
        good = _exporter(controller, username="perfmon", password="pw-123")
        assert good.export(make_report(tmp_path)) is ExportResult.SUCCESS, good.last_error
        bad = _exporter(controller, username="perfmon", password="wrong-pw-456", backoff_seconds=0.01,
                        timeout_seconds=5)
        assert bad.export(make_report(tmp_path)) is ExportResult.FAILURE
        assert len(envelopes) == 1
    assert (b"perfmon", b"pw-123") in seen
    assert "535" in bad.last_error and "wrong-pw-456" not in bad.last_error


def test_starttls_against_a_server_without_it_fails_clearly(tmp_path):
    with smtp_server() as (controller, envelopes):
        exporter = _exporter(controller, use_tls=True)
        assert exporter.export(make_report(tmp_path)) is ExportResult.FAILURE
        assert envelopes == []
    assert "STARTTLS" in exporter.last_error


def test_closed_port_is_retried_then_fails(tmp_path):
    exporter = EmailExporter(host="127.0.0.1", port=free_port(), sender="a@example.com", recipients="b@example.com",
                             use_tls=False, max_retries=2, backoff_seconds=0.01, timeout_seconds=5)
    assert exporter.export(make_report(tmp_path)) is ExportResult.FAILURE
    assert "3 attempts" in exporter.last_error


def test_env_configuration(tmp_path):
    with smtp_server() as (controller, envelopes):
        env = {"OTEL_PERFMON_SMTP_HOST": "127.0.0.1", "OTEL_PERFMON_SMTP_PORT": str(controller.port),
               "OTEL_PERFMON_SMTP_SENDER": "perfmon@example.com",
               "OTEL_PERFMON_SMTP_RECIPIENTS": "a@example.com, b@example.com",
               "OTEL_PERFMON_SMTP_USE_TLS": "false", "OTEL_PERFMON_EMAIL_SUBJECT_PREFIX": "[env]"}
        [exporter] = build_exporters(validate_exporter_specs(["email"]), env)
        assert exporter.export(make_report(tmp_path)) is ExportResult.SUCCESS, exporter.last_error
        [envelope] = envelopes
    assert envelope.rcpt_tos == ["a@example.com", "b@example.com"]
    assert _parse(envelope)["Subject"].startswith("[env] Slow GET")


def test_port_defaults():
    base = dict(host="smtp.example.com", sender="a@example.com", recipients="b@example.com")
    assert EmailExporter(**base).port == 587
    assert EmailExporter(**base, use_tls=False, use_ssl=True).port == 465
    assert EmailExporter(**base, use_tls=False).port == 25


@pytest.mark.parametrize("options, field", [
    ({}, "host"),
    ({"host": "h"}, "sender"),
    ({"host": "h", "sender": "a@example.com"}, "recipients"),
    ({"host": "h", "sender": "a@example.com", "recipients": "b@example.com", "use_ssl": True}, "use_ssl"),
    ({"host": "h", "sender": "a@example.com", "recipients": "b@example.com", "port": 0}, "port"),
    ({"host": "h", "sender": "a@example.com", "recipients": "b@example.com", "password": "x"}, "username"),
])
def test_invalid_configuration_names_exporter_and_field(options, field):
    with pytest.raises(ConfigurationError) as info:
        build_exporters(validate_exporter_specs([{"type": "email", **options}]), {})
    assert "exporters: email:" in str(info.value) and field in str(info.value)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 made with the openssl CLI: (cert, key)."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not available")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _server_context(certificate):
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def test_starttls_verifies_the_certificate(tmp_path, certificate):
    import ssl

    trusted = ssl.create_default_context(cafile=certificate[0])
    with smtp_server(tls_context=_server_context(certificate), require_starttls=True) as (controller, envelopes):
        exporter = _exporter(controller, use_tls=True, ssl_context=trusted)
        assert exporter.export(make_report(tmp_path)) is ExportResult.SUCCESS, exporter.last_error
        untrusted = _exporter(controller, use_tls=True)  # system CAs do not know our certificate
        assert untrusted.export(make_report(tmp_path)) is ExportResult.FAILURE
        assert len(envelopes) == 1
    assert "TLS error" in untrusted.last_error and "CERTIFICATE_VERIFY_FAILED" in untrusted.last_error


def test_implicit_ssl(tmp_path, certificate):
    import ssl

    trusted = ssl.create_default_context(cafile=certificate[0])
    with smtp_server(ssl_context=_server_context(certificate)) as (controller, envelopes):
        exporter = _exporter(controller, use_tls=False, use_ssl=True, ssl_context=trusted)
        assert exporter.export(make_report(tmp_path)) is ExportResult.SUCCESS, exporter.last_error
        [envelope] = envelopes
    assert _parse(envelope)["X-Perfmon-Report-Id"]
