"""End to end: examples/django_project under real gunicorn (WSGI) and uvicorn (ASGI) over real HTTP.

``configure_perfmon()`` in wsgi.py / asgi.py instruments Django with OTel's DjangoInstrumentor
before the application loads; zero code goes through the launcher's ``django`` entry point.
"""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("django")
pytest.importorskip("opentelemetry.instrumentation.django")

import jsonschema  # noqa: E402

from conftest import (  # noqa: E402
    BIN,
    EXAMPLES,
    free_port,
    gunicorn_argv,
    http_get,
    read_reports,
    read_spans,
    run_server,
    uvicorn_argv,
    wait_until,
)
from otel_perfmon import attributes as attr  # noqa: E402
from otel_perfmon.config import compile_url_patterns  # noqa: E402
from otel_perfmon.dedup import fingerprint  # noqa: E402
from otel_perfmon.report.capture import UrlFilter  # noqa: E402

SCHEMA = json.load(open(os.path.join(os.path.dirname(__file__), "..", "src", "otel_perfmon", "report",
                                     "schema.json"), encoding="utf-8"))
THRESHOLD = 0.25
SLOW = 1.0  # coverage >= 0.9 leaves one sampling interval of tail (as in tests/test_policy.py)
SERVICE = "shop-django"
HEADERS = {"Authorization": "Bearer secret-token", "Cookie": "sessionid=abc", "X-Request-ID": "req-42"}
SLOW_ROUTES = {"cpu", "sync-io", "async-io", "items/<int:item_id>"}


def reports_in(report_dir):
    """The report JSON files (not the other ``*.json`` renderings, e.g. speedscope profiles)."""
    return [r for r in read_reports(report_dir) if "schema_version" in r]


def django_env(root, policy="adaptive", **extra):
    env = {"OTEL_PERFMON_THRESHOLD_SECONDS": str(THRESHOLD), "EXAMPLE_SLOW_SECONDS": str(SLOW),
           "OTEL_PERFMON_REPORT_DIR": os.path.join(root, "reports"), "EXAMPLE_SPAN_DIR": os.path.join(root, "spans"),
           "OTEL_SERVICE_NAME": SERVICE, "OTEL_PERFMON_PROFILE_POLICY": policy,
           "OTEL_SEMCONV_STABILITY_OPT_IN": "", "OTEL_PYTHON_DJANGO_INSTRUMENT": ""}
    env.update(extra)
    return env


def argv_for(interface, port, workers=2):
    if interface == "wsgi":
        return gunicorn_argv("django_project.wsgi:application", port, workers=workers)
    return uvicorn_argv("django_project.asgi:application", port)


def server_spans(root):
    return [s for s in read_spans(os.path.join(root, "spans")) if s["kind"] == "SpanKind.SERVER"]


@pytest.fixture(scope="module", params=["wsgi", "asgi"])
def django_run(request, tmp_path_factory):
    """One server per interface: a fast view, the slow CPU, blocking and async views, a
    parameterized one twice (the second is the same fingerprint: deduplicated)."""
    root = str(tmp_path_factory.mktemp("django-" + request.param))
    reports = os.path.join(root, "reports")
    port = free_port()
    with run_server(argv_for(request.param, port), django_env(root), port, os.path.join(root, "server.log")) as server:
        for path in ("/fast", "/cpu", "/sync-io", "/async-io", "/items/3?q=shoes&token=t0p", "/items/2"):
            assert http_get(server.url(path), headers=HEADERS)[0] == 200, path
        wait_until(lambda: len(reports_in(reports)) >= 4, 30, message="four reports")
        assert http_get(server.url("/items/5"), headers=HEADERS)[0] == 200
        wait_until(lambda: len([s for s in server_spans(root) if s["name"] != "GET health"]) >= 7, 30,
                   message="the server spans")
    return {"interface": request.param, "reports": {r["http"]["route"]: r for r in reports_in(reports)},
            "spans": [s for s in server_spans(root) if s["name"] != "GET health"]}


def test_slow_views_get_linked_reports_and_fast_ones_none(django_run):
    reports, spans = django_run["reports"], django_run["spans"]
    assert set(reports) == SLOW_ROUTES  # /items/5 was deduplicated into the /items/3 report
    by_route = {}
    for span in spans:
        by_route.setdefault(span["attributes"].get("http.route"), []).append(span)
    for route in ("fast",):
        assert not [k for s in by_route[route] for k in s["attributes"] if k.startswith("perfmon.")]
    fast_item = [s for s in by_route["items/<int:item_id>"] if s["attributes"]["http.target"] == "/items/2"]
    assert len(fast_item) == 1 and attr.PERFMON_REPORT_ID not in fast_item[0]["attributes"]
    for route, report in reports.items():
        jsonschema.validate(report, SCHEMA)
        linked = [s for s in by_route[route] if s["attributes"].get(attr.PERFMON_REPORT_ID) == report["report_id"]]
        span = next(s for s in linked if s["context"]["span_id"][2:] == report["span_id"])
        assert span["attributes"][attr.PERFMON_SLOW] is True
        assert report["trace_id"] == span["context"]["trace_id"][2:]
        assert report["span_name"] == f"GET {route}"
        assert report["http"]["method"] == "GET" and report["http"]["status_code"] == 200
        assert report["service_name"] == SERVICE
        assert report["duration_ms"] >= SLOW * 1000 * 0.95
        assert report["fingerprint"] == fingerprint(SERVICE, "GET", route)  # the route template, as for Flask
        headers = report["headers"]
        assert headers["authorization"] == "[REDACTED]" and headers["cookie"] == "[REDACTED]"
        assert headers["x-request-id"] == "req-42"
        assert "secret-token" not in json.dumps(report) and "sessionid=abc" not in json.dumps(report)
    # the deduplicated /items/5 span links to the kept /items/3 report
    item_ids = {s["attributes"].get(attr.PERFMON_REPORT_ID) for s in by_route["items/<int:item_id>"]
                if s["attributes"]["http.target"] in ("/items/3?q=shoes&token=t0p", "/items/5")}
    assert item_ids == {reports["items/<int:item_id>"]["report_id"]}
    item = reports["items/<int:item_id>"]["http"]
    assert item["path"] == "/items/3" and item["query"] == "q=shoes&token=[REDACTED]"


def test_call_trees_name_the_views(django_run):
    reports = django_run["reports"]
    cpu = reports["cpu"]["profile"]
    assert cpu["mode"] in ("full", "sampled")
    assert "cpu_report" in cpu["call_tree_text"] and "crunch_numbers" in cpu["call_tree_text"]
    assert cpu["coverage"] >= 0.9, cpu
    app_time = sum(h["percent"] for h in cpu["hotspots"] if h["file"].endswith(("views.py", "workloads.py")))
    assert app_time > 50, cpu["hotspots"]
    # a def view: under ASGI Django runs it in asgiref's thread executor, which is sampled for the span
    sync_io = reports["sync-io"]["profile"]
    assert "sync_io" in sync_io["call_tree_text"] and "query_orders" in sync_io["call_tree_text"]
    assert sync_io["hotspots"][0]["function"] in ("sleep", "load_from_slow_backend"), sync_io["hotspots"]
    item = reports["items/<int:item_id>"]["profile"]["call_tree_text"]
    assert "item" in item and "crunch_numbers" in item
    if django_run["interface"] == "asgi":
        # an async view runs on the event loop in the request's task (OTel's middleware runs there too)
        async_io = reports["async-io"]["profile"]
        assert "async_io" in async_io["call_tree_text"]
        assert "fetch_from_slow_service" in async_io["call_tree_text"]
        assert "crunch_numbers" not in async_io["call_tree_text"]
        assert "PerfmonDjangoMiddleware" in async_io["call_tree_text"]


def test_asgi_sync_view_profiled_in_asgiref_worker_thread(tmp_path):
    """With every span profiled by pyinstrument (policy ``always``), a def view's work in
    asgiref's worker thread is in the call tree (a worker-thread session of the span)."""
    root = str(tmp_path)
    port = free_port()
    with run_server(argv_for("asgi", port), django_env(root, policy="always"), port,
                    os.path.join(root, "server.log")) as server:
        for path in ("/sync-io", "/cpu", "/fast"):
            assert http_get(server.url(path), headers=HEADERS)[0] == 200
        report_dir = os.path.join(root, "reports")
        reports = wait_until(lambda: (lambda r: r if len(r) >= 2 else None)(reports_in(report_dir)),
                             30, message="two reports")
    by_route = {r["http"]["route"]: r for r in reports}
    assert set(by_route) == {"sync-io", "cpu"}
    sync_io = by_route["sync-io"]["profile"]
    assert sync_io["mode"] == "full"
    assert "query_orders" in sync_io["call_tree_text"] and "load_from_slow_backend" in sync_io["call_tree_text"]
    cpu = by_route["cpu"]["profile"]
    assert cpu["mode"] == "full" and "crunch_numbers" in cpu["call_tree_text"]


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_url_globs_match_django_route_templates(tmp_path, interface):
    """Django's templates have no leading slash; ``/items/*`` matches them as it matches Flask's."""
    root = str(tmp_path)
    port = free_port()
    env = django_env(root, OTEL_PERFMON_INCLUDE_URLS="/items/*")
    with run_server(argv_for(interface, port, workers=1), env, port, os.path.join(root, "server.log")) as server:
        for path in ("/cpu", "/items/3"):
            assert http_get(server.url(path))[0] == 200
        reports = wait_until(lambda: reports_in(os.path.join(root, "reports")), 30, message="a report")
        wait_until(lambda: len([s for s in server_spans(root) if s["name"] != "GET health"]) >= 2, 30,
                   message="the spans")
    assert [r["http"]["route"] for r in reports] == ["items/<int:item_id>"]
    cpu_span = next(s for s in server_spans(root) if s["attributes"].get("http.route") == "cpu")
    assert attr.PERFMON_SLOW not in cpu_span["attributes"]  # not matched: never tracked


def test_url_filter_matches_django_template_at_span_start():
    """At span start Django has named the span by its template but not yet set http.route."""
    def url_filter(include=(), exclude=()):
        return UrlFilter(compile_url_patterns("include_urls", list(include)),
                         compile_url_patterns("exclude_urls", list(exclude)))

    start = {"http.method": "GET", "http.target": "/items/3"}
    assert not url_filter(exclude=["/items/<int:*>"]).allows(start, "GET items/<int:item_id>")
    assert url_filter(exclude=["/items/<str:*>"]).allows(start, "GET items/<int:item_id>")
    assert url_filter(include=["/items/<int:item_id>"]).allows(start, "GET items/<int:item_id>")
    ended = dict(start, **{"http.route": "items/<int:item_id>"})
    assert url_filter(include=["/items/<int:item_id>"]).allows(ended, "GET items/<int:item_id>")
    assert not url_filter(include=["/orders/*"]).allows(ended, "GET items/<int:item_id>")
    assert url_filter(include=["/health"]).allows({"http.target": "/health"}, "GET")


def test_zero_code_under_opentelemetry_instrument(tmp_path):
    """No otel-perfmon or OTel code in the project: the launcher's django and perfmon entry points."""
    root = str(tmp_path)
    port = free_port()
    env = django_env(root, DJANGO_SETTINGS_MODULE="django_project.settings", PYTHONPATH=EXAMPLES,
                     OTEL_TRACES_EXPORTER="console", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none",
                     OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="")
    argv = [os.path.join(BIN, "opentelemetry-instrument"),
            *gunicorn_argv("django_project.wsgi_plain:application", port, workers=1)]
    with run_server(argv, env, port, os.path.join(root, "server.log")) as server:
        for path in ("/fast", "/items/7"):
            assert http_get(server.url(path), headers=HEADERS)[0] == 200
        reports = wait_until(lambda: reports_in(os.path.join(root, "reports")), 30, message="a report")
    (report,) = reports
    assert report["http"]["route"] == "items/<int:item_id>" and report["http"]["path"] == "/items/7"
    assert report["headers"]["authorization"] == "[REDACTED]"
    assert "crunch_numbers" in report["profile"]["call_tree_text"]
    assert report["service_name"] == SERVICE


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_a_form_the_view_parsed_is_in_the_report_scrubbed(tmp_path, interface):
    import requests

    root = str(tmp_path)
    port = free_port()
    with run_server(argv_for(interface, port, workers=1), django_env(root), port, os.path.join(root, "log")) as server:
        form = {"name": "Ada", "password": "hunter2-django-secret", "csrfmiddlewaretoken": "tok-123456"}
        assert requests.post(server.url("/signup"), data=form, timeout=30).status_code == 200
        (report,) = wait_until(lambda: reports_in(os.path.join(root, "reports")), 30, message="the report")
    assert report["request"]["form"] == {"name": "Ada", "password": "[REDACTED]", "csrfmiddlewaretoken": "[REDACTED]"}
    for name in os.listdir(os.path.join(root, "reports")):
        text = open(os.path.join(root, "reports", name), encoding="utf-8", errors="replace").read()
        assert "hunter2-django-secret" not in text and "tok-123456" not in text, name
