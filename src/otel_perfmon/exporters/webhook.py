"""``webhook`` exporter: POSTs a JSON summary of each new report to a URL.

Usage::

    configure_perfmon(exporters=[{"type": "webhook", "url": "https://hooks.example.com/perfmon",
                                  "headers": {"X-Team": "checkout"}, "secret": "s3cr3t"}])

or with environment variables::

    export OTEL_PERFMON_EXPORTERS=webhook
    export OTEL_PERFMON_WEBHOOK_URL=https://hooks.example.com/perfmon
    export OTEL_PERFMON_WEBHOOK_HEADERS="X-Team=checkout"      # optional, k=v,k2=v2 (URL-decoded)
    export OTEL_PERFMON_WEBHOOK_SECRET=s3cr3t                  # optional: sign the body

The body is ``otel_perfmon.exporters._message.summary(report)`` (``schema_version`` 1,
``Content-Type: application/json``, UTF-8). With a ``secret`` the request carries
``X-Perfmon-Signature: sha256=<hex HMAC-SHA256 of the raw body with the secret>`` (header
name configurable with ``signature_header``); a receiver verifies it with
``hmac.compare_digest``. Transient failures are retried (see ``_http``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from typing import Any, Dict, Mapping, Optional, Sequence

from otel_perfmon import environment_variables as ev
from otel_perfmon.exporters import _common, _message
from otel_perfmon.exporters._common import NotifierExporter
from otel_perfmon.exporters._http import DEFAULT_BACKOFF_SECONDS, DEFAULT_MAX_RETRIES, HttpClient

DEFAULT_SIGNATURE_HEADER = "X-Perfmon-Signature"


def sign(body: bytes, secret: str) -> str:
    """The signature header value for ``body``: ``sha256=`` + hex HMAC-SHA256 with ``secret``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookExporter(NotifierExporter):
    """POSTs the report summary as JSON to ``url``.

    ``url``: http(s) endpoint (required). ``headers``: extra request headers (dict).
    ``secret``: HMAC key; when set the body is signed in ``signature_header``.
    ``timeout_seconds``, ``max_retries``, ``backoff_seconds``: see :class:`NotifierExporter`.
    ``verify``: TLS verification as in ``requests`` (True, False or a CA bundle path).
    Raises ConfigurationError (naming ``webhook`` and the field) for invalid options.
    """

    name = "webhook"

    def __init__(self, url: Optional[str] = None, headers: Optional[Mapping[str, str]] = None,
                 secret: Optional[str] = None, signature_header: str = DEFAULT_SIGNATURE_HEADER,
                 timeout_seconds: Optional[float] = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 backoff_seconds: float = DEFAULT_BACKOFF_SECONDS, verify: Any = True) -> None:
        super().__init__(timeout_seconds, max_retries, backoff_seconds)
        self.url = _common.http_url(self.name, "url", url, ev.OTEL_PERFMON_WEBHOOK_URL)
        if headers is not None and (not isinstance(headers, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items())):
            raise _common.config_error(self.name, "headers must be a dict of strings")
        self.headers: Dict[str, str] = dict(headers or {})
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise _common.config_error(self.name, "secret must be a non-empty string")
        self._secret = secret
        if not isinstance(signature_header, str) or not signature_header.strip():
            raise _common.config_error(self.name, "signature_header must be a header name")
        self.signature_header = signature_header.strip()
        self._client = HttpClient(self.timeout_seconds, self.max_retries, self.backoff_seconds, verify=verify)

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> WebhookExporter:
        """Build from ``OTEL_PERFMON_WEBHOOK_*`` (and the export timeout) variables.

        Raises ConfigurationError when ``OTEL_PERFMON_WEBHOOK_URL`` is missing or invalid.
        """
        environ = os.environ if environ is None else environ
        return cls(url=_common.env_str(environ, ev.OTEL_PERFMON_WEBHOOK_URL),
                   headers=_common.env_headers(environ, ev.OTEL_PERFMON_WEBHOOK_HEADERS),
                   secret=_common.env_str(environ, ev.OTEL_PERFMON_WEBHOOK_SECRET),
                   timeout_seconds=_common.default_timeout(environ))

    def secrets(self) -> Sequence[str]:
        return [self.url, self._secret or "", *self.headers.values()]

    def deliver(self, report: Any) -> None:
        """POST the summary; raises ExportError on failure (background thread)."""
        body = json.dumps(_message.summary(report), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8", **self.headers}
        if self._secret:
            headers[self.signature_header] = sign(body, self._secret)
        self._client.post(self.url, data=body, headers=headers)

    def shutdown(self) -> None:
        """Stop retries in progress and close connections."""
        self._client.close()
