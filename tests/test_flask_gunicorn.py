"""End to end: examples/flask_app.py under real gunicorn (2 workers) over real HTTP."""

from __future__ import annotations

import json
import os
import threading

import jsonschema

from conftest import free_port, gunicorn_argv, http_get, read_reports, read_spans, run_server, wait_until

SCHEMA = json.load(open(os.path.join(os.path.dirname(__file__), "..", "src", "otel_perfmon", "report",
                                     "schema.json"), encoding="utf-8"))
THRESHOLD = 0.25
SLOW = 0.6
XSS = "<script>alert(1)</script>"


def server_env(workdir, **extra):
    env = {
        "OTEL_PERFMON_THRESHOLD_SECONDS": str(THRESHOLD),
        "EXAMPLE_SLOW_SECONDS": str(SLOW),
        "OTEL_PERFMON_REPORT_DIR": workdir["reports"],
        "EXAMPLE_SPAN_DIR": workdir["spans"],
        "OTEL_PERFMON_REPORT_URL_TEMPLATE": "https://perf.example.com/reports/{report_id}",
        "OTEL_SERVICE_NAME": "shop-flask",
    }
    env.update(extra)
    return env


def server_spans(workdir):
    return [s for s in read_spans(workdir["spans"]) if s["kind"] == "SpanKind.SERVER"]


def span_for(spans, target):
    matches = [s for s in spans if s["attributes"].get("http.target") == target]
    assert len(matches) == 1, f"expected one span for {target}, got {len(matches)}"
    return matches[0]


def test_slow_requests_get_linked_reports_and_fast_ones_nothing(workdir):
    port = free_port()
    with run_server(gunicorn_argv("flask_app:app", port), server_env(workdir), port, workdir["log"]) as server:
        headers = {
            "Authorization": "Bearer top-secret-value",
            "Cookie": "sessionid=abcdef",
            "X-Session-Id": "also-secret",
            "X-Request-ID": XSS,
            "X-Correlation-ID": "c" * 5000,
            "User-Agent": "perfmon-test",
        }
        assert http_get(server.url("/fast"), headers)[0] == 200
        assert http_get(server.url("/cpu"), headers)[0] == 200
        assert http_get(server.url("/io?api_token=hunter2&page=2"), headers)[0] == 200
        wait_until(lambda: len(read_reports(workdir["reports"])) >= 2, 30, message="two reports")
        wait_until(lambda: len(server_spans(workdir)) >= 3, 30, message="three server spans")

    reports = {r["http"]["route"]: r for r in read_reports(workdir["reports"])}
    assert set(reports) == {"/cpu", "/io"}
    spans = server_spans(workdir)
    fast = span_for(spans, "/fast")
    assert not [k for k in fast["attributes"] if k.startswith("perfmon.")]

    for target, route in (("/cpu", "/cpu"), ("/io?api_token=hunter2&page=2", "/io")):
        report = reports[route]
        jsonschema.validate(report, SCHEMA)
        span = span_for(spans, target)
        assert span["attributes"]["perfmon.slow"] is True
        assert span["attributes"]["perfmon.report.id"] == report["report_id"]
        assert span["attributes"]["perfmon.report.url"] == \
            f"https://perf.example.com/reports/{report['report_id']}"
        assert report["trace_id"] == span["context"]["trace_id"][2:]
        assert report["span_id"] == span["context"]["span_id"][2:]
        assert report["service_name"] == "shop-flask"
        assert report["span_name"] == f"GET {route}"
        assert report["duration_ms"] >= SLOW * 1000 * 0.95
        assert report["threshold_ms"] == THRESHOLD * 1000
        assert report["http"]["method"] == "GET" and report["http"]["status_code"] == 200
        for suffix in ("json", "html", "md"):
            assert os.path.exists(os.path.join(workdir["reports"], f"{report['report_id']}.{suffix}"))

    cpu, io = reports["/cpu"], reports["/io"]
    assert any(h["function"] in ("crunch_numbers", "checksum_rows", "<genexpr>") and h["file"].endswith("workloads.py")
               for h in cpu["profile"]["hotspots"][:3]), cpu["profile"]["hotspots"]
    assert "crunch_numbers" in cpu["profile"]["call_tree_text"]
    assert "load_from_slow_backend" in io["profile"]["call_tree_text"]
    assert io["http"]["path"] == "/io"
    assert "hunter2" not in json.dumps(io) and "api_token=%5BREDACTED%5D" in io["http"]["query"] \
        or "api_token=[REDACTED]" in io["http"]["query"]

    # headers: captured, redacted, truncated; secrets appear in no file at all.
    hdrs = cpu["headers"]
    assert hdrs["authorization"] == "[REDACTED]" and hdrs["cookie"] == "[REDACTED]"
    assert hdrs["x-session-id"] == "[REDACTED]"
    assert hdrs["x-request-id"] == XSS and hdrs["user-agent"] == "perfmon-test"
    assert hdrs["x-correlation-id"].startswith("c" * 1000) and "truncated 4000" in hdrs["x-correlation-id"]
    for name in os.listdir(workdir["reports"]):
        if name.endswith((".json", ".html", ".md")):
            text = open(os.path.join(workdir["reports"], name), encoding="utf-8").read()
            for secret in ("top-secret-value", "abcdef", "also-secret", "hunter2"):
                assert secret not in text, (name, secret)
    html = open(os.path.join(workdir["reports"], f"{cpu['report_id']}.html"), encoding="utf-8").read()
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    md = open(os.path.join(workdir["reports"], f"{cpu['report_id']}.md"), encoding="utf-8").read()
    assert XSS not in md and "&lt;script&gt;" in md


def test_dedup_across_workers_and_restart(workdir):
    port = free_port()
    env = server_env(workdir)
    paths = [f"/items/{n}" for n in (1, 3, 5, 7, 9, 11)]
    with run_server(gunicorn_argv("flask_app:app", port, workers=3), env, port, workdir["log"]) as server:
        results = []
        threads = [threading.Thread(target=lambda p=p: results.append(http_get(server.url(p))[0])) for p in paths]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == [200] * len(paths)
        wait_until(lambda: len(server_spans(workdir)) >= len(paths), 30, message="server spans")
        # the report is created once; every slow span links to it.
        wait_until(lambda: read_reports(workdir["reports"]), 30, message="a report")
    reports = read_reports(workdir["reports"])
    assert len(reports) == 1, [r["report_id"] for r in reports]
    report_id = reports[0]["report_id"]
    assert reports[0]["http"]["route"] == "/items/<int:item_id>"
    item_spans = [s for s in server_spans(workdir) if s["attributes"].get("http.target", "").startswith("/items/")]
    assert len(item_spans) == len(paths)
    assert {s["attributes"].get("perfmon.report.id") for s in item_spans} == {report_id}
    # sync workers serve one request at a time: several processes raced for the same claim.
    span_files = [n for n in os.listdir(workdir["spans"])
                  if "/items/" in open(os.path.join(workdir["spans"], n)).read()]
    assert len(span_files) >= 2, span_files

    from otel_perfmon.dedup.sqlite import SqliteDedupStore

    store = SqliteDedupStore.in_report_dir(workdir["reports"])
    entry = wait_until(lambda: (lambda e: e if e and e[0].count == len(paths) else None)(store.entries()),
                       30, message="six occurrences counted")[0]
    assert entry.report_id == report_id and entry.worst_duration_ms >= SLOW * 1000 * 0.95
    store.close()

    # restart: the same route stays deduplicated, and the new span links to the old report.
    port = free_port()
    with run_server(gunicorn_argv("flask_app:app", port), env, port, workdir["log"]) as server:
        assert http_get(server.url("/items/13"))[0] == 200
        wait_until(lambda: [s for s in server_spans(workdir) if s["attributes"].get("http.target") == "/items/13"],
                   30, message="the span after restart")
    assert len(read_reports(workdir["reports"])) == 1
    assert span_for(server_spans(workdir), "/items/13")["attributes"]["perfmon.report.id"] == report_id


def test_include_wins_over_exclude(workdir):
    port = free_port()
    env = server_env(workdir, OTEL_PERFMON_INCLUDE_URLS="/cpu, /io", OTEL_PERFMON_EXCLUDE_URLS="/io,/items/*")
    with run_server(gunicorn_argv("flask_app:app", port, workers=1), env, port, workdir["log"]) as server:
        for path in ("/items/1", "/io", "/cpu"):
            assert http_get(server.url(path))[0] == 200
        wait_until(lambda: len(read_reports(workdir["reports"])) >= 2, 30, message="two reports")
        wait_until(lambda: len(server_spans(workdir)) >= 3, 30, message="three spans")
    assert {r["http"]["route"] for r in read_reports(workdir["reports"])} == {"/cpu", "/io"}
    items = span_for(server_spans(workdir), "/items/1")
    assert "perfmon.slow" not in items["attributes"]


def test_exclude_only(workdir):
    port = free_port()
    env = server_env(workdir, OTEL_PERFMON_EXCLUDE_URLS="/io,re:^/items/\\d+$")
    with run_server(gunicorn_argv("flask_app:app", port, workers=1), env, port, workdir["log"]) as server:
        for path in ("/items/1", "/io", "/cpu"):
            assert http_get(server.url(path))[0] == 200
        wait_until(lambda: read_reports(workdir["reports"]), 30, message="a report")
        wait_until(lambda: len(server_spans(workdir)) >= 3, 30, message="three spans")
    assert [r["http"]["route"] for r in read_reports(workdir["reports"])] == ["/cpu"]
