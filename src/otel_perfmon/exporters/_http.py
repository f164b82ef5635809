"""Shared delivery logic of the notifier exporters: bounded retries and the HTTP client.

Every network call of a notifier goes through :class:`RetryPolicy` (used directly by the
e-mail exporter) or :class:`HttpClient` (webhook, Slack, Mattermost):

- one *deadline* per ``export`` call (``timeout_seconds``, default
  ``OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS`` or 30 s): each attempt's socket timeout is the
  time left, and no retry starts after the deadline;
- transient failures are retried at most ``max_retries`` times with exponential backoff
  (``backoff_seconds`` * 2**n, capped, with jitter): connection errors, HTTP 5xx, 408 and 429
  (``Retry-After`` honoured when it fits the deadline);
- other 4xx answers and redirects are never retried; a read timeout is not retried either
  (the receiver may already have the message, a retry would post it twice);
- error messages name the host only, never the URL path or query (Slack and Mattermost
  webhook URLs are secrets).

Everything here runs on the exporter's own background thread (or the CLI's thread).
"""

from __future__ import annotations

import random
import re
import threading
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, TypeVar
from urllib.parse import urlsplit

from otel_perfmon import __version__

T = TypeVar("T")

USER_AGENT = f"otel-perfmon/{__version__}"
DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 8.0
#: HTTP statuses worth another attempt (besides every 5xx).
RETRY_STATUSES = frozenset({408, 429})
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")]+)")


class ExportError(Exception):
    """A delivery failed; the message is safe to log and print (no URL paths or secrets).

    ``transient`` tells :class:`RetryPolicy` whether another attempt may succeed;
    ``retry_after_seconds`` is a server's requested wait (429 / 503 ``Retry-After``).
    """

    def __init__(self, message: str, transient: bool = False,
                 retry_after_seconds: Optional[float] = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.retry_after_seconds = retry_after_seconds


def safe_location(url: str) -> str:
    """``host:port`` of ``url`` for messages (the path of a webhook URL is its secret)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "?"


class RetryPolicy:
    """Runs one delivery with bounded retries inside one deadline.

    ``timeout_seconds`` (s) bounds the whole call including retries and backoff;
    ``max_retries`` is the number of extra attempts after the first (0 disables retries);
    ``backoff_seconds`` (s) is the first wait, doubled per retry up to 8 s, with jitter.
    :meth:`close` wakes a waiting backoff so ``shutdown()`` stays bounded.
    """

    def __init__(self, timeout_seconds: float, max_retries: int = DEFAULT_MAX_RETRIES,
                 backoff_seconds: float = DEFAULT_BACKOFF_SECONDS) -> None:
        self.timeout_seconds = float(timeout_seconds)
        self.max_retries = int(max_retries)
        self.backoff_seconds = float(backoff_seconds)
        self._closed = threading.Event()

    def close(self) -> None:
        """Stop retrying: a backoff wait in progress ends now and no new attempt starts."""
        self._closed.set()

    def _delay(self, retry: int, error: ExportError) -> float:
        delay = min(MAX_BACKOFF_SECONDS, self.backoff_seconds * (2.0 ** retry))
        delay *= random.uniform(0.5, 1.0)
        if error.retry_after_seconds is not None:
            delay = max(delay, error.retry_after_seconds)
        return delay

    def run(self, attempt: Callable[[float], T], deadline: Optional[float] = None) -> T:
        """Call ``attempt(seconds_left)`` until it returns; returns its value.

        ``deadline`` (a ``time.monotonic()`` value) lets several calls share one budget;
        by default the budget is ``timeout_seconds`` from now.

        ``attempt`` raises :class:`ExportError` (``transient=True`` to ask for a retry).
        Raises the last ExportError when retries are exhausted, the deadline passes, or
        :meth:`close` was called; the message then says how many attempts were made.
        """
        if deadline is None:
            deadline = time.monotonic() + self.timeout_seconds
        retry = 0
        while True:
            if self._closed.is_set():
                raise ExportError("exporter is shut down")
            seconds_left = deadline - time.monotonic()
            if seconds_left <= 0:
                raise ExportError(f"timeout of {self.timeout_seconds:g} s used up")
            try:
                return attempt(seconds_left)
            except ExportError as error:
                attempts = "1 attempt" if retry == 0 else f"{retry + 1} attempts"
                if not error.transient:
                    raise
                if retry >= self.max_retries:
                    raise ExportError(f"{error} (gave up after {attempts})") from None
                delay = self._delay(retry, error)
                if time.monotonic() + delay >= deadline:
                    raise ExportError(f"{error} (gave up after {attempts}: "
                                      f"timeout of {self.timeout_seconds:g} s)") from None
                if self._closed.wait(delay):
                    raise ExportError(f"{error} (exporter shut down during retries)") from None
                retry += 1


def _retry_after(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date; the exponential backoff applies


def _response_excerpt(response: Any, limit: int = 200) -> str:
    try:
        text = response.text or ""
    except Exception:
        return ""
    text = " ".join(text.split())
    return (": " + text[:limit]) if text else ""


class HttpClient:
    """A ``requests`` session with the retry policy above. One per exporter.

    ``post`` returns the 2xx :class:`requests.Response` or raises :class:`ExportError`.
    Not for concurrent use from several threads (each exporter has one dispatcher thread).
    """

    def __init__(self, timeout_seconds: float, max_retries: int = DEFAULT_MAX_RETRIES,
                 backoff_seconds: float = DEFAULT_BACKOFF_SECONDS,
                 verify: Any = True) -> None:
        import requests

        self._requests = requests
        self.policy = RetryPolicy(timeout_seconds, max_retries, backoff_seconds)
        self._verify = verify
        self._session = requests.Session()
        self._session.headers["User-Agent"] = USER_AGENT
        self._lock = threading.Lock()

    def post(self, url: str, *, json_body: Any = None, data: Any = None,
             files: Optional[Mapping[str, Tuple[str, bytes, str]]] = None,
             headers: Optional[Dict[str, str]] = None, deadline: Optional[float] = None) -> Any:
        """POST to ``url`` with retries; ``json_body`` is sent as JSON, ``data`` as bytes or
        form fields, ``files`` as multipart parts ``{field: (filename, bytes, mimetype)}``.

        ``deadline``: a shared ``time.monotonic()`` deadline (default: ``timeout_seconds`` from now).
        Returns the response (status 2xx). Raises :class:`ExportError` otherwise.
        Redirects are not followed (a 3xx is a failure).
        """
        where = safe_location(url)
        requests = self._requests

        def attempt(seconds_left: float) -> Any:
            try:
                response = self._session.post(url, json=json_body, data=data, files=files, headers=headers,
                                              timeout=(seconds_left, seconds_left), allow_redirects=False,
                                              verify=self._verify)
            except requests.exceptions.ConnectTimeout:
                raise ExportError(f"connection to {where} timed out", transient=True) from None
            except requests.exceptions.Timeout:
                raise ExportError(f"no answer from {where} within the timeout") from None
            except requests.exceptions.SSLError as exc:
                raise ExportError(f"TLS error talking to {where}: {type(exc).__name__}") from None
            except requests.exceptions.ConnectionError as exc:
                raise ExportError(f"cannot connect to {where} ({_connection_reason(exc)})",
                                  transient=True) from None
            except requests.exceptions.RequestException as exc:
                raise ExportError(f"request to {where} failed: {type(exc).__name__}") from None
            status = response.status_code
            if 200 <= status < 300:
                return response
            excerpt = _response_excerpt(response)
            response.close()
            if status >= 500 or status in RETRY_STATUSES:
                raise ExportError(f"HTTP {status} from {where}{excerpt}", transient=True,
                                  retry_after_seconds=_retry_after(response.headers.get("Retry-After")))
            if 300 <= status < 400:
                raise ExportError(f"HTTP {status} redirect from {where} (not followed; check the URL)")
            raise ExportError(f"HTTP {status} from {where}{excerpt}")

        return self.policy.run(attempt, deadline)

    def close(self) -> None:
        """Stop retries in progress and close the session's connections."""
        self.policy.close()
        try:
            self._session.close()
        except Exception:
            return None


def _connection_reason(exc: BaseException) -> str:
    # requests' message repeats the full URL (a secret for chat webhooks); keep only the cause.
    match = _ERRNO.search(str(exc))
    if match:
        return match.group(1).strip()
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return type(reason).__name__ if reason is not None else type(exc).__name__
