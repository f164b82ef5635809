"""Every route's numbers (otel_perfmon.route_stats): the histogram, the per-process table and its
flush, the three stores (SQLite across processes, real redis-server), the processor's hook, and
a gunicorn (2 workers) Flask app read back through a real ``otel-perfmon serve``."""

from __future__ import annotations

import json
import math
import os
import random
import sqlite3
import subprocess
import sys
from urllib.parse import urlencode

import pytest

from conftest import BIN, free_port, gunicorn_argv, http_get, run_server, wait_until
from otel_perfmon import route_stats
from otel_perfmon.dedup import RouteStatsDelta, fingerprint
from otel_perfmon.dedup.base import ROUTE_BUCKET_BOUNDS_MS, DedupStore, RouteStatsEntry
from otel_perfmon.dedup.memory import MemoryDedupStore
from otel_perfmon.dedup.sqlite import SqliteDedupStore
from otel_perfmon.route_stats import RouteStats, new_row, record, row_delta
from otel_perfmon.testing import FakeClock
from test_dedup import _flush, redis_url  # noqa: F401  (the real redis-server fixture)

KEY = (fingerprint("shop", "GET", "/items/<id>"), "shop", "GET", "/items/<id>")


def entry_of(durations, threshold=1.0) -> RouteStatsEntry:
    """The entry a memory store holds after one flush of ``durations`` (seconds)."""
    row = new_row()
    for d in durations:
        record(row, d, d > threshold)
    store = MemoryDedupStore()
    store.add_route_stats([row_delta(KEY, row, None)], 100.0)
    (entry,) = store.route_stats()
    return entry


def true_percentile(values, q):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]  # nearest rank


def bucket_width_ms(value_ms: float) -> float:
    bounds = (0.0,) + ROUTE_BUCKET_BOUNDS_MS
    for lower, upper in zip(bounds, bounds[1:]):
        if value_ms <= upper:
            return upper - lower
    return math.inf


# ---------------------------------------------------------------------------------- histogram
@pytest.mark.parametrize("seed", range(5))
def test_percentiles_are_within_a_bucket_of_the_sorted_list(seed):
    rng = random.Random(seed)
    durations = [rng.lognormvariate(math.log(0.05), 1.2) for _ in range(rng.choice((7, 100, 2000)))]
    entry = entry_of(durations)
    assert entry.count == len(durations)
    assert entry.slow == sum(1 for d in durations if d > 1.0)
    assert entry.max_ms == pytest.approx(max(durations) * 1000)
    for q in (0.5, 0.95, 0.99, 1.0):
        expected = true_percentile(durations, q) * 1000
        assert abs(entry.percentile(q) - expected) <= bucket_width_ms(expected) + 1e-9, q
    assert entry.percentile(1.0) == pytest.approx(entry.max_ms)
    assert entry.p50_ms <= entry.p95_ms <= entry.p99_ms <= entry.max_ms


def test_extremes_underflow_overflow_and_empty():
    entry = entry_of([0.0001, 0.0002, 75.0, 90.0], threshold=60)
    assert entry.count == 4 and entry.slow == 2 and entry.max_ms == pytest.approx(90_000)
    assert entry.percentile(0.25) <= 1.0  # below the first bound
    assert 60_000 <= entry.percentile(0.99) <= 90_000  # the overflow bucket ends at the exact max
    assert RouteStatsEntry("f", "s", "GET", "/", 0, 0, 0.0, 0, 0, ()).p99_ms == 0.0
    one = entry_of([0.3])  # one value: its bucket (250, 320] ends at the exact max
    assert one.percentile(1.0) == pytest.approx(300) and 250 <= one.p50_ms <= 300


def test_a_bound_counts_in_its_own_bucket():
    row = new_row()
    record(row, 0.001, False)  # exactly 1 ms: the first bucket (<= 1 ms)
    record(row, 2.0, True)
    assert row[0] == 1 and row[route_stats.SLOW_OFFSET + route_stats.BOUNDS_SECONDS.index(2.0)] == 1


# ---------------------------------------------------------------------------------- table and flush
class Span:
    """What RouteStats reads of a finished span: name, attributes, resource."""

    def __init__(self, name, route=None, method="GET", service="shop", path=None):
        from opentelemetry.sdk.resources import Resource

        self.name = name
        self.attributes = {"http.request.method": method, "url.path": path or (route or "/x")}
        if route:
            self.attributes["http.route"] = route
        self.resource = Resource.create({"service.name": service})


class FailingOnce(MemoryDedupStore):
    def __init__(self):
        super().__init__()
        self.fail = True

    def add_route_stats(self, deltas, now):
        if self.fail:
            self.fail = False
            raise ConnectionError("store down")
        super().add_route_stats(deltas, now)


def test_flush_sends_differences_retries_after_a_failure_and_maps_names_once():
    clock = FakeClock(5000.0)
    store = FailingOnce()
    errors = []
    stats = RouteStats(store, 5.0, clock=clock, on_error=errors.append)
    scheduled = []
    stats.attach(lambda deadline, item: scheduled.append((deadline, item)))
    row = stats.new_row(Span("GET /items/<id>", "/items/<id>"))
    assert stats.new_row(Span("GET /items/<id>", "/items/<id>")) is row
    for d in (0.01, 0.02, 2.0):
        record(row, d, d > 1)
    # the periodic flush item is scheduled once, at clock + interval
    assert len(scheduled) == 1 and scheduled[0][0] == 5005.0
    assert stats.flush_quietly() is False and len(errors) == 1 and store.route_stats() == []
    clock.advance(5)
    deadline, item = scheduled[0]
    stats.fire(item)  # what the watchdog does at the deadline: flush (the retry), re-schedule
    assert scheduled[-1][0] == 5010.0
    (entry,) = store.route_stats()
    assert (entry.count, entry.slow, entry.max_ms, entry.route, entry.method) == (3, 1, 2000.0, "/items/<id>", "GET")
    assert entry.first_seen == entry.last_seen == 5005.0
    assert stats.flush() == 0  # nothing new: nothing written
    record(row, 0.5, False)
    clock.advance(5)
    assert stats.flush() == 1
    (entry,) = store.route_stats()
    assert (entry.count, entry.slow, entry.max_ms, entry.last_seen) == (4, 1, 2000.0, 5010.0)


def test_names_of_one_route_add_up_and_names_beyond_the_cap_share_their_routes_row(monkeypatch):
    monkeypatch.setattr(route_stats, "MAX_NAMES", 3)
    store = MemoryDedupStore()
    stats = RouteStats(store, 5.0)
    # OTel's Flask instrumentor names an unrouted request after its raw path: one route, many names
    for i in range(10):
        row = stats.new_row(Span(f"GET /scan/{i}", None, path=f"/scan/{i}"))
        record(row, 0.01, False)
    assert len(stats.rows) == 3
    stats.new_row(Span("GET /a", "/a"))[0] += 1
    stats.flush()
    by_route = {e.route: e for e in store.route_stats()}
    assert by_route["[unrouted]"].count == 10 and by_route["/a"].count == 1


def test_disabled_interval_never_schedules():
    stats = RouteStats(MemoryDedupStore(), 0)
    scheduled = []
    stats.attach(lambda deadline, item: scheduled.append(item))
    stats.new_row(Span("GET /a", "/a"))
    assert not stats.enabled and scheduled == []


# ---------------------------------------------------------------------------------- stores
@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "memory":
        instance: DedupStore = MemoryDedupStore()
    elif request.param == "sqlite":
        instance = SqliteDedupStore(str(tmp_path / "dedup.sqlite3"))
    else:
        from otel_perfmon.dedup.redis import RedisDedupStore

        url = request.getfixturevalue("redis_url")
        _flush(url)
        instance = RedisDedupStore(url)
    yield instance
    instance.close()


def delta(fp="f1", count=3, slow=1, max_ms=1500.0, buckets=(("5", 2), ("1600", 1)), route="/a"):
    return RouteStatsDelta(fp, "shop", "GET", route, count, slow, max_ms, buckets)


def test_store_round_trip_adds_counts_and_keeps_the_max(store):
    assert store.route_stats() == []
    store.add_route_stats([delta(), delta("f2", 1, 0, 3.0, (("3.2", 1),), "/b")], 1000.0)
    store.add_route_stats([delta(count=2, slow=0, max_ms=0.0, buckets=(("5", 1), ("+Inf", 1)))], 1010.0)
    entries = {e.fingerprint: e for e in store.route_stats()}
    a, b = entries["f1"], entries["f2"]
    assert (a.service_name, a.method, a.route, a.count, a.slow, a.max_ms) == ("shop", "GET", "/a", 5, 1, 1500.0)
    assert a.buckets == ((5.0, 3), (1600.0, 1), (math.inf, 1))
    assert (a.first_seen, a.last_seen) == (1000.0, 1010.0)
    assert (b.count, b.max_ms, b.buckets, b.route) == (1, 3.0, ((3.2, 1),), "/b")


def test_redis_keeps_route_stats_apart_from_dedup_entries(redis_url):  # noqa: F811
    from otel_perfmon.dedup.redis import RedisDedupStore

    _flush(redis_url)
    store = RedisDedupStore(redis_url)
    store.add_route_stats([delta()], 1.0)
    assert store.entries() == [] and len(store.route_stats()) == 1
    store.close()


_ADDER = """
import sys
from otel_perfmon.dedup import RouteStatsDelta
from otel_perfmon.dedup.sqlite import SqliteDedupStore
store = SqliteDedupStore(sys.argv[1])
for i in range(int(sys.argv[2])):
    store.add_route_stats([RouteStatsDelta("f1", "shop", "GET", "/a", 2, 1, float(i), (("5", 1), ("1600", 1))),
                           RouteStatsDelta("f2", "shop", "GET", "/b", 1, 0, 1.0, (("1", 1),))], 100.0 + i)
store.close()
"""


def test_sqlite_flushes_of_two_processes_add_up(tmp_path):
    path = str(tmp_path / "reports" / "perfmon-dedup.sqlite3")
    flushes = 60
    procs = [subprocess.Popen([sys.executable, "-c", _ADDER, path, str(flushes)]) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    entries = {e.fingerprint: e for e in SqliteDedupStore(path).route_stats()}
    a = entries["f1"]
    assert (a.count, a.slow, a.max_ms, a.buckets) == (4 * flushes, 2 * flushes, flushes - 1.0,
                                                      ((5.0, 2 * flushes), (1600.0, 2 * flushes)))
    assert entries["f2"].count == 2 * flushes


def test_sqlite_file_of_an_older_version_gets_the_tables(tmp_path):
    path = str(tmp_path / "old.sqlite3")
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE fingerprints (fingerprint TEXT PRIMARY KEY, report_id TEXT NOT NULL, "
                 "created_at REAL NOT NULL, last_seen REAL NOT NULL, count INTEGER NOT NULL DEFAULT 0, "
                 "worst_duration_ms REAL NOT NULL DEFAULT 0, last_trace_id TEXT)")
    conn.execute("INSERT INTO fingerprints VALUES ('f0', 'r0', 1, 1, 2, 3, NULL)")
    conn.commit()
    conn.close()
    store = SqliteDedupStore(path)
    store.add_route_stats([delta()], 5.0)
    assert store.route_stats()[0].count == 3 and store.get("f0").count == 2
    store.close()


# ---------------------------------------------------------------------------------- processor
def test_processor_counts_every_tracked_span_and_force_flush_writes_them(tmp_path):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import SpanKind

    from otel_perfmon import configure_perfmon

    provider = TracerProvider()
    perfmon = configure_perfmon(tracer_provider=provider, report_dir=str(tmp_path / "reports"),
                                dedup_store="memory", threshold_seconds=1.0)
    tracer = provider.get_tracer("t")
    t0 = 1_700_000_000 * 10**9
    for i, ms in enumerate([10] * 20 + [1500] * 2):
        span = tracer.start_span("GET /items/<id>", kind=SpanKind.SERVER, start_time=t0 + i * 10**9,
                                 attributes={"http.request.method": "GET", "http.route": "/items/<id>",
                                             "url.path": f"/items/{i}"})
        span.end(end_time=t0 + i * 10**9 + ms * 10**6)
    tracer.start_span("internal child").end()  # not tracked: not counted
    assert perfmon.force_flush(10)
    (entry,) = perfmon.processor.store.route_stats()
    assert (entry.count, entry.slow, entry.route, entry.method) == (22, 2, "/items/<id>", "GET")
    assert entry.max_ms == pytest.approx(1500) and entry.p50_ms <= 10 and entry.p99_ms > 1000
    perfmon.shutdown()


# ---------------------------------------------------------------------------------- end to end
def serve_argv(report_dir, port, *extra):
    return [os.path.join(BIN, "otel-perfmon"), "serve", "--report-dir", report_dir, "--port", str(port), *extra]


def test_gunicorn_workers_add_up_in_the_viewers_api_routes(workdir):
    fast, slow, slow_seconds = 30, 4, 0.4
    env = {"OTEL_PERFMON_THRESHOLD_SECONDS": "0.25", "EXAMPLE_SLOW_SECONDS": str(slow_seconds),
           "OTEL_PERFMON_REPORT_DIR": workdir["reports"], "OTEL_SERVICE_NAME": "shop-flask"}
    port, viewer_port = free_port(), free_port()
    with run_server(gunicorn_argv("flask_app:app", port), env, port, workdir["log"]) as app:
        for i in range(fast):
            assert http_get(app.url("/fast"))[0] == 200
            assert http_get(app.url(f"/items/{2 * i}"))[0] == 200  # even ids are fast
        for i in range(slow):
            assert http_get(app.url(f"/items/{2 * i + 1}"))[0] == 200  # odd ids are slow
        with run_server(serve_argv(workdir["reports"], viewer_port), {}, viewer_port,
                        workdir["root"] + "/viewer.log", health_path="/healthz") as viewer:

            def routes():
                status, body = http_get(viewer.url("/api/routes?" + urlencode({"sort": "p95"})))
                assert status == 200
                rows = {r["route"]: r for r in json.loads(body)["routes"] if r["service_name"] == "shop-flask"}
                items, quick = rows.get("/items/<int:item_id>"), rows.get("/fast")
                done = (items and quick and items["requests"] == fast + slow and quick["requests"] == fast
                        and items["reports"] >= 1)
                return (items, quick, list(rows)) if done else None

            # each worker flushes every 5 s (the watchdog): poll with a deadline
            items, quick, order = wait_until(routes, 60, 0.5, "both workers' counts in /api/routes")
            assert items["slow_requests"] == slow and quick["slow_requests"] == 0
            assert items["max_ms"] >= slow_seconds * 1000 and items["p99_ms"] >= slow_seconds * 1000 * 0.8
            assert items["p99_ms"] <= items["max_ms"] and quick["max_ms"] < 250
            assert items["p50_ms"] < 250 and quick["p95_ms"] <= quick["max_ms"]
            assert order.index("/items/<int:item_id>") < order.index("/fast")  # slowest first
            by_count = json.loads(http_get(viewer.url("/api/routes?sort=count"))[1])["routes"]
            assert by_count[0]["requests"] >= by_count[-1]["requests"]
            page = http_get(viewer.url("/routes?sort=slow"))[1].decode()
            assert "/items/&lt;int:item_id&gt;" in page and f'<td class="num">{fast + slow}</td>' in page
            assert http_get(viewer.url("/api/routes?sort=bogus"))[0] == 400
