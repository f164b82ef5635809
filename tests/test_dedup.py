"""Dedup stores (memory, SQLite, Redis) and fingerprints.

The SQLite and Redis stores are checked for exactness across processes: N processes released
together by a barrier claim one fingerprint and exactly one of them owns the report. Redis
runs as a real ``redis-server`` on a free loopback port, started by this module.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from types import SimpleNamespace

import pytest

from conftest import redis_server
from otel_perfmon.dedup import Claim, fingerprint, open_store
from otel_perfmon.dedup.memory import MemoryDedupStore
from otel_perfmon.dedup.sqlite import FILE_NAME, SqliteDedupStore

FP = "0123456789abcdef"
WINDOW = 100.0
PROCESSES = 8



# ---------------------------------------------------------------------------------- redis server
@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    with redis_server(str(tmp_path_factory.mktemp("redis"))) as url:
        yield url


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store(request, tmp_path):
    if request.param == "memory":
        instance = MemoryDedupStore()
    elif request.param == "sqlite":
        instance = SqliteDedupStore(str(tmp_path / "dedup.sqlite3"))
    else:
        from otel_perfmon.dedup.redis import RedisDedupStore

        url = request.getfixturevalue("redis_url")
        _flush(url)
        instance = RedisDedupStore(url)
    yield instance
    instance.close()


# ---------------------------------------------------------------------------------- semantics
def test_first_claim_is_new_and_later_claims_get_its_id(store):
    now = 1_000_000.0
    assert store.get(FP) is None
    first = store.claim(FP, "report-aaaa-1", now, WINDOW)
    assert first == Claim("report-aaaa-1", True)
    second = store.claim(FP, "report-bbbb-2", now + 1, WINDOW)
    assert second == Claim("report-aaaa-1", False)
    entry = store.get(FP)
    assert entry.fingerprint == FP
    assert entry.report_id == "report-aaaa-1"
    assert entry.created_at == pytest.approx(now)
    assert entry.count == 0
    assert entry.worst_duration_ms == 0
    assert entry.last_trace_id is None


def test_record_occurrence_tracks_count_last_seen_worst_and_trace(store):
    now = 2_000_000.0
    store.claim(FP, "report-aaaa-1", now, WINDOW)
    store.record_occurrence(FP, "report-aaaa-1", 250.5, "a" * 32, now + 1)
    store.record_occurrence(FP, "report-aaaa-1", 900.25, "b" * 32, now + 2)
    store.record_occurrence(FP, "report-aaaa-1", 120.0, "c" * 32, now + 3)
    entry = store.get(FP)
    assert entry.count == 3
    assert entry.worst_duration_ms == pytest.approx(900.25)
    assert entry.last_seen == pytest.approx(now + 3)
    assert entry.last_trace_id == "c" * 32
    assert entry.created_at == pytest.approx(now)


def test_last_seen_never_goes_backwards(store):
    now = 2_500_000.0
    store.claim(FP, "report-aaaa-1", now, WINDOW)
    store.record_occurrence(FP, "report-aaaa-1", 10.0, "a" * 32, now + 5)
    store.record_occurrence(FP, "report-aaaa-1", 10.0, "b" * 32, now + 2)  # a late, older occurrence
    entry = store.get(FP)
    assert entry.count == 2
    assert entry.last_seen == pytest.approx(now + 5)


def test_record_occurrence_for_another_report_or_fingerprint_is_ignored(store):
    now = 3_000_000.0
    store.claim(FP, "report-aaaa-1", now, WINDOW)
    store.record_occurrence(FP, "report-stale-0", 999.0, "d" * 32, now + 1)
    store.record_occurrence("ffffffffffffffff", "report-aaaa-1", 999.0, "d" * 32, now + 1)
    entry = store.get(FP)
    assert entry.count == 0 and entry.worst_duration_ms == 0
    assert store.get("ffffffffffffffff") is None


def test_release_forgets_only_the_matching_claim(store):
    now = 4_000_000.0
    store.claim(FP, "report-aaaa-1", now, WINDOW)
    store.release(FP, "report-other-9")
    assert store.get(FP).report_id == "report-aaaa-1"
    store.release(FP, "report-aaaa-1")
    assert store.get(FP) is None
    assert store.claim(FP, "report-bbbb-2", now + 1, WINDOW) == Claim("report-bbbb-2", True)
    store.release("eeeeeeeeeeeeeeee", "nothing-here")  # unknown fingerprint: no error


def test_entries_lists_every_fingerprint(store):
    now = 5_000_000.0
    ids = {f"{i:016x}": f"report-{i:04d}-x" for i in range(5)}
    for fp, report_id in ids.items():
        store.claim(fp, report_id, now, WINDOW)
    store.record_occurrence("0000000000000002", "report-0002-x", 42.0, "e" * 32, now)
    entries = {e.fingerprint: e for e in store.entries()}
    assert {fp: e.report_id for fp, e in entries.items()} == ids
    assert entries["0000000000000002"].count == 1
    assert entries["0000000000000001"].count == 0


def test_window_expiry(store):
    now = 6_000_000.0
    assert store.claim(FP, "report-old1-1", now, 10).is_new
    assert store.claim(FP, "report-xxxx-2", now + 9.9, 10) == Claim("report-old1-1", False)
    store.record_occurrence(FP, "report-old1-1", 500.0, "f" * 32, now + 9.9)
    fresh = store.claim(FP, "report-new1-3", now + 10.0, 10)
    assert fresh == Claim("report-new1-3", True)
    entry = store.get(FP)
    assert entry.report_id == "report-new1-3"
    assert entry.created_at == pytest.approx(now + 10.0)
    assert entry.count == 0 and entry.worst_duration_ms == 0  # a new window starts from zero
    assert store.claim(FP, "report-yyyy-4", now + 15, 10) == Claim("report-new1-3", False)
    # a late occurrence of the old report does not count against the new one
    store.record_occurrence(FP, "report-old1-1", 700.0, "f" * 32, now + 16)
    assert store.get(FP).count == 0


def test_window_zero_disables_dedup(store):
    now = 7_000_000.0
    claims = [store.claim(FP, f"report-zero-{i}", now + i * 0.001, 0) for i in range(4)]
    assert claims == [Claim(f"report-zero-{i}", True) for i in range(4)]
    assert store.get(FP).report_id == "report-zero-3"


def test_window_is_per_fingerprint(store):
    now = 8_000_000.0
    assert store.claim("aaaaaaaaaaaaaaaa", "report-aaaa-1", now, WINDOW).is_new
    assert store.claim("bbbbbbbbbbbbbbbb", "report-bbbb-1", now, WINDOW).is_new
    assert not store.claim("aaaaaaaaaaaaaaaa", "report-aaaa-2", now, WINDOW).is_new


def test_threads_sharing_one_store_claim_exactly_once(store):
    now = 9_000_000.0
    barrier = threading.Barrier(16)
    results = []
    lock = threading.Lock()

    def claim(i):
        barrier.wait(5)
        result = store.claim(FP, f"report-thr{i:02d}-x", now, WINDOW)
        store.record_occurrence(FP, result.report_id, float(i), f"{i:032x}", now + 1)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    assert len(results) == 16
    assert sum(r.is_new for r in results) == 1
    assert len({r.report_id for r in results}) == 1
    entry = store.get(FP)
    assert entry.count == 16
    assert entry.worst_duration_ms == pytest.approx(15.0)


# ---------------------------------------------------------------------------------- SQLite across processes
def _open(kind: str, location: str):
    if kind == "sqlite":
        return SqliteDedupStore(location)
    from otel_perfmon.dedup.redis import RedisDedupStore

    return RedisDedupStore(location)


def _claim_in_child(kind, location, barrier, results, index, occurrences, now):
    store = _open(kind, location)
    try:
        store.get(FP)  # open the connection before the race
        barrier.wait(30)
        claim = store.claim(FP, f"report-p{index:03d}-x", now, WINDOW)
        for n in range(occurrences):
            store.record_occurrence(FP, claim.report_id, float(index * 1000 + n), f"{index:032x}", now + n)
        results.put((index, claim.report_id, claim.is_new, os.getpid()))
    except BaseException as exc:  # report instead of hanging the parent
        results.put((index, None, repr(exc), os.getpid()))
    finally:
        store.close()


def _race(kind: str, location: str, occurrences: int = 0, now: float = 10_000_000.0):
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    processes = [ctx.Process(target=_claim_in_child, args=(kind, location, barrier, results, i, occurrences, now))
                 for i in range(PROCESSES)]
    for process in processes:
        process.start()
    try:
        collected = [results.get(timeout=60) for _ in processes]
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    errors = [r for r in collected if r[1] is None]
    assert not errors, errors
    assert len({r[3] for r in collected}) == PROCESSES  # really N processes
    return collected


def test_sqlite_exactly_one_new_claim_across_processes(tmp_path):
    path = str(tmp_path / FILE_NAME)
    collected = _race("sqlite", path)
    assert sum(1 for r in collected if r[2] is True) == 1
    report_ids = {r[1] for r in collected}
    assert len(report_ids) == 1
    (winner,) = [r for r in collected if r[2] is True]
    assert report_ids == {f"report-p{winner[0]:03d}-x"}
    store = SqliteDedupStore(path)
    assert store.get(FP).report_id == report_ids.pop()
    store.close()


def test_sqlite_occurrences_are_counted_exactly_across_processes(tmp_path):
    path = str(tmp_path / FILE_NAME)
    collected = _race("sqlite", path, occurrences=25)
    assert len({r[1] for r in collected}) == 1
    store = SqliteDedupStore(path)
    entry = store.get(FP)
    store.close()
    assert entry.count == PROCESSES * 25
    assert entry.worst_duration_ms == pytest.approx((PROCESSES - 1) * 1000 + 24)


def test_sqlite_survives_a_restart(tmp_path):
    path = str(tmp_path / "sub" / FILE_NAME)  # the parent directory is created on demand
    now = 11_000_000.0
    first = SqliteDedupStore(path)
    assert first.claim(FP, "report-before-1", now, WINDOW).is_new
    first.record_occurrence(FP, "report-before-1", 321.0, "a" * 32, now)
    first.close()
    assert os.path.exists(path)

    reopened = SqliteDedupStore(path)
    try:
        assert reopened.claim(FP, "report-after-2", now + 50, WINDOW) == Claim("report-before-1", False)
        reopened.record_occurrence(FP, "report-before-1", 100.0, "b" * 32, now + 50)
        entry = reopened.get(FP)
        assert (entry.count, entry.worst_duration_ms, entry.last_trace_id) == (2, 321.0, "b" * 32)
        assert [e.fingerprint for e in reopened.entries()] == [FP]
    finally:
        reopened.close()


def test_sqlite_store_in_report_dir_through_open_store(tmp_path):
    report_dir = tmp_path / "reports"
    store = open_store("sqlite", str(report_dir))
    assert isinstance(store, SqliteDedupStore)
    assert store.path == str(report_dir / FILE_NAME)
    store.claim(FP, "report-aaaa-1", 1.0, WINDOW)
    store.close()
    assert (report_dir / FILE_NAME).exists()
    assert oct(os.stat(report_dir).st_mode & 0o777) == oct(0o700)
    assert isinstance(open_store("memory", str(report_dir)), MemoryDedupStore)


def test_sqlite_store_reopens_after_fork(tmp_path):
    if not hasattr(os, "fork"):
        pytest.skip("no fork on this platform")
    path = str(tmp_path / FILE_NAME)
    store = SqliteDedupStore(path)
    store.claim(FP, "report-parent-1", 1.0, WINDOW)  # the parent's connection is open
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()

    def child():
        try:
            claim = store.claim(FP, "report-child-2", 2.0, WINDOW)  # inherited object, new connection
            store.record_occurrence(FP, claim.report_id, 5.0, "c" * 32, 2.0)
            results.put(claim.report_id)
        except BaseException as exc:
            results.put(repr(exc))

    process = ctx.Process(target=child)
    process.start()
    assert results.get(timeout=30) == "report-parent-1"
    process.join(10)
    assert store.get(FP).count == 1
    store.close()


# ---------------------------------------------------------------------------------- Redis across processes
def test_redis_exactly_one_new_claim_across_processes(redis_url):
    _flush(redis_url)
    collected = _race("redis", redis_url, occurrences=10)
    assert sum(1 for r in collected if r[2] is True) == 1
    assert len({r[1] for r in collected}) == 1
    store = _open("redis", redis_url)
    entry = store.get(FP)
    store.close()
    assert entry.report_id == collected[0][1]
    assert entry.count == PROCESSES * 10


def test_redis_store_through_open_store(redis_url):
    from otel_perfmon.dedup.redis import KEY_PREFIX, RedisDedupStore

    _flush(redis_url)
    store = open_store(redis_url, "/nonexistent/report/dir")
    assert isinstance(store, RedisDedupStore)
    store.claim(FP, "report-aaaa-1", 1.0, WINDOW)
    import redis

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    assert client.hget(KEY_PREFIX + FP, "report_id") == "report-aaaa-1"
    client.close()
    store.close()
    again = open_store(redis_url, "/nonexistent/report/dir")  # a restarted process sees the claim
    assert again.claim(FP, "report-bbbb-2", 2.0, WINDOW) == Claim("report-aaaa-1", False)
    again.close()


# ---------------------------------------------------------------------------------- fingerprints
def _span(name, attributes, service="shop"):
    from opentelemetry.sdk.resources import Resource

    return SimpleNamespace(name=name, attributes=attributes, resource=Resource.create({"service.name": service}))


def test_fingerprint_shape_and_stability():
    value = fingerprint("shop", "GET", "/items/<int:id>")
    assert len(value) == 16 and int(value, 16) >= 0
    assert value == fingerprint("shop", "GET", "/items/<int:id>")
    assert value == fingerprint("shop", "get", "/items/<int:id>")
    assert value != fingerprint("shop", "POST", "/items/<int:id>")
    assert value != fingerprint("billing", "GET", "/items/<int:id>")
    assert value != fingerprint("shop", "GET", "/items/<int:item_id>")
    assert fingerprint("a b", "GET", "/c") != fingerprint("a", "GET", "b/c")


def test_span_fingerprint_uses_the_route_template_not_the_path():
    from otel_perfmon.processor import span_fingerprint

    route = "/items/<int:id>"
    spans = [_span(f"GET {route}", {"http.method": "GET", "http.target": f"/items/{i}?x={i}", "http.route": route})
             for i in (1, 7, 12345)]
    stable = _span(f"GET {route}", {"http.request.method": "GET", "url.path": "/items/99", "http.route": route})
    values = {span_fingerprint(s) for s in spans + [stable]}
    assert values == {fingerprint("shop", "GET", route)}
    other_method = _span(f"DELETE {route}", {"http.method": "DELETE", "http.target": "/items/1", "http.route": route})
    other_service = _span(f"GET {route}", {"http.method": "GET", "http.target": "/items/1", "http.route": route},
                          service="billing")
    other_route = _span("GET /users/<int:id>", {"http.method": "GET", "http.target": "/items/1",
                                                "http.route": "/users/<int:id>"})
    assert len({span_fingerprint(s) for s in (spans[0], other_method, other_service, other_route)}) == 4


def test_span_fingerprint_without_route_uses_the_span_name():
    from otel_perfmon.processor import span_fingerprint

    a = _span("GET /items/{item_id}", {"http.method": "GET", "http.target": "/items/1"})
    b = _span("GET /items/{item_id}", {"http.method": "GET", "http.target": "/items/2"})
    assert span_fingerprint(a) == span_fingerprint(b)
    function = _span("rebuild_index", {})
    assert span_fingerprint(function) == fingerprint("shop", "FUNCTION", "rebuild_index")


def test_parameterized_route_is_one_report_through_the_pipeline(tmp_path):
    from flask import Flask
    from opentelemetry.sdk.trace import TracerProvider

    from otel_perfmon import configure_perfmon

    app = Flask(__name__)

    @app.get("/items/<int:item_id>")
    def item(item_id):
        deadline = time.perf_counter() + 0.2
        while time.perf_counter() < deadline:
            pass
        return str(item_id)

    perfmon = configure_perfmon(app=app, tracer_provider=TracerProvider(), threshold_seconds=0.05,
                                report_dir=str(tmp_path), dedup_store="sqlite")
    try:
        client = app.test_client()
        for item_id in (1, 2, 3):
            assert client.get(f"/items/{item_id}").status_code == 200
        assert perfmon.force_flush(10)
        stats = perfmon.stats()
        assert (stats["slow_spans"], stats["reports_created"], stats["reports_deduplicated"]) == (3, 1, 2)
        assert len([n for n in os.listdir(tmp_path) if n.endswith(".json") and ".speedscope." not in n]) == 1
        (entry,) = perfmon.store.entries()
        assert entry.count == 3
        assert entry.fingerprint == fingerprint(_service_of(perfmon), "GET", "/items/<int:item_id>")
    finally:
        perfmon.shutdown(timeout_seconds=2)


def _service_of(perfmon) -> str:
    return perfmon.tracer_provider.resource.attributes["service.name"]


def test_kept_version_is_replaced_by_the_rule_atomically_and_follows_up_once(store):
    """replace_kept runs the pipeline's rule against what the report file holds (set_kept)."""
    from otel_perfmon.dedup import KeptVersion
    from otel_perfmon.pipeline import replacement

    claim = store.claim("fp-kept", "20261202-000000-kept0001", 1000.0, 600)
    assert store.get("fp-kept").kept is None
    store.set_kept("fp-kept", claim.report_id, KeptVersion(1200.0, "sampled", 0.95))
    assert store.get("fp-kept").kept == KeptVersion(1200.0, "sampled", 0.95)
    # not better: same mode, similar coverage, not 2x slower
    assert store.replace_kept("fp-kept", claim.report_id, KeptVersion(1500.0, "sampled", 0.97), replacement) \
        == (False, False)
    # a full profile where the kept one is sampled: replaced, no follow-up
    assert store.replace_kept("fp-kept", claim.report_id, KeptVersion(1300.0, "full", 0.99), replacement) \
        == (True, False)
    assert store.get("fp-kept").kept == KeptVersion(1300.0, "full", 0.99)
    # 2x slower: replaced, with the window's one follow-up
    assert store.replace_kept("fp-kept", claim.report_id, KeptVersion(2700.0, "sampled", 0.96), replacement) \
        == (True, True)
    assert store.get("fp-kept").followed_up is True
    # 2x slower again: replaced, but no second follow-up
    assert store.replace_kept("fp-kept", claim.report_id, KeptVersion(6000.0, "sampled", 0.96), replacement) \
        == (True, False)
    # a report of another id (a later window's) is never touched
    assert store.replace_kept("fp-kept", "20261202-000000-other001", KeptVersion(9e6, "full", 1.0), replacement) \
        == (False, False)
    entry = store.get("fp-kept")
    assert entry.kept == KeptVersion(6000.0, "sampled", 0.96) and entry.report_id == claim.report_id
    # a new window's claim starts afresh
    later = store.claim("fp-kept", "20261202-000000-kept0002", 1000.0 + 601, 600)
    assert later.is_new and store.get("fp-kept").kept is None and store.get("fp-kept").followed_up is False


def test_a_report_without_a_call_tree_never_holds_the_slot():
    from otel_perfmon.dedup import KeptVersion
    from otel_perfmon.pipeline import replacement

    assert replacement(KeptVersion(1010.0, "none", 0.0), KeptVersion(1005.0, "sampled", 0.3), False) == (True, False)
    assert replacement(None, KeptVersion(1005.0, "after_threshold", 0.2), False) == (True, False)
    assert replacement(KeptVersion(1010.0, "sampled", 0.9), KeptVersion(9000.0, "none", 0.0), False) == (False, False)


def test_sqlite_file_of_an_older_version_gains_the_kept_columns(tmp_path):
    import sqlite3

    from otel_perfmon.dedup import KeptVersion

    path = str(tmp_path / FILE_NAME)
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE fingerprints (fingerprint TEXT PRIMARY KEY, report_id TEXT NOT NULL, "
                "created_at REAL NOT NULL, last_seen REAL NOT NULL, count INTEGER NOT NULL DEFAULT 0, "
                "worst_duration_ms REAL NOT NULL DEFAULT 0, last_trace_id TEXT)")
    old.execute("INSERT INTO fingerprints VALUES ('fp', '20261201-000000-aaaa0000', 1.0, 2.0, 3, 900.0, 'ab')")
    old.commit()
    old.close()
    store = SqliteDedupStore(path)
    entry = store.get("fp")
    assert (entry.count, entry.worst_duration_ms, entry.kept) == (3, 900.0, None)
    store.set_kept("fp", entry.report_id, KeptVersion(900.0, "after_threshold", 0.1))
    assert store.get("fp").kept == KeptVersion(900.0, "after_threshold", 0.1)
    store.close()
