"""``web-perfmonitor``'s API on otel-perfmon: switch by changing one import line.

Usage: replace ``from web_perfmonitor import ...`` by::

    from otel_perfmon.compat.web_perfmonitor import MonitorConfig, PerformanceMiddleware, profile

    config = MonitorConfig(threshold_seconds=0.5, alert_window_days=7, log_path="/var/log/myapp",
                           url_whitelist=["/api/*"])
    PerformanceMiddleware(app, config=config)      # a Flask or FastAPI app

``MonitorConfig`` has web-perfmonitor's fields and defaults, ``MonitorConfig.from_env()`` reads
its ``PERF_*`` variables, and ``notice_list`` takes its ``mattermost`` and ``email`` dicts with
their keys. ``PerformanceMiddleware`` maps them onto :func:`otel_perfmon.configure_perfmon`
(the table below) and instruments the app with OTel's instrumentor; when the process has no
OpenTelemetry SDK ``TracerProvider`` yet, it sets one (service name from ``OTEL_SERVICE_NAME``,
else the app's name), so spans exist even in an app that never used OpenTelemetry.

=============================  ==================================================================
web-perfmonitor                otel-perfmon
=============================  ==================================================================
threshold_seconds              threshold_seconds
alert_window_days              dedup_window_seconds (days x 86400)
log_path                       report_dir (JSON, HTML and Markdown reports, and the dedup store)
url_whitelist / url_blacklist  include_urls / exclude_urls (globs on the path and route template)
notice_list                    exporters: ``mattermost`` (server_url -> url, token -> bot_token,
                               channel_id), ``email`` (smtp_host -> host, smtp_port -> port,
                               username, password, sender, recipients, use_tls, use_ssl,
                               subject_prefix)
notice_timeout_seconds         export_timeout_seconds
notice_queue_size              queue_size
graceful_shutdown_seconds      ``PerformanceMiddleware.shutdown()``'s default timeout
capture_request_headers        capture_headers=[] when False (sensitive headers stay redacted)
included_headers               capture_headers
max_performance_overhead       profile_budget (pyinstrument time per second of wall time)
=============================  ==================================================================

Only the fields that differ from web-perfmonitor's defaults are passed on, so ``OTEL_PERFMON_*``
variables still apply to the others; ``log_path``'s default ``/tmp`` is used unless
``OTEL_PERFMON_REPORT_DIR`` is set. An option with no counterpart (a notifier ``format`` of
``text``, an unknown notifier type or key) is logged as a warning once per process, naming it,
and otherwise ignored. Invalid values raise :class:`otel_perfmon.ConfigurationError` (a
``ValueError``) naming the field, as web-perfmonitor's own ``ConfigurationError`` does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Set

from otel_perfmon.errors import ConfigurationError

__all__ = ["MonitorConfig", "PerformanceMiddleware", "profile", "get_config", "set_config", "ConfigurationError"]

_logger = logging.getLogger("otel_perfmon.compat.web_perfmonitor")
_warned: Set[str] = set()
_warned_lock = threading.Lock()

#: web-perfmonitor's environment variables -> MonitorConfig field, parser.
_ENV: Dict[str, str] = {
    "PERF_THRESHOLD": "threshold_seconds",
    "PERF_ALERT_WINDOW": "alert_window_days",
    "PERF_MAX_OVERHEAD": "max_performance_overhead",
    "PERF_LOG_PATH": "log_path",
    "PERF_URL_WHITELIST": "url_whitelist",
    "PERF_URL_BLACKLIST": "url_blacklist",
    "PERF_NOTICE_TIMEOUT": "notice_timeout_seconds",
    "PERF_NOTICE_QUEUE_SIZE": "notice_queue_size",
    "PERF_SHUTDOWN_TIMEOUT": "graceful_shutdown_seconds",
    "PERF_CAPTURE_REQUEST_HEADERS": "capture_request_headers",
    "PERF_INCLUDED_HEADERS": "included_headers",
}
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
_DAY_SECONDS = 86400


def _warn_once(option: str, message: str) -> None:
    with _warned_lock:
        if option in _warned:
            return
        _warned.add(option)
    _logger.warning("otel-perfmon (web-perfmonitor compatibility): %s", message)


@dataclass
class MonitorConfig:
    """web-perfmonitor's configuration, field for field (names, types, defaults, checks)."""

    threshold_seconds: float = 1.0
    alert_window_days: int = 10
    max_performance_overhead: float = 0.05
    log_path: str = "/tmp"
    url_whitelist: List[str] = field(default_factory=list)
    url_blacklist: List[str] = field(default_factory=list)
    notice_list: List[Dict[str, Any]] = field(default_factory=list)
    notice_timeout_seconds: float = 30.0
    notice_queue_size: int = 1000
    graceful_shutdown_seconds: float = 5.0
    capture_request_headers: bool = True
    included_headers: Optional[List[str]] = None

    def __post_init__(self) -> None:
        checks = (("threshold_seconds", self.threshold_seconds > 0, "must be positive"),
                  ("alert_window_days", self.alert_window_days >= 0, "must be non-negative"),
                  ("max_performance_overhead", 0 < self.max_performance_overhead <= 1, "must be in (0, 1]"),
                  ("notice_timeout_seconds", self.notice_timeout_seconds > 0, "must be positive"),
                  ("notice_queue_size", self.notice_queue_size > 0, "must be positive"),
                  ("graceful_shutdown_seconds", self.graceful_shutdown_seconds >= 0, "must be non-negative"))
        for name, ok, rule in checks:
            if not ok:
                raise ConfigurationError(f"{name} {rule}, got {getattr(self, name)!r}")

    @classmethod
    def from_env(cls) -> MonitorConfig:
        """A config from web-perfmonitor's ``PERF_*`` variables (lists comma-separated,
        booleans true/false, 1/0, yes/no). Raises ConfigurationError naming a bad variable."""
        kwargs: Dict[str, Any] = {}
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        for variable, name in _ENV.items():
            raw = os.environ.get(variable)
            if not raw:
                continue
            kind = str(types[name])
            try:
                if "List" in kind:
                    kwargs[name] = [part.strip() for part in raw.split(",") if part.strip()]
                elif kind == "bool":
                    if raw.lower() not in _TRUE + _FALSE:
                        raise ValueError(raw)
                    kwargs[name] = raw.lower() in _TRUE
                elif kind == "int":
                    kwargs[name] = int(raw)
                elif kind == "float":
                    kwargs[name] = float(raw)
                else:
                    kwargs[name] = raw
            except ValueError:
                raise ConfigurationError(f"Invalid {variable} value: {raw!r}") from None
        return cls(**kwargs)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> MonitorConfig:
        """A config from a dict; keys that are not fields are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def merge(self, **kwargs: Any) -> MonitorConfig:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **kwargs)

    def to_perfmon(self) -> Dict[str, Any]:
        """The :func:`otel_perfmon.configure_perfmon` keyword arguments for this config: only
        the fields that differ from web-perfmonitor's defaults (and ``log_path``, see the module
        docstring). Warns once for options with no counterpart."""
        default = MonitorConfig()
        out: Dict[str, Any] = {}
        if self.threshold_seconds != default.threshold_seconds:
            out["threshold_seconds"] = float(self.threshold_seconds)
        if self.alert_window_days != default.alert_window_days:
            out["dedup_window_seconds"] = float(self.alert_window_days) * _DAY_SECONDS
        if self.log_path != default.log_path or not os.environ.get("OTEL_PERFMON_REPORT_DIR"):
            out["report_dir"] = self.log_path
        if self.url_whitelist:
            out["include_urls"] = list(self.url_whitelist)
        if self.url_blacklist:
            out["exclude_urls"] = list(self.url_blacklist)
        if self.notice_timeout_seconds != default.notice_timeout_seconds:
            out["export_timeout_seconds"] = float(self.notice_timeout_seconds)
        if self.notice_queue_size != default.notice_queue_size:
            out["queue_size"] = int(self.notice_queue_size)
        if self.max_performance_overhead != default.max_performance_overhead:
            out["profile_budget"] = float(self.max_performance_overhead)
        if not self.capture_request_headers:
            out["capture_headers"] = []
        elif self.included_headers is not None:
            out["capture_headers"] = list(self.included_headers)
        exporters = [e for e in (notifier(n) for n in self.notice_list) if e is not None]
        if exporters:
            out["exporters"] = exporters
        return out


_MATTERMOST_KEYS = {"server_url": "url", "token": "bot_token", "channel_id": "channel_id"}
_EMAIL_KEYS = {"smtp_host": "host", "smtp_port": "port", "username": "username", "password": "password",
               "sender": "sender", "recipients": "recipients", "use_tls": "use_tls", "use_ssl": "use_ssl",
               "subject_prefix": "subject_prefix"}
_FORMATS = {"mattermost": "markdown", "email": "html"}  # what our message is; both parts for e-mail


def notifier(config: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """One ``notice_list`` entry as an otel-perfmon exporter dict, or None (warned) when its
    type has no counterpart. Unknown keys are warned about once and dropped."""
    if not isinstance(config, dict):
        raise ConfigurationError(f"notice_list entries must be dicts, got {type(config).__name__}")
    kind = str(config.get("type", ""))
    keys = _MATTERMOST_KEYS if kind == "mattermost" else _EMAIL_KEYS if kind == "email" else None
    if keys is None:
        _warn_once(f"notice_list:{kind}", f"notice_list type {kind!r} has no counterpart and is ignored "
                   "(mattermost and email are mapped; see docs/exporters.md for the other exporters)")
        return None
    out: Dict[str, Any] = {"type": kind}
    if kind == "email":
        out["subject_prefix"] = "[Performance Alert]"  # web-perfmonitor's default
    for key, value in config.items():
        if key == "type":
            continue
        if key == "format":
            if value != _FORMATS[kind]:
                _warn_once(f"{kind}.format", f"{kind} option format={value!r} has no counterpart: "
                           + ("e-mails carry both a text and an HTML part" if kind == "email"
                              else "Mattermost messages are Markdown"))
            continue
        if key in ("timeout_seconds", "max_retries", "backoff_seconds"):
            out[key] = value
        elif key in keys:
            out[keys[key]] = value
        else:
            _warn_once(f"{kind}.{key}", f"{kind} option {key!r} has no counterpart and is ignored")
    return out


_global_config: Optional[MonitorConfig] = None


def get_config() -> Optional[MonitorConfig]:
    """The config of the last :class:`PerformanceMiddleware`, or one set by :func:`set_config`."""
    return _global_config


def set_config(config: MonitorConfig) -> None:
    global _global_config
    _global_config = config


def _ensure_tracer_provider(app: Any) -> Any:
    """The global SDK TracerProvider; one is created and set when the process has none."""
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if callable(getattr(provider, "add_span_processor", None)):
        return provider
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    name = os.environ.get("OTEL_SERVICE_NAME") or str(getattr(app, "name", None) or getattr(app, "title", None)
                                                      or "unknown_service")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    trace.set_tracer_provider(provider)
    return trace.get_tracer_provider()


class PerformanceMiddleware:
    """web-perfmonitor's middleware: ``PerformanceMiddleware(app, config=None, **overrides)``.

    Instruments ``app`` (Flask or FastAPI) and attaches otel-perfmon with ``config`` mapped
    as in the module docstring; keyword ``overrides`` are MonitorConfig fields. ``perfmon`` is
    the :class:`otel_perfmon.api.Perfmon` handle.
    """

    def __init__(self, app: Any, config: Optional[MonitorConfig] = None, **overrides: Any) -> None:
        global _global_config
        from otel_perfmon import configure_perfmon

        config = config if config is not None else MonitorConfig()
        if overrides:
            config = config.merge(**overrides)
        self.config = config
        _global_config = config
        provider = _ensure_tracer_provider(app)
        self.perfmon = configure_perfmon(app=app, tracer_provider=provider, **config.to_perfmon())

    @property
    def middleware(self) -> Any:
        """The otel-perfmon handle (web-perfmonitor returns its framework middleware here)."""
        return self.perfmon

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Export what is queued (at most ``timeout``, default ``graceful_shutdown_seconds``) and stop."""
        self.perfmon.shutdown(timeout_seconds=self.config.graceful_shutdown_seconds if timeout is None else timeout)


def profile(threshold: Optional[float] = None, name: Optional[str] = None) -> Callable[[Callable[..., Any]], Any]:
    """web-perfmonitor's ``@profile(threshold=None, name=None)``: :func:`otel_perfmon.profile`."""
    from otel_perfmon.decorator import profile as perfmon_profile

    return perfmon_profile(threshold_seconds=threshold, name=name)
