"""Request capture: HTTP attributes (both semconv modes), header selection/redaction, query
redaction, and the include/exclude URL filter."""

from __future__ import annotations

import pytest

from otel_perfmon.config import DEFAULT_CAPTURE_HEADERS, DEFAULT_REDACT_HEADERS, REDACTED, compile_url_patterns
from otel_perfmon.report.capture import (
    MAX_HEADER_VALUE_CHARS,
    UrlFilter,
    headers_from_attributes,
    http_info,
    redact_query,
    select_headers,
)

CAPTURE = frozenset(h.lower() for h in DEFAULT_CAPTURE_HEADERS)
REDACT = frozenset(h.lower() for h in DEFAULT_REDACT_HEADERS)


# ---------------------------------------------------------------------------------- http_info
def test_http_info_old_semconv():
    info = http_info({"http.method": "GET", "http.target": "/items/7?a=1&b=two", "http.status_code": 200,
                      "http.route": "/items/<int:item_id>"}, "GET /items/<int:item_id>")
    assert info == {"method": "GET", "route": "/items/<int:item_id>", "path": "/items/7",
                    "query": "a=1&b=two", "status_code": 200}


def test_http_info_stable_semconv():
    info = http_info({"http.request.method": "POST", "url.path": "/orders/12", "url.query": "x=1",
                      "http.response.status_code": 201, "http.route": "/orders/{order_id}"},
                     "POST /orders/{order_id}")
    assert info == {"method": "POST", "route": "/orders/{order_id}", "path": "/orders/12",
                    "query": "x=1", "status_code": 201}


def test_http_info_stable_semconv_wins_when_both_are_present():
    info = http_info({"http.request.method": "PUT", "http.method": "GET", "url.path": "/new", "http.target": "/old?o=1",
                      "http.response.status_code": 204, "http.status_code": 200}, "PUT")
    assert (info["method"], info["path"], info["status_code"]) == ("PUT", "/new", 204)


def test_http_info_target_without_query():
    info = http_info({"http.method": "GET", "http.target": "/plain"}, "GET /plain")
    assert info["path"] == "/plain"
    assert info["query"] == ""
    assert info["status_code"] is None


def test_http_info_url_full_fallback():
    info = http_info({"http.request.method": "GET", "url.full": "http://example.com:8080/a/b?c=3"}, "GET")
    assert info["path"] == "/a/b"
    assert info["query"] == "c=3"


def test_missing_route_falls_back_to_the_span_name_path():
    info = http_info({"http.method": "GET", "http.target": "/users/7"}, "GET /users/<id>")
    assert info["route"] == "/users/<id>"


def test_missing_route_falls_back_to_the_path():
    info = http_info({"http.request.method": "GET", "url.path": "/users/7"}, "GET")
    assert info["route"] == "/users/7"
    info = http_info({"http.method": "GET", "http.target": "/users/8?z=1"}, "HTTP GET")
    assert info["route"] == "/users/8"


def test_no_http_attributes_at_all_uses_the_span_name():
    info = http_info({}, "rebuild_index")
    assert info == {"method": None, "route": "rebuild_index", "path": None, "query": "", "status_code": None}


@pytest.mark.parametrize("raw,expected", [(404, 404), ("503", 503), ("abc", None), (None, None)])
def test_status_code_parsing(raw, expected):
    attributes = {"http.method": "GET", "http.target": "/"}
    if raw is not None:
        attributes["http.status_code"] = raw
    assert http_info(attributes, "GET /")["status_code"] == expected


def test_http_info_redacts_sensitive_query_parameters():
    info = http_info({"http.method": "GET", "http.target": "/cb?code=1&access_token=SECRETVALUE"}, "GET /cb")
    assert "SECRETVALUE" not in info["query"]
    assert "code=1" in info["query"]
    assert "access_token=" in info["query"]
    assert REDACTED in info["query"] or "%5BREDACTED%5D" in info["query"]


# ---------------------------------------------------------------------------------- headers
def test_capture_list_is_case_insensitive():
    pairs = [("X-REQUEST-ID", "abc"), ("user-agent", "curl/8"), ("X-Not-Captured", "nope"),
             ("Content-Type", "text/plain"), ("TRACEPARENT", "00-1-2-01")]
    out = select_headers(pairs, CAPTURE, REDACT)
    assert out == {"x-request-id": "abc", "user-agent": "curl/8", "content-type": "text/plain",
                   "traceparent": "00-1-2-01"}


def test_custom_capture_list():
    out = select_headers([("X-Tenant", "acme"), ("X-Request-ID", "1")], frozenset({"x-tenant"}), REDACT)
    assert out == {"x-tenant": "acme"}


@pytest.mark.parametrize("name", [
    "Authorization", "authorization", "Proxy-Authorization", "Cookie", "COOKIE", "Set-Cookie", "X-Api-Key",
    "X-Auth-Token", "X-CSRF-Token", "x-access-token", "X-Client-Secret", "X-Password", "X-Session-Id",
    "Sessionid", "X-My-SECRET-Thing",
])
def test_default_redaction(name):
    out = select_headers([(name, "hunter2-value"), ("X-Request-ID", "r1")], CAPTURE, REDACT)
    assert out[name.lower()] == REDACTED
    assert "hunter2-value" not in repr(out)
    assert out["x-request-id"] == "r1"


def test_redaction_applies_even_to_captured_headers():
    capture = CAPTURE | {"authorization", "x-session-token"}
    out = select_headers([("Authorization", "Bearer abc"), ("X-Session-Token", "s")], capture, REDACT)
    assert out == {"authorization": REDACTED, "x-session-token": REDACTED}


def test_custom_redact_list_is_case_insensitive_by_lowering():
    redact = frozenset(h.lower() for h in ["X-Internal-Key"])
    out = select_headers([("x-internal-KEY", "v"), ("X-Request-ID", "1")], CAPTURE | {"x-internal-key"}, redact)
    assert out["x-internal-key"] == REDACTED
    assert out["x-request-id"] == "1"


def test_non_sensitive_headers_not_in_the_capture_list_are_dropped():
    out = select_headers([("X-Forwarded-Host", "h"), ("Host", "example.com"), ("Accept", "*/*")], CAPTURE, REDACT)
    assert out == {"accept": "*/*"}


def test_long_values_are_truncated_with_a_marker():
    long_value = "x" * 4000 + "TAIL"
    out = select_headers([("User-Agent", long_value), ("Referer", "r" * MAX_HEADER_VALUE_CHARS)], CAPTURE, REDACT)
    value = out["user-agent"]
    assert MAX_HEADER_VALUE_CHARS == 1000
    assert value.startswith("x" * 1000)
    assert "TAIL" not in value
    assert "truncated" in value
    assert len(value) < 1100
    assert out["referer"] == "r" * 1000  # exactly at the limit: untouched


def test_repeated_headers_are_joined():
    out = select_headers([("Accept", "text/html"), ("accept", "application/json"), ("X-Forwarded-For", "1.1.1.1"),
                          ("X-Forwarded-For", "2.2.2.2")], CAPTURE, REDACT)
    assert out["accept"] == "text/html, application/json"
    assert out["x-forwarded-for"] == "1.1.1.1, 2.2.2.2"


def test_repeated_sensitive_headers_stay_redacted_once():
    out = select_headers([("Cookie", "a=1"), ("Cookie", "b=2")], CAPTURE, REDACT)
    assert out == {"cookie": REDACTED}


def test_repeated_long_headers_stay_bounded():
    out = select_headers([("Accept", "a" * 900), ("Accept", "b" * 900)], CAPTURE, REDACT)
    assert len(out["accept"]) < 1100
    assert out["accept"].startswith("a" * 900 + ", ")


def test_headers_from_otel_attributes():
    pairs = headers_from_attributes({"http.request.header.x_request_id": ("abc",),
                                     "http.request.header.accept": ["a", "b"], "http.method": "GET"})
    assert sorted(pairs) == [("accept", "a, b"), ("x-request-id", "abc")]


# ---------------------------------------------------------------------------------- query redaction
@pytest.mark.parametrize("name", ["token", "access_token", "client_secret", "password", "sessionid", "api_key",
                                  "auth", "X-Amz-Signature", "credential", "KEY"])
def test_redact_query_sensitive_names(name):
    out = redact_query(f"page=2&{name}=TOPSECRET&q=shoes")
    assert "TOPSECRET" not in out
    assert "page=2" in out and "q=shoes" in out
    assert f"{name}=" in out


def test_redact_query_leaves_harmless_queries_byte_for_byte():
    for query in ("a=1&b=2", "q=%20x%2F&b", "search=caf%C3%A9&page=3", "flag"):
        assert redact_query(query) == query


def test_redact_query_truncates_long_queries():
    out = redact_query("q=" + "z" * 3000)
    assert len(out) < 1100
    assert "truncated" in out


# ---------------------------------------------------------------------------------- UrlFilter
def _filter(include=(), exclude=()):
    return UrlFilter(compile_url_patterns("include_urls", list(include)),
                     compile_url_patterns("exclude_urls", list(exclude)))


def _attrs(path, route=None, stable=False):
    attributes = {"url.path": path} if stable else {"http.target": path}
    if route:
        attributes["http.route"] = route
    return attributes


def test_no_patterns_allows_everything():
    url_filter = _filter()
    assert url_filter.active is False
    assert url_filter.allows(_attrs("/anything"), "GET /anything")


def test_include_glob_matches_nested_paths():
    url_filter = _filter(include=["/api/*"])
    assert url_filter.active
    assert url_filter.allows(_attrs("/api/users/7"), "GET /api/users/<int:id>")
    assert url_filter.allows(_attrs("/api/users/7", stable=True), "GET")
    assert not url_filter.allows(_attrs("/health"), "GET /health")
    assert not url_filter.allows(_attrs("/apix"), "GET /apix")


def test_exclude_glob():
    url_filter = _filter(exclude=["/health", "/static/*"])
    assert not url_filter.allows(_attrs("/health"), "GET /health")
    assert not url_filter.allows(_attrs("/static/css/site.css"), "GET /static/<path:f>")
    assert url_filter.allows(_attrs("/healthz"), "GET /healthz")
    assert url_filter.allows(_attrs("/api/x"), "GET /api/x")


def test_include_wins_over_exclude():
    url_filter = _filter(include=["/api/*"], exclude=["/api/*", "/health"])
    assert url_filter.allows(_attrs("/api/users/7"), "GET /api/users/<id>")
    assert not url_filter.allows(_attrs("/health"), "GET /health")
    assert not url_filter.allows(_attrs("/other"), "GET /other")


def test_patterns_match_the_route_template_too():
    url_filter = _filter(exclude=["/items/<int:item_id>"])
    assert not url_filter.allows(_attrs("/items/7", route="/items/<int:item_id>"), "GET /items/<int:item_id>")
    assert url_filter.allows(_attrs("/items/7", route="/items/<string:slug>"), "GET /items/<string:slug>")
    include = _filter(include=["/users/{user_id}"])
    assert include.allows(_attrs("/users/9", route="/users/{user_id}", stable=True), "GET /users/{user_id}")
    assert not include.allows(_attrs("/users/9", stable=True), "GET")


def test_query_string_is_not_part_of_the_matched_path():
    url_filter = _filter(include=["/search"])
    assert url_filter.allows(_attrs("/search?q=1"), "GET /search")


def test_regex_patterns():
    url_filter = _filter(include=[r"re:^/v[0-9]+/"])
    assert url_filter.allows(_attrs("/v2/users"), "GET /v2/users")
    assert not url_filter.allows(_attrs("/vx/users"), "GET /vx/users")


def test_url_filters_through_the_real_pipeline(tmp_path):
    from flask import Flask
    from opentelemetry.sdk.trace import TracerProvider

    from otel_perfmon import configure_perfmon

    app = Flask(__name__)

    @app.get("/api/users/<int:user_id>")
    def user(user_id):
        return str(user_id)

    @app.get("/api/internal/<int:n>")
    def internal(n):
        return str(n)

    @app.get("/health")
    def health():
        return "ok"

    provider = TracerProvider()
    perfmon = configure_perfmon(app=app, tracer_provider=provider, report_dir=str(tmp_path), dedup_store="memory",
                                exclude_urls=["/health", "/api/internal/*"])
    try:
        client = app.test_client()
        assert client.get("/health").status_code == 200
        assert client.get("/api/internal/3").status_code == 200
        assert perfmon.stats()["spans_started"] == 0
        assert client.get("/api/users/7").status_code == 200
        assert perfmon.stats()["spans_started"] == 1
    finally:
        perfmon.shutdown(timeout_seconds=2)
