"""Configuration: validation of every field, precedence, environment variables, URL patterns."""

from __future__ import annotations

import dataclasses
import logging
import os
import pathlib

import pytest

from otel_perfmon import ConfigurationError, PerfmonConfig
from otel_perfmon import environment_variables as ev
from otel_perfmon.config import (
    DEFAULT_CAPTURE_HEADERS,
    DEFAULT_REDACT_HEADERS,
    compile_url_patterns,
    config_from_env,
    resolve_config,
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    """No OTEL_PERFMON_* variable of the developer's shell may leak into these tests."""
    for name in list(os.environ):
        if name.startswith("OTEL_PERFMON_"):
            monkeypatch.delenv(name)


class _Policy:
    description = "test"

    def should_profile(self, key):
        return True

    def on_span_end(self, key, duration_seconds, profiled, slow):
        return None


class _Exporter:
    def export(self, report):
        return None

    def shutdown(self):
        return None

    def force_flush(self, timeout_seconds=30.0):
        return True


# ---------------------------------------------------------------------------------- validation
INVALID = [
    ("enabled", "yes"),
    ("enabled", 1),
    ("enabled", None),
    ("threshold_seconds", 0),
    ("threshold_seconds", -1.5),
    ("threshold_seconds", "fast"),
    ("threshold_seconds", True),
    ("threshold_seconds", float("nan")),
    ("threshold_seconds", float("inf")),
    ("dedup_window_seconds", -1),
    ("dedup_window_seconds", "10 days"),
    ("report_dir", ""),
    ("report_dir", 42),
    ("dedup_store", "mysql"),
    ("dedup_store", "http://localhost:6379"),
    ("dedup_store", 7),
    ("include_urls", 123),
    ("include_urls", ["/ok", 5]),
    ("include_urls", ["re:("]),
    ("exclude_urls", ["re:[unclosed"]),
    ("exclude_urls", {"/a": 1}),
    ("capture_headers", [b"x-request-id"]),
    ("capture_headers", 3),
    ("redact_headers", [None]),
    ("exporters", "no-such-exporter"),
    ("exporters", ["no-such-exporter"]),
    ("exporters", [{"type": "no-such-exporter"}]),
    ("exporters", [{"type": 3}]),
    ("exporters", [{"url": "http://x"}]),
    ("exporters", [42]),
    ("exporters", 42),
    ("report_url_template", "https://perf.example.com/{id}"),
    ("report_url_template", "https://perf.example.com/{0}"),
    ("report_url_template", "https://perf.example.com/{report_id"),
    ("report_url_template", 5),
    ("profile_interval_seconds", 0),
    ("profile_interval_seconds", -0.001),
    ("profile_policy", "sometimes"),
    ("profile_policy", 3),
    ("profile_policy", object()),
    ("queue_size", 0),
    ("queue_size", -3),
    ("queue_size", 1.5),
    ("queue_size", True),
    ("queue_size", "100"),
    ("export_timeout_seconds", 0),
    ("export_timeout_seconds", "30s"),
]


@pytest.mark.parametrize("field,value", INVALID, ids=[f"{f}={v!r}" for f, v in INVALID])
def test_invalid_override_raises_configuration_error_naming_field_and_value(field, value):
    with pytest.raises(ConfigurationError) as info:
        resolve_config(overrides={field: value}, environ={})
    message = str(info.value)
    assert field in message
    # the bad value (or, for list-valued fields, the bad item) appears in the message
    shown = value
    if field in ("include_urls", "exclude_urls") and isinstance(value, list) and all(isinstance(v, str) for v in value):
        shown = value[-1]
    if field == "exporters" and isinstance(value, list) and value and isinstance(value[0], str):
        shown = value[0]
    if field == "exporters" and isinstance(value, list) and value and isinstance(value[0], dict) \
            and isinstance(value[0].get("type"), str):
        shown = value[0]["type"]
    if field == "exporters" and isinstance(value, list) and value and isinstance(value[0], dict) \
            and not isinstance(value[0].get("type"), str):
        shown = value[0]
    if field == "exporters" and isinstance(value, list) and value and isinstance(value[0], int):
        shown = value[0]
    if field == "exporters" and isinstance(value, str):
        shown = value
    if isinstance(shown, float) and shown != shown:
        assert "nan" in message
    else:
        assert repr(shown) in message or str(shown) in message, message


def test_configuration_error_is_a_value_error():
    assert issubclass(ConfigurationError, ValueError)
    with pytest.raises(ValueError):
        resolve_config(overrides={"threshold_seconds": -1}, environ={})


@pytest.mark.parametrize("field,value", [("threshold_seconds", 0), ("dedup_store", "mysql"),
                                         ("profile_policy", "sometimes"), ("queue_size", 0)])
def test_invalid_field_of_an_explicit_config_raises(field, value):
    config = dataclasses.replace(PerfmonConfig(), **{field: value})
    with pytest.raises(ConfigurationError, match=field):
        resolve_config(config, environ={})


def test_invalid_value_raises_from_configure_perfmon(tmp_path):
    from opentelemetry.sdk.trace import TracerProvider

    from otel_perfmon import configure_perfmon

    provider = TracerProvider()
    with pytest.raises(ConfigurationError, match=r"threshold_seconds.*-2"):
        configure_perfmon(tracer_provider=provider, threshold_seconds=-2, report_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match="threshhold_seconds"):
        configure_perfmon(tracer_provider=provider, threshhold_seconds=1, report_dir=str(tmp_path))
    with pytest.raises(ConfigurationError, match="tracer_provider"):
        configure_perfmon(tracer_provider=object(), report_dir=str(tmp_path))


def test_unknown_override_names_are_listed():
    with pytest.raises(ConfigurationError) as info:
        resolve_config(overrides={"threshhold_seconds": 1, "report_directory": "x", "enabled": True}, environ={})
    assert "threshhold_seconds" in str(info.value)
    assert "report_directory" in str(info.value)
    assert "'enabled'" not in str(info.value)


def test_config_argument_must_be_a_perfmon_config():
    with pytest.raises(ConfigurationError, match="config"):
        resolve_config({"threshold_seconds": 1.0}, environ={})  # type: ignore[arg-type]


def test_valid_values_are_accepted_and_normalised(tmp_path):
    policy, exporter = _Policy(), _Exporter()
    resolved = resolve_config(overrides=dict(
        enabled=False, threshold_seconds=2, dedup_window_seconds=0, report_dir=pathlib.Path(tmp_path),
        dedup_store="redis://127.0.0.1:6379/0", include_urls="/api/*, re:^/v[0-9]+/", exclude_urls=("/health",),
        capture_headers=["X-Request-ID"], redact_headers=["X-Internal"],
        exporters=["console", {"type": "console"}, exporter],
        report_url_template="https://perf.example.com/r/{report_id}", profile_interval_seconds=0.005,
        profile_policy=policy, queue_size=5, export_timeout_seconds=1,
    ), environ={})
    assert resolved.enabled is False
    assert resolved.threshold_seconds == 2.0 and isinstance(resolved.threshold_seconds, float)
    assert resolved.dedup_window_seconds == 0.0
    assert resolved.report_dir == str(tmp_path) and isinstance(resolved.report_dir, str)
    assert resolved.dedup_store == "redis://127.0.0.1:6379/0"
    assert resolved.include_urls == ["/api/*", "re:^/v[0-9]+/"]
    assert resolved.exclude_urls == ["/health"]
    assert resolved.exporters[2] is exporter
    assert resolved.profile_policy is policy
    assert resolved.queue_size == 5
    assert resolved.report_url("abc12345") == "https://perf.example.com/r/abc12345"


def test_policy_object_without_on_span_end_is_rejected():
    class Half:
        def should_profile(self, key):
            return True

    with pytest.raises(ConfigurationError, match="profile_policy"):
        resolve_config(overrides={"profile_policy": Half()}, environ={})
    assert resolve_config(overrides={"profile_policy": " Always "}, environ={}).profile_policy == "always"


def test_unknown_exporter_message_lists_the_available_ones():
    with pytest.raises(ConfigurationError) as info:
        resolve_config(overrides={"exporters": [{"type": "carrier-pigeon"}]}, environ={})
    assert "carrier-pigeon" in str(info.value)
    assert "console" in str(info.value)


def test_defaults(tmp_path):
    resolved = resolve_config(environ={})
    assert resolved == PerfmonConfig()
    assert resolved.enabled is True
    assert resolved.threshold_seconds == 1.0
    assert resolved.dedup_window_seconds == 864000
    assert resolved.report_dir == "./perfmon-reports"
    assert resolved.dedup_store == "sqlite"
    assert resolved.include_urls == [] and resolved.exclude_urls == []
    assert [h.lower() for h in resolved.capture_headers] == [
        "x-forwarded-for", "x-real-ip", "x-request-id", "x-trace-id", "x-correlation-id", "referer",
        "content-type", "accept", "accept-language", "origin", "user-agent", "traceparent", "tracestate"]
    assert {h.lower() for h in resolved.redact_headers} == {
        "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"}
    assert tuple(resolved.capture_headers) == DEFAULT_CAPTURE_HEADERS
    assert tuple(resolved.redact_headers) == DEFAULT_REDACT_HEADERS
    assert resolved.exporters == []
    assert resolved.report_url_template is None and resolved.report_url("abc12345") is None
    assert resolved.profile_interval_seconds == 0.001
    # "always" until the overhead issue landed, then "adaptive" (docs/configuration.md)
    assert resolved.profile_policy in ("always", "adaptive")
    assert resolved.queue_size == 1000
    assert resolved.export_timeout_seconds == 30


# ---------------------------------------------------------------------------------- precedence
def test_precedence_overrides_over_config_over_env_over_defaults():
    env = {ev.OTEL_PERFMON_THRESHOLD_SECONDS: "4", ev.OTEL_PERFMON_QUEUE_SIZE: "40",
           ev.OTEL_PERFMON_REPORT_DIR: "/env/dir"}
    config = PerfmonConfig(threshold_seconds=2.0, queue_size=20)
    resolved = resolve_config(config, {"threshold_seconds": 3.0}, environ=env)
    assert resolved.threshold_seconds == 3.0          # override beats config and env
    assert resolved.queue_size == 20                  # config beats env
    assert resolved.report_dir == "/env/dir"          # env beats default
    assert resolved.export_timeout_seconds == 30.0    # default
    assert resolve_config(config, environ=env).threshold_seconds == 2.0
    assert resolve_config(None, environ=env).threshold_seconds == 4.0
    assert resolve_config(None, environ={}).threshold_seconds == 1.0


def test_config_field_left_at_its_default_does_not_hide_the_env_var():
    env = {ev.OTEL_PERFMON_THRESHOLD_SECONDS: "4"}
    assert resolve_config(PerfmonConfig(threshold_seconds=1.0), environ=env).threshold_seconds == 4.0


def test_override_equal_to_the_default_still_wins_over_env():
    env = {ev.OTEL_PERFMON_THRESHOLD_SECONDS: "4", ev.OTEL_PERFMON_ENABLED: "false"}
    resolved = resolve_config(None, {"threshold_seconds": 1.0, "enabled": True}, environ=env)
    assert resolved.threshold_seconds == 1.0
    assert resolved.enabled is True


def test_environment_is_read_from_os_environ_by_default(monkeypatch):
    monkeypatch.setenv(ev.OTEL_PERFMON_THRESHOLD_SECONDS, "0.25")
    monkeypatch.setenv(ev.OTEL_PERFMON_DEDUP_STORE, "memory")
    resolved = resolve_config()
    assert resolved.threshold_seconds == 0.25
    assert resolved.dedup_store == "memory"


def test_configure_perfmon_applies_the_precedence(monkeypatch, tmp_path):
    from opentelemetry.sdk.trace import TracerProvider

    from otel_perfmon import configure_perfmon

    monkeypatch.setenv(ev.OTEL_PERFMON_THRESHOLD_SECONDS, "7")
    monkeypatch.setenv(ev.OTEL_PERFMON_QUEUE_SIZE, "77")
    monkeypatch.setenv(ev.OTEL_PERFMON_DEDUP_STORE, "memory")
    handle = configure_perfmon(tracer_provider=TracerProvider(), config=PerfmonConfig(queue_size=9),
                               report_dir=str(tmp_path))
    try:
        assert handle.config.threshold_seconds == 7.0
        assert handle.config.queue_size == 9
        assert handle.config.dedup_store == "memory"
        assert handle.report_dir == str(tmp_path)
    finally:
        handle.shutdown(timeout_seconds=1)


# ---------------------------------------------------------------------------------- environment
ENV_CASES = [
    (ev.OTEL_PERFMON_ENABLED, "false", "enabled", False),
    (ev.OTEL_PERFMON_THRESHOLD_SECONDS, " 0.75 ", "threshold_seconds", 0.75),
    (ev.OTEL_PERFMON_DEDUP_WINDOW_SECONDS, "0", "dedup_window_seconds", 0.0),
    (ev.OTEL_PERFMON_DEDUP_WINDOW_SECONDS, "3600", "dedup_window_seconds", 3600.0),
    (ev.OTEL_PERFMON_REPORT_DIR, " /var/lib/perf ", "report_dir", "/var/lib/perf"),
    (ev.OTEL_PERFMON_DEDUP_STORE, "memory", "dedup_store", "memory"),
    (ev.OTEL_PERFMON_DEDUP_STORE, "redis://cache:6379/2", "dedup_store", "redis://cache:6379/2"),
    (ev.OTEL_PERFMON_INCLUDE_URLS, " /api/* , re:^/v[0-9]+/ ,, ", "include_urls", ["/api/*", "re:^/v[0-9]+/"]),
    (ev.OTEL_PERFMON_EXCLUDE_URLS, "/health,/metrics", "exclude_urls", ["/health", "/metrics"]),
    (ev.OTEL_PERFMON_CAPTURE_HEADERS, "X-Request-ID , X-Tenant", "capture_headers", ["X-Request-ID", "X-Tenant"]),
    (ev.OTEL_PERFMON_REDACT_HEADERS, "X-Internal,X-Other ", "redact_headers", ["X-Internal", "X-Other"]),
    (ev.OTEL_PERFMON_EXPORTERS, " console ", "exporters", ["console"]),
    (ev.OTEL_PERFMON_REPORT_URL_TEMPLATE, "https://perf.example.com/{report_id}", "report_url_template",
     "https://perf.example.com/{report_id}"),
    (ev.OTEL_PERFMON_PROFILE_INTERVAL_SECONDS, "0.005", "profile_interval_seconds", 0.005),
    (ev.OTEL_PERFMON_PROFILE_POLICY, "ALWAYS", "profile_policy", "always"),
    (ev.OTEL_PERFMON_QUEUE_SIZE, "17", "queue_size", 17),
    (ev.OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS, "2.5", "export_timeout_seconds", 2.5),
]


@pytest.mark.parametrize("var,raw,field,expected", ENV_CASES, ids=[f"{c[0]}={c[1]!r}" for c in ENV_CASES])
def test_every_env_var_is_parsed(var, raw, field, expected, caplog):
    with caplog.at_level(logging.WARNING):
        resolved = resolve_config(environ={var: raw})
    assert getattr(resolved, field) == expected
    if field != "profile_policy":  # "always" is both the only name and the default for now
        assert getattr(resolved, field) != getattr(PerfmonConfig(), field)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


DESIGN_FIELDS = ("enabled", "threshold_seconds", "dedup_window_seconds", "report_dir", "dedup_store",
                 "include_urls", "exclude_urls", "capture_headers", "redact_headers", "exporters",
                 "report_url_template", "profile_interval_seconds", "profile_policy", "queue_size",
                 "export_timeout_seconds")


def test_env_var_table_is_complete():
    fields = {f.name for f in dataclasses.fields(PerfmonConfig)}
    assert set(DESIGN_FIELDS) <= fields
    names = {f"OTEL_PERFMON_{name.upper()}" for name in DESIGN_FIELDS}
    declared = {name for name in dir(ev) if name.startswith("OTEL_PERFMON_")}
    assert names <= declared  # exporters add their own OTEL_PERFMON_* variables too
    assert {case[0] for case in ENV_CASES} == names


@pytest.mark.parametrize("raw,expected", [
    ("true", True), ("TRUE", True), (" True ", True), ("1", True), ("yes", True), ("YES", True),
    ("false", False), ("False", False), ("0", False), ("no", False), (" No ", False),
])
def test_env_booleans(raw, expected, caplog):
    with caplog.at_level(logging.WARNING):
        assert config_from_env({ev.OTEL_PERFMON_ENABLED: raw}).enabled is expected
    assert not caplog.records


def test_empty_env_values_are_ignored(caplog):
    with caplog.at_level(logging.WARNING):
        resolved = config_from_env({ev.OTEL_PERFMON_THRESHOLD_SECONDS: "", ev.OTEL_PERFMON_ENABLED: "  "})
    assert resolved == PerfmonConfig()
    assert not caplog.records


BAD_ENV = [
    (ev.OTEL_PERFMON_ENABLED, "maybe", "enabled"),
    (ev.OTEL_PERFMON_THRESHOLD_SECONDS, "fast", "threshold_seconds"),
    (ev.OTEL_PERFMON_THRESHOLD_SECONDS, "-1", "threshold_seconds"),
    (ev.OTEL_PERFMON_THRESHOLD_SECONDS, "nan", "threshold_seconds"),
    (ev.OTEL_PERFMON_DEDUP_WINDOW_SECONDS, "-5", "dedup_window_seconds"),
    (ev.OTEL_PERFMON_DEDUP_STORE, "mysql://db", "dedup_store"),
    (ev.OTEL_PERFMON_INCLUDE_URLS, "/ok,re:(", "include_urls"),
    (ev.OTEL_PERFMON_EXCLUDE_URLS, "re:[x", "exclude_urls"),
    (ev.OTEL_PERFMON_EXPORTERS, "console,no-such-exporter", "exporters"),
    (ev.OTEL_PERFMON_REPORT_URL_TEMPLATE, "https://x/{nope}", "report_url_template"),
    (ev.OTEL_PERFMON_PROFILE_INTERVAL_SECONDS, "0", "profile_interval_seconds"),
    (ev.OTEL_PERFMON_PROFILE_POLICY, "sometimes", "profile_policy"),
    (ev.OTEL_PERFMON_QUEUE_SIZE, "1.5", "queue_size"),
    (ev.OTEL_PERFMON_QUEUE_SIZE, "0", "queue_size"),
    (ev.OTEL_PERFMON_EXPORT_TIMEOUT_SECONDS, "soon", "export_timeout_seconds"),
]


@pytest.mark.parametrize("var,raw,field", BAD_ENV, ids=[f"{c[0]}={c[1]!r}" for c in BAD_ENV])
def test_bad_env_value_warns_and_uses_the_default(var, raw, field, caplog):
    env = {var: raw, ev.OTEL_PERFMON_REPORT_DIR: "/from/env"}  # a good neighbour is still applied
    with caplog.at_level(logging.WARNING, logger="otel_perfmon"):
        resolved = resolve_config(environ=env)
    assert getattr(resolved, field) == getattr(PerfmonConfig(), field)
    assert resolved.report_dir == "/from/env"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, caplog.text
    assert var in warnings[0].getMessage()
    assert raw in warnings[0].getMessage()


def test_bad_env_value_does_not_break_configure_perfmon(monkeypatch, tmp_path, caplog):
    from opentelemetry.sdk.trace import TracerProvider

    from otel_perfmon import configure_perfmon

    monkeypatch.setenv(ev.OTEL_PERFMON_THRESHOLD_SECONDS, "-3")
    with caplog.at_level(logging.WARNING, logger="otel_perfmon"):
        handle = configure_perfmon(tracer_provider=TracerProvider(), report_dir=str(tmp_path), dedup_store="memory")
    try:
        assert handle.config.threshold_seconds == 1.0
        assert ev.OTEL_PERFMON_THRESHOLD_SECONDS in caplog.text
    finally:
        handle.shutdown(timeout_seconds=1)


# ---------------------------------------------------------------------------------- URL patterns
@pytest.mark.parametrize("pattern,path,matches", [
    ("/api/*", "/api/users/7", True),
    ("/api/*", "/api/", True),
    ("/api/*", "/apis/x", False),
    ("/api/*", "/v1/api/x", False),
    ("/health", "/health", True),
    ("/health", "/healthz", False),
    ("/items/?", "/items/7", True),
    ("/items/?", "/items/77", False),
    ("/static/*.css", "/static/a/b.css", True),
    ("/static/*.css", "/static/a/b.js", False),
    ("re:^/v[0-9]+/", "/v2/users", True),
    ("re:^/v[0-9]+/", "/vx/users", False),
    ("re:.*/users/\\d+$", "/api/users/42", True),
])
def test_url_patterns(pattern, path, matches):
    (compiled,) = compile_url_patterns("include_urls", [pattern])
    assert bool(compiled.match(path)) is matches


def test_bad_regex_names_field_and_pattern():
    with pytest.raises(ConfigurationError) as info:
        compile_url_patterns("exclude_urls", ["/ok", "re:a(b"])
    assert "exclude_urls" in str(info.value)
    assert "re:a(b" in str(info.value)
    # a glob is never a bad regex: special characters are escaped
    assert compile_url_patterns("include_urls", ["/a(b/[x"])
