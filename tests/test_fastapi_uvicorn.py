"""End to end: examples/fastapi_app.py under real uvicorn over real HTTP."""

from __future__ import annotations

import json
import os
import threading

import jsonschema
import pytest

from conftest import free_port, http_get, read_reports, read_spans, run_server, uvicorn_argv, wait_until

SCHEMA = json.load(open(os.path.join(os.path.dirname(__file__), "..", "src", "otel_perfmon", "report",
                                     "schema.json"), encoding="utf-8"))
THRESHOLD = 0.25
SLOW = 0.6


@pytest.fixture(scope="module", params=["adaptive", "always"])
def fastapi_run(request, tmp_path_factory):
    """One uvicorn run per profiling policy: concurrent async requests, sync routes, a fast
    route. With the default ``adaptive`` policy first slow requests get call trees from stack
    samples of the whole span; with ``always`` every span has a full pyinstrument profile."""
    root = tmp_path_factory.mktemp("fastapi")
    reports, spans, log = str(root / "reports"), str(root / "spans"), str(root / "server.log")
    env = {"OTEL_PERFMON_THRESHOLD_SECONDS": str(THRESHOLD), "EXAMPLE_SLOW_SECONDS": str(SLOW),
           "OTEL_PERFMON_REPORT_DIR": reports, "EXAMPLE_SPAN_DIR": spans, "OTEL_SERVICE_NAME": "shop-fastapi",
           "OTEL_PERFMON_PROFILE_POLICY": request.param}
    port = free_port()
    with run_server(uvicorn_argv("fastapi_app:app", port), env, port, log) as server:
        assert http_get(server.url("/fast"))[0] == 200
        # three async requests in flight at once on one event loop.
        statuses = []
        concurrent = [threading.Thread(target=lambda p=p: statuses.append(http_get(server.url(p))[0]))
                      for p in ("/io", "/cpu", "/items/3?q=x")]
        for t in concurrent:
            t.start()
        for t in concurrent:
            t.join(60)
        assert statuses == [200, 200, 200]
        assert http_get(server.url("/sync-cpu"))[0] == 200
        assert http_get(server.url("/sync-io"))[0] == 200
        wait_until(lambda: len(read_reports(reports)) >= 5, 30, message="five reports")
        wait_until(lambda: len([s for s in read_spans(spans) if s["kind"] == "SpanKind.SERVER"]) >= 7, 30,
                   message="server spans")
    return {"policy": request.param, "reports": {r["http"]["route"]: r for r in read_reports(reports)},
            "spans": [s for s in read_spans(spans) if s["kind"] == "SpanKind.SERVER"]}


def test_reports_and_links(fastapi_run):
    reports, spans = fastapi_run["reports"], fastapi_run["spans"]
    assert set(reports) == {"/io", "/cpu", "/items/{item_id}", "/sync-cpu", "/sync-io"}
    by_route = {}
    for span in spans:
        by_route.setdefault(span["attributes"].get("http.route"), []).append(span)
    assert not [k for s in by_route["/fast"] for k in s["attributes"] if k.startswith("perfmon.")]
    for route, report in reports.items():
        jsonschema.validate(report, SCHEMA)
        (span,) = by_route[route]
        assert span["attributes"]["perfmon.slow"] is True
        assert span["attributes"]["perfmon.report.id"] == report["report_id"]
        assert report["span_id"] == span["context"]["span_id"][2:]
        assert report["trace_id"] == span["context"]["trace_id"][2:]
        assert report["service_name"] == "shop-fastapi"
        assert report["duration_ms"] >= SLOW * 1000 * 0.95
        if fastapi_run["policy"] == "always":
            assert report["profile"]["mode"] == "full" and report["profile"]["coverage"] > 0.9
        else:
            assert report["profile"]["mode"] in ("full", "sampled")  # stack samples of the whole span
            # 0.6 s spans: the tail after the last sample (one interval, longer on a loaded
            # machine) is a larger share than in tests/test_call_trees.py
            assert report["profile"]["coverage"] >= 0.8, report["profile"]
    assert reports["/items/{item_id}"]["http"]["path"] == "/items/3"
    assert reports["/items/{item_id}"]["http"]["query"] == "q=x"


def test_concurrent_async_profiles_are_isolated(fastapi_run):
    reports = fastapi_run["reports"]
    io_tree = reports["/io"]["profile"]["call_tree_text"]
    cpu_tree = reports["/cpu"]["profile"]["call_tree_text"]
    items_tree = reports["/items/{item_id}"]["profile"]["call_tree_text"]
    assert "fetch_from_slow_service" in io_tree and "crunch_numbers" not in io_tree
    assert "crunch_numbers" in cpu_tree and "fetch_from_slow_service" not in cpu_tree
    assert "fetch_from_slow_service" in items_tree and "crunch_numbers" not in items_tree
    # the async I/O wait is charged to the awaiting code, not to the other request's CPU work.
    top = reports["/io"]["profile"]["hotspots"][0]
    assert top["function"] in ("sleep", "fetch_from_slow_service") and top["percent"] > 50


def test_sync_routes_are_profiled_in_their_worker_thread(fastapi_run):
    reports = fastapi_run["reports"]
    cpu = reports["/sync-cpu"]["profile"]
    assert "sync_cpu" in cpu["call_tree_text"] and "crunch_numbers" in cpu["call_tree_text"]
    app_time = sum(h["percent"] for h in cpu["hotspots"] if h["file"].endswith(("fastapi_app.py", "workloads.py")))
    assert app_time > 50, cpu["hotspots"]
    io = reports["/sync-io"]["profile"]
    assert "blocking_query" in io["call_tree_text"]
    # pyinstrument sees the C call (sleep); the stack sampler sees its caller.
    assert io["hotspots"][0]["function"] in ("sleep", "load_from_slow_backend") and io["hotspots"][0]["percent"] > 50
