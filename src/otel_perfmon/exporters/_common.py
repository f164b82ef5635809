"""Shared parts of the notifier exporters: the base class and option/env-var parsing.

:class:`NotifierExporter` turns a delivery error into ``ExportResult.FAILURE`` plus a log line
and :attr:`~NotifierExporter.last_error` (what ``otel-perfmon test-notifiers`` prints), with
every configured secret scrubbed from the text. The option helpers raise
:class:`~otel_perfmon.config.ConfigurationError` naming the exporter and the field.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence
from urllib.parse import unquote, urlsplit

from otel_perfmon.config import env_value
from otel_perfmon.exporters._http import DEFAULT_BACKOFF_SECONDS, DEFAULT_MAX_RETRIES, ExportError
from otel_perfmon.exporters.base import ExportResult, ReportExporter

_logger = logging.getLogger("otel_perfmon.exporters")


def config_error(exporter: str, message: str) -> Exception:
    from otel_perfmon.errors import ConfigurationError

    return ConfigurationError(f"exporters: {exporter}: {message}")


def require(exporter: str, field: str, value: Any, env_var: Optional[str] = None) -> Any:
    """``value`` unless it is None or empty; else ConfigurationError naming exporter and field."""
    if value is None or (isinstance(value, (str, list, tuple)) and not value):
        hint = f" (or set {env_var})" if env_var else ""
        raise config_error(exporter, f"missing required field {field!r}{hint}")
    return value


def http_url(exporter: str, field: str, value: Any, env_var: Optional[str] = None) -> str:
    """A required ``http://`` / ``https://`` URL; raises ConfigurationError otherwise.

    The message never repeats the URL (webhook URLs are secrets)."""
    require(exporter, field, value, env_var)
    if not isinstance(value, str):
        raise config_error(exporter, f"{field} must be a string URL, got {type(value).__name__}")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise config_error(exporter, f"{field} must be an http:// or https:// URL")
    return value.strip()


def number(exporter: str, field: str, value: Any, minimum: float = 0.0, allow_equal: bool = False) -> float:
    """A finite number > ``minimum`` (>= with ``allow_equal``); raises ConfigurationError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or value in (float("inf"), float("-inf")):
        raise config_error(exporter, f"{field} must be a finite number, got {value!r}")
    if value < minimum or (value == minimum and not allow_equal):
        raise config_error(exporter, f"{field} must be {'>=' if allow_equal else '>'} {minimum:g}, got {value!r}")
    return float(value)


def string_list(exporter: str, field: str, value: Any) -> List[str]:
    """A list of non-empty strings from a list or a comma-separated string."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",")]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise config_error(exporter, f"{field} must be a list of strings or a comma-separated string")
    return [v.strip() for v in value if v.strip()]


def env_str(environ: Mapping[str, str], name: str) -> Optional[str]:
    """The stripped value of ``name`` or None when unset or blank."""
    raw = environ.get(name)
    return raw.strip() if raw is not None and raw.strip() else None


def env_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """true/false/1/0/yes/no; an invalid value logs a warning and gives ``default``."""
    raw = env_str(environ, name)
    if raw is None:
        return default
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    _logger.warning("otel-perfmon: ignoring %s=%r (expected true/false); using %r", name, raw, default)
    return default


def env_int(environ: Mapping[str, str], name: str) -> Optional[int]:
    """An int, or None when unset or invalid (invalid values log a warning)."""
    raw = env_str(environ, name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        _logger.warning("otel-perfmon: ignoring %s=%r (expected an integer); using the default", name, raw)
        return None


def env_headers(environ: Mapping[str, str], name: str) -> Dict[str, str]:
    """``k1=v1,k2=v2`` (values URL-decoded, as OTEL_EXPORTER_OTLP_HEADERS); bad items warn."""
    raw = env_str(environ, name)
    headers: Dict[str, str] = {}
    for item in (raw or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _logger.warning("otel-perfmon: ignoring an item of %s without 'name=value'", name)
            continue
        headers[unquote(key.strip())] = unquote(value.strip())
    return headers


def default_timeout(environ: Optional[Mapping[str, str]] = None) -> float:
    """``OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS`` when valid, else its default (30 s): the config
    table's rule (:func:`otel_perfmon.config.env_value`)."""
    return float(env_value("export_timeout_seconds", environ))


class NotifierExporter(ReportExporter):
    """Base of the built-in notifiers: subclasses implement :meth:`deliver`.

    ``timeout_seconds`` (s; default ``OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS`` or 30) bounds one
    ``export`` call including retries; ``max_retries`` (default 3) extra attempts for
    transient failures, waiting ``backoff_seconds`` (default 0.5 s) doubled per retry.
    ``export`` runs on the exporter's background thread and never raises: a failure is
    logged (warning, secrets scrubbed), kept in :attr:`last_error`, and returned as FAILURE.
    """

    name = "notifier"

    def __init__(self, timeout_seconds: Optional[float] = None, max_retries: int = DEFAULT_MAX_RETRIES,
                 backoff_seconds: float = DEFAULT_BACKOFF_SECONDS) -> None:
        self.timeout_seconds = default_timeout() if timeout_seconds is None else \
            number(self.name, "timeout_seconds", timeout_seconds)
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise config_error(self.name, f"max_retries must be an int >= 0, got {max_retries!r}")
        self.max_retries = max_retries
        self.backoff_seconds = number(self.name, "backoff_seconds", backoff_seconds, allow_equal=True)
        #: Why the last ``export`` failed (secrets scrubbed), or None after a success.
        self.last_error: Optional[str] = None

    def secrets(self) -> Sequence[str]:
        """Configured values that must never appear in logs or messages (URLs, tokens...)."""
        return ()

    def scrub(self, text: str) -> str:
        """``text`` with every configured secret replaced by ``[REDACTED]``."""
        for secret in sorted((s for s in self.secrets() if s and len(s) >= 4), key=len, reverse=True):
            text = text.replace(secret, "[REDACTED]")
        return text

    def deliver(self, report: Any) -> None:
        """Send one report; raises :class:`ExportError` (or anything) on failure."""
        raise ExportError(f"{type(self).__name__} does not implement deliver()")

    def export(self, report: Any) -> ExportResult:
        """Deliver ``report``; SUCCESS, or FAILURE with :attr:`last_error` set. Never raises."""
        try:
            self.deliver(report)
        except ExportError as exc:
            return self._failure(str(exc))
        except Exception as exc:  # a bug or an odd library error: still never reaches the app
            return self._failure(f"{type(exc).__name__}: {exc}")
        self.last_error = None
        return ExportResult.SUCCESS

    def _failure(self, reason: str) -> ExportResult:
        reason = self.scrub(reason)
        self.last_error = reason
        _logger.warning("otel-perfmon: exporter %s failed: %s", self.name, reason)
        return ExportResult.FAILURE
