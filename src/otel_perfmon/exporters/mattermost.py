"""``mattermost`` exporter: a message per new report, optionally with the report zip.

Usage (message only, incoming webhook)::

    configure_perfmon(exporters=[{"type": "mattermost",
                                  "webhook_url": "https://chat.example.com/hooks/xxxgeneratedkeyxxx"}])

With a bot account's token and a channel id the exporter also uploads
``<report_id>.zip`` (``<report_id>.html`` + ``<report_id>.md``) through Mattermost's files API
(``POST /api/v4/files``) and creates a post referencing it (``POST /api/v4/posts``)::

    configure_perfmon(exporters=[{"type": "mattermost",
                                  "webhook_url": "https://chat.example.com/hooks/xxxgeneratedkeyxxx",
                                  "bot_token": "…", "channel_id": "4xp9…"}])

``url`` (the server's base URL) defaults to the webhook URL's scheme and host (and any path
before ``/hooks/``). Without ``webhook_url`` the API post carries the whole message.
Environment variables::

    export OTEL_PERFMON_EXPORTERS=mattermost
    export OTEL_PERFMON_MATTERMOST_WEBHOOK_URL=https://chat.example.com/hooks/xxxgeneratedkeyxxx
    export OTEL_PERFMON_MATTERMOST_BOT_TOKEN=…          # optional: upload the zip
    export OTEL_PERFMON_MATTERMOST_CHANNEL_ID=…         # required with the bot token
    export OTEL_PERFMON_MATTERMOST_URL=https://chat.example.com   # optional

Request-derived text is shown in Markdown code spans, with ``@`` mentions defused.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, Mapping, Optional, Sequence

from otel_perfmon import environment_variables as ev
from otel_perfmon.exporters import _common, _message
from otel_perfmon.exporters._common import NotifierExporter
from otel_perfmon.exporters._http import DEFAULT_BACKOFF_SECONDS, DEFAULT_MAX_RETRIES, ExportError, HttpClient


def server_url_from_webhook(webhook_url: str) -> str:
    """``https://chat.example.com/hooks/abc`` -> ``https://chat.example.com`` (keeps a path prefix)."""
    head, sep, _tail = webhook_url.partition("/hooks/")
    if sep:
        return head.rstrip("/")
    from urllib.parse import urlsplit

    parts = urlsplit(webhook_url)
    return f"{parts.scheme}://{parts.netloc}"


class MattermostExporter(NotifierExporter):
    """Posts to a Mattermost incoming webhook; with ``bot_token`` and ``channel_id`` also
    uploads the report zip and posts it.

    ``webhook_url``: incoming webhook (required unless ``bot_token`` + ``channel_id``).
    ``bot_token``, ``channel_id``: bot access token and target channel id (both or neither).
    ``url``: server base URL for the API (default: derived from ``webhook_url``).
    ``username``, ``channel``, ``icon_url``: optional webhook overrides (if the server allows).
    ``timeout_seconds``, ``max_retries``, ``backoff_seconds``: see :class:`NotifierExporter`
    (the timeout bounds the whole export: message, upload and post).
    Raises ConfigurationError naming ``mattermost`` and the field for invalid options.
    """

    name = "mattermost"

    def __init__(self, webhook_url: Optional[str] = None, bot_token: Optional[str] = None,
                 channel_id: Optional[str] = None, url: Optional[str] = None, username: Optional[str] = None,
                 channel: Optional[str] = None, icon_url: Optional[str] = None,
                 timeout_seconds: Optional[float] = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 backoff_seconds: float = DEFAULT_BACKOFF_SECONDS, verify: Any = True) -> None:
        super().__init__(timeout_seconds, max_retries, backoff_seconds)
        if bot_token and not channel_id:
            _common.require(self.name, "channel_id", channel_id, ev.OTEL_PERFMON_MATTERMOST_CHANNEL_ID)
        if channel_id and not bot_token:
            _common.require(self.name, "bot_token", bot_token, ev.OTEL_PERFMON_MATTERMOST_BOT_TOKEN)
        self.bot_token = bot_token or None
        self.channel_id = channel_id or None
        if webhook_url is not None or not self.bot_token:
            self.webhook_url: Optional[str] = _common.http_url(
                self.name, "webhook_url", webhook_url, ev.OTEL_PERFMON_MATTERMOST_WEBHOOK_URL)
        else:
            self.webhook_url = None
        if self.bot_token:
            if url is None and self.webhook_url is None:
                _common.require(self.name, "url", url, ev.OTEL_PERFMON_MATTERMOST_URL)
            base = url if url is not None else server_url_from_webhook(self.webhook_url or "")
            self.url: Optional[str] = _common.http_url(self.name, "url", base,
                                                        ev.OTEL_PERFMON_MATTERMOST_URL).rstrip("/")
        else:
            self.url = url.rstrip("/") if isinstance(url, str) else None
        self.overrides = {k: v for k, v in (("username", username), ("channel", channel), ("icon_url", icon_url))
                          if v}
        self._client = HttpClient(self.timeout_seconds, self.max_retries, self.backoff_seconds, verify=verify)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> MattermostExporter:
        """Build from ``OTEL_PERFMON_MATTERMOST_*``; raises ConfigurationError when the webhook
        URL (or, with a bot token, the channel id) is missing."""
        environ = os.environ if environ is None else environ
        return cls(webhook_url=_common.env_str(environ, ev.OTEL_PERFMON_MATTERMOST_WEBHOOK_URL),
                   bot_token=_common.env_str(environ, ev.OTEL_PERFMON_MATTERMOST_BOT_TOKEN),
                   channel_id=_common.env_str(environ, ev.OTEL_PERFMON_MATTERMOST_CHANNEL_ID),
                   url=_common.env_str(environ, ev.OTEL_PERFMON_MATTERMOST_URL),
                   timeout_seconds=_common.default_timeout(environ))

    def secrets(self) -> Sequence[str]:
        return [self.webhook_url or "", self.bot_token or ""]

    def deliver(self, report: Any) -> None:
        """Send the message, then (bot mode) upload the zip and post it. Raises ExportError.

        Runs on the exporter's background thread; all calls share one deadline.
        """
        deadline = time.monotonic() + self.timeout_seconds
        if self.webhook_url:
            self._client.post(self.webhook_url, json_body={"text": _message.markdown_text(report), **self.overrides},
                              deadline=deadline)
        if self.bot_token:
            self._post_with_zip(report, deadline)

    def _post_with_zip(self, report: Any, deadline: float) -> None:
        auth = {"Authorization": f"Bearer {self.bot_token}"}
        message = _message.markdown_attachment_note(report) if self.webhook_url else _message.markdown_text(report)
        post: Dict[str, Any] = {"channel_id": self.channel_id, "message": message}
        archive = _message.report_zip(report)
        if archive is not None:
            response = self._client.post(
                f"{self.url}/api/v4/files", headers=auth, data={"channel_id": self.channel_id},
                files={"files": (f"{report.report_id}.zip", archive, "application/zip")}, deadline=deadline)
            try:
                file_id = response.json()["file_infos"][0]["id"]
            except (ValueError, KeyError, IndexError, TypeError):
                raise ExportError("Mattermost files API answered without file_infos[0].id") from None
            post["file_ids"] = [file_id]
        self._client.post(f"{self.url}/api/v4/posts", headers=auth, json_body=post, deadline=deadline)

    def shutdown(self) -> None:
        """Stop retries in progress and close connections."""
        self._client.close()
