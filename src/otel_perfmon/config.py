"""Configuration: :class:`PerfmonConfig`, its environment variables, and validation.

Precedence (highest first): keyword overrides to ``configure_perfmon``, fields of an
explicit ``PerfmonConfig`` that differ from their defaults, ``OTEL_PERFMON_*``
environment variables, defaults. Invalid explicit values raise
:class:`ConfigurationError` naming the field; invalid environment values are logged
as a warning and the default is used (OpenTelemetry's convention for env vars).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Pattern, Sequence, Set, Tuple

from otel_perfmon import _plugins
from otel_perfmon import environment_variables as ev
from otel_perfmon._options import parse_bool, parse_float, parse_int, parse_list, parse_lower, parse_optional_str
from otel_perfmon.errors import ConfigurationError
from otel_perfmon.exporters.registry import validate_exporter_specs
from otel_perfmon.redaction import REDACTED, SENSITIVE_NAME_PARTS

_logger = logging.getLogger(__name__)

DEFAULT_CAPTURE_HEADERS: Tuple[str, ...] = (
    "X-Forwarded-For", "X-Real-IP", "X-Request-ID", "X-Trace-ID", "X-Correlation-ID",
    "Referer", "Content-Type", "Accept", "Accept-Language", "Origin", "User-Agent",
    "traceparent", "tracestate",
)
DEFAULT_REDACT_HEADERS: Tuple[str, ...] = (
    "Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "X-Api-Key", "X-Auth-Token",
)

__all__ = ["ConfigurationError", "PerfmonConfig", "REDACTED", "SENSITIVE_NAME_PARTS", "DEFAULT_CAPTURE_HEADERS",
           "DEFAULT_REDACT_HEADERS", "compile_url_patterns", "config_from_env", "resolve_config", "validate"]


@dataclass
class PerfmonConfig:
    """Every setting of otel-perfmon. Units are in the names (seconds).

    docs/configuration.md lists the matching ``OTEL_PERFMON_*`` variables (generated from ``_ENV``).
    Construction validates nothing; :func:`resolve_config` validates and raises
    :class:`ConfigurationError` naming the first bad field.
    """

    enabled: bool = True
    threshold_seconds: float = 1.0
    task_threshold_seconds: Optional[float] = None  # CONSUMER spans (Celery tasks); None: threshold_seconds
    dedup_window_seconds: float = 864000.0
    report_dir: str = "./perfmon-reports"
    dedup_store: str = "sqlite"
    include_urls: List[str] = field(default_factory=list)
    exclude_urls: List[str] = field(default_factory=list)
    capture_headers: List[str] = field(default_factory=lambda: list(DEFAULT_CAPTURE_HEADERS))
    redact_headers: List[str] = field(default_factory=lambda: list(DEFAULT_REDACT_HEADERS))
    exporters: List[Any] = field(default_factory=list)
    report_url_template: Optional[str] = None
    profile_interval_seconds: float = 0.001
    profile_policy: Any = "adaptive"
    queue_size: int = 1000
    export_timeout_seconds: float = 30.0
    shutdown_timeout_seconds: float = 5.0  # at process exit (atexit, uvicorn's SIGTERM): flush within this
    profile_budget: float = 0.005
    profile_explore_rate: float = 0.001
    profile_candidate_ratio: float = 0.5
    sampler_interval_seconds: float = 0.005
    sampler_early_interval_seconds: float = 0.01
    sampler_budget: float = 0.008
    inflight_multiple: float = 5.0
    capture_request_body: str = "medium"
    route_stats_interval_seconds: float = 5.0
    retention_max_age_seconds: float = 2592000  # 30 days; reports older than this are deleted (0: no limit)
    retention_max_bytes: int = 1073741824  # 1 GiB; the oldest reports go past it (0: no limit)

    def report_url(self, report_id: str) -> Optional[str]:
        """The link for ``report_id`` from ``report_url_template``, or None when unset."""
        if not self.report_url_template:
            return None
        return self.report_url_template.format(report_id=report_id)


_ENV: Dict[str, Tuple[str, Callable[[str], Any]]] = {
    "enabled": (ev.OTEL_PERFMON_ENABLED, parse_bool),
    "threshold_seconds": (ev.OTEL_PERFMON_THRESHOLD_SECONDS, parse_float),
    "task_threshold_seconds": (ev.OTEL_PERFMON_TASK_THRESHOLD_SECONDS, parse_float),
    "dedup_window_seconds": (ev.OTEL_PERFMON_DEDUP_WINDOW_SECONDS, parse_float),
    "report_dir": (ev.OTEL_PERFMON_REPORT_DIR, str.strip),
    "dedup_store": (ev.OTEL_PERFMON_DEDUP_STORE, str.strip),
    "include_urls": (ev.OTEL_PERFMON_INCLUDE_URLS, parse_list),
    "exclude_urls": (ev.OTEL_PERFMON_EXCLUDE_URLS, parse_list),
    "capture_headers": (ev.OTEL_PERFMON_CAPTURE_HEADERS, parse_list),
    "redact_headers": (ev.OTEL_PERFMON_REDACT_HEADERS, parse_list),
    "exporters": (ev.OTEL_PERFMON_EXPORTERS, parse_list),
    "report_url_template": (ev.OTEL_PERFMON_REPORT_URL_TEMPLATE, parse_optional_str),
    "profile_interval_seconds": (ev.OTEL_PERFMON_PROFILE_INTERVAL_SECONDS, parse_float),
    "profile_policy": (ev.OTEL_PERFMON_PROFILE_POLICY, parse_lower),
    "queue_size": (ev.OTEL_PERFMON_QUEUE_SIZE, parse_int),
    "export_timeout_seconds": (ev.OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS, parse_float),
    "shutdown_timeout_seconds": (ev.OTEL_PERFMON_SHUTDOWN_TIMEOUT_SECONDS, parse_float),
    "profile_budget": (ev.OTEL_PERFMON_PROFILE_BUDGET, parse_float),
    "profile_explore_rate": (ev.OTEL_PERFMON_PROFILE_EXPLORE_RATE, parse_float),
    "profile_candidate_ratio": (ev.OTEL_PERFMON_PROFILE_CANDIDATE_RATIO, parse_float),
    "sampler_interval_seconds": (ev.OTEL_PERFMON_SAMPLER_INTERVAL_SECONDS, parse_float),
    "sampler_early_interval_seconds": (ev.OTEL_PERFMON_SAMPLER_EARLY_INTERVAL_SECONDS, parse_float),
    "sampler_budget": (ev.OTEL_PERFMON_SAMPLER_BUDGET, parse_float),
    "inflight_multiple": (ev.OTEL_PERFMON_INFLIGHT_MULTIPLE, parse_float),
    "capture_request_body": (ev.OTEL_PERFMON_CAPTURE_REQUEST_BODY, parse_lower),
    "route_stats_interval_seconds": (ev.OTEL_PERFMON_ROUTE_STATS_INTERVAL_SECONDS, parse_float),
    "retention_max_age_seconds": (ev.OTEL_PERFMON_RETENTION_MAX_AGE_SECONDS, parse_float),
    "retention_max_bytes": (ev.OTEL_PERFMON_RETENTION_MAX_BYTES, parse_int),
}


def _positive_number(name: str, value: Any, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number, got {value!r}")
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigurationError(f"{name} must be finite, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigurationError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _string_list(name: str, value: Any) -> List[str]:
    if isinstance(value, str):
        value = parse_list(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ConfigurationError(f"{name} must be a list of strings, got {value!r}")
    return list(value)


def compile_url_patterns(name: str, patterns: Sequence[str]) -> List[Pattern[str]]:
    """Compile shell-style globs (or ``re:<regex>``) to regexes; raises ConfigurationError."""
    compiled = []
    for pattern in patterns:
        try:
            if pattern.startswith("re:"):
                compiled.append(re.compile(pattern[3:]))
            else:
                compiled.append(re.compile(fnmatch.translate(pattern)))
        except re.error as exc:
            raise ConfigurationError(f"{name}: invalid pattern {pattern!r}: {exc}") from None
    return compiled


def validate(config: PerfmonConfig) -> PerfmonConfig:
    """Check every field of ``config``; returns a normalised copy.

    Raises :class:`ConfigurationError` naming the first invalid field and its value.
    """
    if not isinstance(config.enabled, bool):
        raise ConfigurationError(f"enabled must be a bool, got {config.enabled!r}")
    values: Dict[str, Any] = {"enabled": config.enabled}
    values["threshold_seconds"] = _positive_number("threshold_seconds", config.threshold_seconds)
    if config.task_threshold_seconds is not None:
        values["task_threshold_seconds"] = _positive_number("task_threshold_seconds", config.task_threshold_seconds)
    values["dedup_window_seconds"] = _positive_number(
        "dedup_window_seconds", config.dedup_window_seconds, allow_zero=True)
    values["profile_interval_seconds"] = _positive_number(
        "profile_interval_seconds", config.profile_interval_seconds)
    values["export_timeout_seconds"] = _positive_number(
        "export_timeout_seconds", config.export_timeout_seconds)
    values["shutdown_timeout_seconds"] = _positive_number(
        "shutdown_timeout_seconds", config.shutdown_timeout_seconds, allow_zero=True)
    values["sampler_interval_seconds"] = _positive_number(
        "sampler_interval_seconds", config.sampler_interval_seconds)
    values["sampler_early_interval_seconds"] = _positive_number(
        "sampler_early_interval_seconds", config.sampler_early_interval_seconds, allow_zero=True)
    for name in ("profile_budget", "profile_explore_rate", "sampler_budget"):
        values[name] = _positive_number(name, getattr(config, name), allow_zero=True)
        if values[name] > 1:
            raise ConfigurationError(f"{name} must be between 0 and 1, got {getattr(config, name)!r}")
    values["profile_candidate_ratio"] = _positive_number("profile_candidate_ratio", config.profile_candidate_ratio)
    values["inflight_multiple"] = _positive_number("inflight_multiple", config.inflight_multiple, allow_zero=True)
    if 0 < values["inflight_multiple"] <= 1:
        raise ConfigurationError(
            f"inflight_multiple must be 0 (off) or > 1 (a multiple of the threshold), got {config.inflight_multiple!r}")
    if isinstance(config.queue_size, bool) or not isinstance(config.queue_size, int) or config.queue_size < 1:
        raise ConfigurationError(f"queue_size must be an int >= 1, got {config.queue_size!r}")
    values["queue_size"] = config.queue_size
    values["route_stats_interval_seconds"] = _positive_number(
        "route_stats_interval_seconds", config.route_stats_interval_seconds, allow_zero=True)
    body = config.capture_request_body
    if not isinstance(body, str) or body.strip().lower() not in _BODY_LEVELS:
        raise ConfigurationError(f"capture_request_body must be one of {list(_BODY_LEVELS)}, got {body!r}")
    values["capture_request_body"] = body.strip().lower()
    if not isinstance(config.report_dir, (str, os.PathLike)) or not str(config.report_dir):
        raise ConfigurationError(f"report_dir must be a non-empty path, got {config.report_dir!r}")
    values["report_dir"] = os.fspath(config.report_dir)
    try:  # a URL (s3://bucket/prefix...) must name an installed fsspec file system
        from otel_perfmon.storage import check_report_dir, display

        check_report_dir(values["report_dir"])
    except ValueError as exc:
        raise ConfigurationError(f"report_dir {display(values['report_dir'])!r}: {exc}") from None
    values["retention_max_age_seconds"] = _positive_number(
        "retention_max_age_seconds", config.retention_max_age_seconds, allow_zero=True)
    max_bytes = config.retention_max_bytes
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise ConfigurationError(f"retention_max_bytes must be an int >= 0 (0: no limit), got {max_bytes!r}")
    values["retention_max_bytes"] = max_bytes
    values["dedup_store"] = _dedup_store_spec(config.dedup_store)
    for name in ("include_urls", "exclude_urls"):
        values[name] = _string_list(name, getattr(config, name))
        compile_url_patterns(name, values[name])
    for name in ("capture_headers", "redact_headers"):
        values[name] = _string_list(name, getattr(config, name))
    template = config.report_url_template
    if template is not None:
        if not isinstance(template, str):
            raise ConfigurationError(f"report_url_template must be a string, got {template!r}")
        try:
            template.format(report_id="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigurationError(
                f"report_url_template may only use {{report_id}}, got {template!r} ({exc!r})") from None
    values["report_url_template"] = template
    values["exporters"] = validate_exporter_specs(config.exporters)
    values["profile_policy"] = _policy_spec(config.profile_policy)
    return PerfmonConfig(**values)


def _dedup_store_spec(spec: Any) -> str:
    # a store name (memory, sqlite, an entry point) or a URL whose scheme names it (redis://...)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigurationError(f"dedup_store must be 'memory', 'sqlite' or a redis:// URL, got {spec!r}")
    name = spec.partition("://")[0] if "://" in spec else spec
    try:
        _plugins.check_name(_plugins.DEDUP_STORES, name)
    except ConfigurationError as exc:
        raise ConfigurationError(f"dedup_store must be 'memory', 'sqlite' or a redis:// URL, got {spec!r} ({exc})") \
            from None
    return spec.strip() if "://" in spec else spec.strip().lower()


def _policy_spec(spec: Any) -> Any:
    # a policy name, or an object with should_profile() and on_span_end()
    names = _plugins.available(_plugins.PROFILE_POLICIES)
    if isinstance(spec, str):
        return _plugins.check_name(_plugins.PROFILE_POLICIES, spec)
    if _plugins.is_plugin_object(_plugins.PROFILE_POLICIES, spec):
        return spec
    raise ConfigurationError(f"profile_policy must be one of {names} or an object with should_profile() "
                             f"and on_span_end(), got {spec!r}")


_MISSING = object()
#: capture_request_body levels (sizes in otel_perfmon.report.request.LEVELS)
_BODY_LEVELS = ("never", "small", "medium", "always")


#: (variable, value) pairs already warned about by :func:`_env_field`.
_WARNED_ENV: Set[Tuple[str, str]] = set()


def _env_field(name: str, environ: Mapping[str, str], defaults: PerfmonConfig) -> Any:
    # the validated value of one field's variable, or _MISSING (unset, or bad: warned)
    var, parse = _ENV[name]
    raw = environ.get(var)
    if raw is None or raw.strip() == "":
        return _MISSING
    try:
        candidate = parse(raw)
        validate(dataclasses.replace(defaults, **{name: candidate}))
    except (ValueError, ConfigurationError) as exc:
        if (var, raw) not in _WARNED_ENV:  # once per process: a CLI reads the environment twice
            _WARNED_ENV.add((var, raw))
            _logger.warning("otel-perfmon: ignoring %s=%r (%s); using the default %r",
                            var, raw, exc, getattr(defaults, name))
        return _MISSING
    return candidate


def env_value(name: str, environ: Optional[Mapping[str, str]] = None) -> Any:
    """The value of config field ``name`` from its ``OTEL_PERFMON_*`` variable, or the field's
    default when unset or invalid (warned): the one rule, for code that needs one field (e.g.
    an exporter built directly reads ``export_timeout_seconds``). Any thread; no I/O."""
    defaults = PerfmonConfig()
    value = _env_field(name, os.environ if environ is None else environ, defaults)
    return getattr(defaults, name) if value is _MISSING else value


def config_from_env(environ: Optional[Mapping[str, str]] = None) -> PerfmonConfig:
    """A config from ``OTEL_PERFMON_*`` variables; bad values warn and keep the default."""
    environ = os.environ if environ is None else environ
    defaults = PerfmonConfig()
    values: Dict[str, Any] = {}
    for name in _ENV:
        value = _env_field(name, environ, defaults)
        if value is not _MISSING:
            values[name] = value
    return dataclasses.replace(defaults, **values)


def resolve_config(config: Optional[PerfmonConfig] = None, overrides: Optional[Mapping[str, Any]] = None,
                   environ: Optional[Mapping[str, str]] = None) -> PerfmonConfig:
    """Merge overrides > explicit config > env vars > defaults and validate the result.

    Raises :class:`ConfigurationError` for an unknown override name or an invalid value.
    """
    names = {f.name for f in dataclasses.fields(PerfmonConfig)}
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigurationError(f"unknown configuration field(s): {', '.join(unknown)}")
    if config is not None and not isinstance(config, PerfmonConfig):
        raise ConfigurationError(f"config must be a PerfmonConfig, got {type(config).__name__}")
    merged = config_from_env(environ)
    if config is not None:
        defaults = PerfmonConfig()
        explicit = {f.name: getattr(config, f.name) for f in dataclasses.fields(PerfmonConfig)
                    if getattr(config, f.name) != getattr(defaults, f.name)}
        merged = dataclasses.replace(merged, **explicit)
    merged = dataclasses.replace(merged, **overrides)
    return validate(merged)
