"""``slack`` exporter: a readable message per new report through a Slack incoming webhook.

Usage::

    configure_perfmon(exporters=[{"type": "slack",
                                  "webhook_url": "https://hooks.slack.com/services/T000/B000/abc123"}])

or with environment variables::

    export OTEL_PERFMON_EXPORTERS=slack
    export OTEL_PERFMON_SLACK_WEBHOOK_URL=https://hooks.slack.com/services/T000/B000/abc123

The message (``text`` plus one mrkdwn section block) shows method and route, duration vs
threshold, service, trace id, the top hotspots and the report link (``report_url_template``)
or id. Request-derived text is escaped for mrkdwn (``&``, ``<``, ``>``) and shown in code
spans. Incoming webhooks cannot upload files; use ``mattermost``/``email``/``apprise`` for
the zip. The webhook URL is a secret: it is never logged.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional, Sequence

from otel_perfmon import environment_variables as ev
from otel_perfmon.exporters import _common, _message
from otel_perfmon.exporters._common import NotifierExporter
from otel_perfmon.exporters._http import DEFAULT_BACKOFF_SECONDS, DEFAULT_MAX_RETRIES, HttpClient


class SlackExporter(NotifierExporter):
    """Posts one message per report to a Slack incoming webhook.

    ``webhook_url`` (required), ``timeout_seconds``, ``max_retries``, ``backoff_seconds``
    (see :class:`NotifierExporter`), ``verify`` (TLS verification as in ``requests``).
    Raises ConfigurationError naming ``slack`` and the field for invalid options.
    """

    name = "slack"

    def __init__(self, webhook_url: Optional[str] = None, timeout_seconds: Optional[float] = None,
                 max_retries: int = DEFAULT_MAX_RETRIES, backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
                 verify: Any = True) -> None:
        super().__init__(timeout_seconds, max_retries, backoff_seconds)
        self.webhook_url = _common.http_url(self.name, "webhook_url", webhook_url, ev.OTEL_PERFMON_SLACK_WEBHOOK_URL)
        self._client = HttpClient(self.timeout_seconds, self.max_retries, self.backoff_seconds, verify=verify)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> SlackExporter:
        """Build from ``OTEL_PERFMON_SLACK_WEBHOOK_URL``; raises ConfigurationError when missing."""
        environ = os.environ if environ is None else environ
        return cls(webhook_url=_common.env_str(environ, ev.OTEL_PERFMON_SLACK_WEBHOOK_URL),
                   timeout_seconds=_common.default_timeout(environ))

    def secrets(self) -> Sequence[str]:
        return [self.webhook_url]

    def deliver(self, report: Any) -> None:
        """POST the message; raises ExportError on failure (background thread)."""
        self._client.post(self.webhook_url, json_body=_message.slack_payload(report))

    def shutdown(self) -> None:
        """Stop retries in progress and close connections."""
        self._client.close()
