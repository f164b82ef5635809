"""``apprise`` exporter: any channel apprise supports (Teams, Discord, Telegram, ntfy, …).

Needs the extra: ``pip install "otel-perfmon[apprise]"``. Usage::

    configure_perfmon(exporters=[{"type": "apprise",
                                  "urls": ["msteams://…", "ntfys://ntfy.example.com/perf"]}])

or with environment variables::

    export OTEL_PERFMON_EXPORTERS=apprise
    export OTEL_PERFMON_APPRISE_URLS="msteams://…,ntfys://ntfy.example.com/perf"

The message is the Markdown text of the Mattermost exporter (apprise converts it for each
channel); ``<report_id>.zip`` is attached for channels that accept attachments. Each
service's socket timeouts are set to ``timeout_seconds``. apprise URLs hold credentials:
they are never logged.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, List, Mapping, Optional, Sequence

from otel_perfmon import environment_variables as ev
from otel_perfmon.exporters import _common, _message
from otel_perfmon.exporters._common import NotifierExporter
from otel_perfmon.exporters._http import ExportError


class AppriseExporter(NotifierExporter):
    """Notifies every apprise URL in ``urls`` (list or comma-separated string, required).

    ``attach_zip`` (default True): attach the report zip where supported.
    ``timeout_seconds``: socket timeouts of each service (s). apprise does its own retries
    per service, so ``max_retries``/``backoff_seconds`` are not used here.
    Raises ConfigurationError naming ``apprise`` and the field when the extra is missing,
    ``urls`` is empty, or apprise rejects a URL (the URL itself is not repeated).
    """

    name = "apprise"

    def __init__(self, urls: Any = None, attach_zip: bool = True, timeout_seconds: Optional[float] = None,
                 max_retries: int = 0, backoff_seconds: float = 0.0) -> None:
        super().__init__(timeout_seconds, max_retries, backoff_seconds)
        try:
            import apprise
        except ImportError:
            raise _common.config_error(
                self.name, "the apprise package is missing; pip install 'otel-perfmon[apprise]'") from None
        self._apprise = apprise
        self.urls: List[str] = _common.require(self.name, "urls", _common.string_list(self.name, "urls", urls or []),
                                               ev.OTEL_PERFMON_APPRISE_URLS)
        if not isinstance(attach_zip, bool):
            raise _common.config_error(self.name, f"attach_zip must be a bool, got {attach_zip!r}")
        self.attach_zip = attach_zip
        self._notifier = apprise.Apprise()
        for number, url in enumerate(self.urls, start=1):
            if not self._notifier.add(url):
                raise _common.config_error(self.name, f"urls: item {number} is not a valid apprise URL")
        for service in self._notifier:
            for attr in ("socket_connect_timeout", "socket_read_timeout"):
                if hasattr(service, attr):
                    setattr(service, attr, self.timeout_seconds)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> AppriseExporter:
        """Build from ``OTEL_PERFMON_APPRISE_URLS``; raises ConfigurationError when missing."""
        environ = os.environ if environ is None else environ
        return cls(urls=_common.env_str(environ, ev.OTEL_PERFMON_APPRISE_URLS),
                   timeout_seconds=_common.default_timeout(environ))

    def secrets(self) -> Sequence[str]:
        return list(self.urls)

    def deliver(self, report: Any) -> None:
        """Notify every URL; raises ExportError when any service failed (background thread)."""
        apprise = self._apprise
        tmpdir = None
        attach = None
        try:
            archive = _message.report_zip(report) if self.attach_zip else None
            if archive is not None:
                tmpdir = tempfile.mkdtemp(prefix="otel-perfmon-")
                path = os.path.join(tmpdir, f"{report.report_id}.zip")
                with open(path, "wb") as handle:
                    handle.write(archive)
                attach = apprise.AppriseAttachment(path)
            ok = self._notifier.notify(body=_message.markdown_text(report), title=_message.title(report),
                                       body_format=apprise.NotifyFormat.MARKDOWN, attach=attach)
        except OSError as exc:
            raise ExportError(f"cannot prepare the attachment: {exc}") from None
        finally:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
        if not ok:
            raise ExportError(f"apprise could not notify every service ({len(self.urls)} configured)")
