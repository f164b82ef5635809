"""``email`` exporter: an e-mail per new report (text + HTML) with the report zip attached.

Usage::

    configure_perfmon(exporters=[{"type": "email", "host": "smtp.example.com", "port": 587,
                                  "username": "perfmon", "password": "…",
                                  "sender": "perfmon@example.com",
                                  "recipients": ["oncall@example.com"], "use_tls": True}])

or with environment variables::

    export OTEL_PERFMON_EXPORTERS=email
    export OTEL_PERFMON_SMTP_HOST=smtp.example.com
    export OTEL_PERFMON_SMTP_PORT=587                 # default: 465 with SSL, 587 with STARTTLS, else 25
    export OTEL_PERFMON_SMTP_USERNAME=perfmon         # optional (login only when set)
    export OTEL_PERFMON_SMTP_PASSWORD=…
    export OTEL_PERFMON_SMTP_SENDER=perfmon@example.com
    export OTEL_PERFMON_SMTP_RECIPIENTS=oncall@example.com,dev@example.com
    export OTEL_PERFMON_SMTP_USE_TLS=true             # STARTTLS (default true)
    export OTEL_PERFMON_SMTP_USE_SSL=false            # implicit TLS (default false)
    export OTEL_PERFMON_EMAIL_SUBJECT_PREFIX="[perfmon]"

Security: ``use_tls`` (STARTTLS) and ``use_ssl`` verify the server certificate with the
system CA store; ``use_tls=False, use_ssl=False`` sends in clear text (local relays only).
The attachment is ``<report_id>.zip`` with ``<report_id>.html`` and ``<report_id>.md``.
Connection errors and SMTP 4xx answers are retried (bounded, see ``_http.RetryPolicy``);
5xx answers (rejected recipient, bad login) are not.
"""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, List, Mapping, Optional, Sequence

from otel_perfmon import environment_variables as ev
from otel_perfmon.exporters import _common, _message
from otel_perfmon.exporters._common import NotifierExporter
from otel_perfmon.exporters._http import DEFAULT_BACKOFF_SECONDS, DEFAULT_MAX_RETRIES, ExportError, RetryPolicy

DEFAULT_SUBJECT_PREFIX = "[perfmon]"


class EmailExporter(NotifierExporter):
    """Sends one e-mail per report with smtplib.

    ``host``, ``sender``, ``recipients`` (list or comma-separated) are required.
    ``port``: default 465 (``use_ssl``), 587 (``use_tls``) or 25. ``username``/``password``:
    login when ``username`` is set. ``use_tls``: STARTTLS (default True); ``use_ssl``: implicit
    TLS (default False; not both). ``subject_prefix`` (default ``[perfmon]``).
    ``attach_zip`` (default True). ``ssl_context``: an ``ssl.SSLContext`` (default: system CAs).
    ``timeout_seconds``, ``max_retries``, ``backoff_seconds``: see :class:`NotifierExporter`.
    Raises ConfigurationError naming ``email`` and the field for invalid options.
    """

    name = "email"

    def __init__(self, host: Optional[str] = None, port: Optional[int] = None, username: Optional[str] = None,
                 password: Optional[str] = None, sender: Optional[str] = None, recipients: Any = None,
                 use_tls: bool = True, use_ssl: bool = False, subject_prefix: str = DEFAULT_SUBJECT_PREFIX,
                 attach_zip: bool = True, ssl_context: Optional[ssl.SSLContext] = None,
                 timeout_seconds: Optional[float] = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 backoff_seconds: float = DEFAULT_BACKOFF_SECONDS) -> None:
        super().__init__(timeout_seconds, max_retries, backoff_seconds)
        self.host = str(_common.require(self.name, "host", host, ev.OTEL_PERFMON_SMTP_HOST)).strip()
        self.sender = str(_common.require(self.name, "sender", sender, ev.OTEL_PERFMON_SMTP_SENDER)).strip()
        self.recipients: List[str] = _common.require(
            self.name, "recipients", _common.string_list(self.name, "recipients", recipients or []),
            ev.OTEL_PERFMON_SMTP_RECIPIENTS)
        for field, value in (("use_tls", use_tls), ("use_ssl", use_ssl), ("attach_zip", attach_zip)):
            if not isinstance(value, bool):
                raise _common.config_error(self.name, f"{field} must be a bool, got {value!r}")
        if use_tls and use_ssl:
            raise _common.config_error(self.name, "use_tls (STARTTLS) and use_ssl (implicit TLS) exclude each other")
        self.use_tls, self.use_ssl, self.attach_zip = use_tls, use_ssl, attach_zip
        if port is None:
            port = 465 if use_ssl else 587 if use_tls else 25
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise _common.config_error(self.name, f"port must be an int in 1..65535, got {port!r}")
        self.port = port
        if password and not username:
            raise _common.config_error(self.name, "password is set but username is missing")
        self.username, self._password = username or None, password or ""
        if not isinstance(subject_prefix, str):
            raise _common.config_error(self.name, "subject_prefix must be a string")
        self.subject_prefix = subject_prefix
        self._ssl_context = ssl_context
        self._retry = RetryPolicy(self.timeout_seconds, self.max_retries, self.backoff_seconds)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> EmailExporter:
        """Build from ``OTEL_PERFMON_SMTP_*`` / ``OTEL_PERFMON_EMAIL_SUBJECT_PREFIX``.

        Raises ConfigurationError when host, sender or recipients are missing; invalid
        port/boolean values log a warning and use the default.
        """
        environ = os.environ if environ is None else environ
        prefix = environ.get(ev.OTEL_PERFMON_EMAIL_SUBJECT_PREFIX)
        return cls(host=_common.env_str(environ, ev.OTEL_PERFMON_SMTP_HOST),
                   port=_common.env_int(environ, ev.OTEL_PERFMON_SMTP_PORT),
                   username=_common.env_str(environ, ev.OTEL_PERFMON_SMTP_USERNAME),
                   password=environ.get(ev.OTEL_PERFMON_SMTP_PASSWORD) or None,
                   sender=_common.env_str(environ, ev.OTEL_PERFMON_SMTP_SENDER),
                   recipients=_common.env_str(environ, ev.OTEL_PERFMON_SMTP_RECIPIENTS),
                   use_tls=_common.env_bool(environ, ev.OTEL_PERFMON_SMTP_USE_TLS, True),
                   use_ssl=_common.env_bool(environ, ev.OTEL_PERFMON_SMTP_USE_SSL, False),
                   subject_prefix=DEFAULT_SUBJECT_PREFIX if prefix is None else prefix,
                   timeout_seconds=_common.default_timeout(environ))

    def secrets(self) -> Sequence[str]:
        return [self._password]

    def build_message(self, report: Any) -> EmailMessage:
        """The e-mail for ``report``: text and HTML alternatives, the zip attached.

        Reads the report's html/md files (background thread). Raises OSError on a read error.
        """
        archive = _message.report_zip(report) if self.attach_zip else None
        message = EmailMessage()
        message["Subject"] = _message.subject(report, self.subject_prefix)
        message["From"] = self.sender
        message["To"] = ", ".join(self.recipients)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        message["Message-ID"] = make_msgid(domain=self.sender.rpartition("@")[2] or None)
        message["X-Perfmon-Report-Id"] = _message.one_line(report.report_id, 64)
        message.set_content(_message.text_body(report, attached=archive is not None))
        message.add_alternative(_message.html_body(report, attached=archive is not None), subtype="html")
        if archive is not None:
            message.add_attachment(archive, maintype="application", subtype="zip",
                                   filename=f"{report.report_id}.zip")
        return message

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _send_once(self, message: EmailMessage, seconds_left: float) -> None:
        where = f"{self.host}:{self.port}"
        try:
            if self.use_ssl:
                client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=seconds_left,
                                                        context=self._context())
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=seconds_left)
            try:
                if self.use_tls:
                    client.starttls(context=self._context())
                if self.username:
                    client.login(self.username, self._password)
                client.send_message(message, from_addr=self.sender, to_addrs=self.recipients)
            finally:
                try:
                    client.quit()
                except (smtplib.SMTPException, OSError):
                    client.close()
        except smtplib.SMTPRecipientsRefused as exc:
            raise ExportError(f"SMTP server {where} refused the recipients: "
                              f"{', '.join(sorted(exc.recipients))}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise ExportError(f"SMTP server {where}: {exc}") from None
        except smtplib.SMTPResponseException as exc:
            error = exc.smtp_error
            text = error.decode("utf-8", "replace") if isinstance(error, bytes) else str(error)
            raise ExportError(f"SMTP {exc.smtp_code} from {where}: {_message.one_line(text, 200)}",
                              transient=400 <= exc.smtp_code < 500) from None
        except (smtplib.SMTPServerDisconnected, ConnectionError, socket.gaierror) as exc:
            raise ExportError(f"cannot talk to SMTP server {where} ({type(exc).__name__}: {exc})",
                              transient=True) from None
        except (socket.timeout, TimeoutError):
            raise ExportError(f"SMTP server {where} did not answer within the timeout") from None
        except ssl.SSLError as exc:
            raise ExportError(f"TLS error with SMTP server {where}: {exc}") from None
        except (smtplib.SMTPException, OSError) as exc:
            raise ExportError(f"SMTP error with {where}: {type(exc).__name__}: {exc}") from None

    def deliver(self, report: Any) -> None:
        """Build and send the e-mail; raises ExportError on failure (background thread)."""
        try:
            message = self.build_message(report)
        except OSError as exc:
            raise ExportError(f"cannot read the report files: {exc}") from None
        self._retry.run(lambda seconds_left: self._send_once(message, seconds_left))

    def shutdown(self) -> None:
        """Stop retries in progress."""
        self._retry.close()
