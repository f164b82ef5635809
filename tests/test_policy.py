"""The profiling policy, the after-threshold sampler and in-flight reports (no timing assertions)."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from types import SimpleNamespace

import pytest
from flask import Flask, request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_perfmon import ConfigurationError, configure_perfmon
from otel_perfmon.policy import AdaptiveProfilePolicy, AlwaysProfilePolicy, estimated_profiling_cost, span_id_bound
from otel_perfmon.testing import FakeClock, InMemoryReportExporter, wait_until

THRESHOLD = 0.15


def span(name: str) -> SimpleNamespace:
    """What a policy reads of the span it is asked about (a random 64-bit span id, as the SDK's)."""
    return SimpleNamespace(name=name, attributes={}, context=SimpleNamespace(span_id=random.getrandbits(64)))


def busy_python(seconds: float) -> int:
    """Python-level work (visible to a frame sampler) for ``seconds``."""
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        count += sum(range(200))
    return count


def stuck_in_a_loop(seconds: float) -> int:
    return busy_python(seconds)


def make_app():
    app = Flask("policy")

    @app.get("/work")
    def work():
        busy_python(float(request.args.get("s", "0")))
        return "ok"

    @app.get("/other")
    def other():
        busy_python(float(request.args.get("s", "0")))
        return "ok"

    @app.get("/stuck")
    def stuck():
        stuck_in_a_loop(float(request.args.get("s", "0")))
        return "ok"

    return app


@pytest.fixture
def pipeline(tmp_path):
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    app = make_app()
    exporter = InMemoryReportExporter()
    handles = []

    def start(**overrides):
        settings = dict(tracer_provider=provider, threshold_seconds=THRESHOLD, report_dir=str(tmp_path / "reports"),
                        dedup_store="memory", exporters=[exporter], profile_explore_rate=0.0)
        settings.update(overrides)
        handle = configure_perfmon(app=app, **settings)
        handles.append(handle)
        return handle

    yield {"start": start, "client": app.test_client(), "spans": spans, "exporter": exporter,
           "reports": str(tmp_path / "reports")}
    for handle in handles:
        handle.shutdown(timeout_seconds=2)


def read_report(report_dir, report_id):
    with open(os.path.join(report_dir, f"{report_id}.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_adaptive_policy_decisions():
    clock = FakeClock()
    policy = AdaptiveProfilePolicy(threshold_seconds=1.0, budget=0.01, explore_rate=0.0, candidate_ratio=0.5,
                                   clock=clock)
    clock.advance(0.1)  # 1 ms of budget accrued
    assert policy.should_profile(span("GET /a")) is False            # unknown route, no exploration
    policy.on_span_end("GET /a", 0.2, profiled=False, slow=False)
    assert policy.should_profile(span("GET /a")) is False            # far below the threshold
    policy.on_span_end("GET /a", 0.6, profiled=False, slow=False)
    assert policy.should_profile(span("GET /a")) is False            # one outlier is not enough
    policy.on_span_end("GET /a", 0.1, profiled=False, slow=False)
    policy.on_span_end("GET /a", 0.7, profiled=False, slow=False)
    assert policy.is_candidate("GET /a") and policy.should_profile(span("GET /a")) is True
    assert policy.should_profile(span("GET /b")) is False            # other routes are unaffected
    policy.on_report("GET /a", window_seconds=60.0)
    assert policy.should_profile(span("GET /a")) is False            # its report exists: dedup window
    policy.on_report("GET /c", window_seconds=0.0)             # dedup disabled: no suppression
    policy.on_span_end("GET /c", 0.9, profiled=False, slow=False)
    policy.on_span_end("GET /c", 0.9, profiled=False, slow=False)
    assert policy.should_profile(span("GET /c")) is True
    # the budget: 1 % of wall time here, at most a minute's worth (0.6 s) in the bucket.
    policy.on_span_end("GET /c", 5.0, profiled=True, slow=True)
    assert policy.should_profile(span("GET /c")) is False            # spent: ~3.75 s of estimated cost
    explorer = AdaptiveProfilePolicy(threshold_seconds=1.0, explore_rate=1.0)
    assert explorer.should_profile(span("GET /new")) is True
    assert AlwaysProfilePolicy().should_profile(span("GET /x")) is True


def test_expired_candidates_are_forgotten():
    """A route stops being a candidate after candidate_memory_seconds; once none is left, the
    policy's per-span check is back to one random draw (no name read, no clock)."""
    clock = FakeClock()
    policy = AdaptiveProfilePolicy(threshold_seconds=1.0, budget=1.0, explore_rate=0.0,
                                   candidate_memory_seconds=0.5, clock=clock)
    clock.advance(0.01)  # some budget
    policy.on_span_end("GET /d", 0.9, profiled=False, slow=False)
    policy.on_span_end("GET /d", 0.9, profiled=False, slow=False)
    assert policy.is_candidate("GET /d") and policy.should_profile(span("GET /d")) is True
    clock.advance(0.49)
    assert policy.is_candidate("GET /d")
    clock.advance(0.02)
    assert not policy.is_candidate("GET /d")
    assert policy.should_profile(span("GET /d")) is False
    assert not policy._candidate_until, "the expired candidate was kept"

    assert not policy.wants_all_spans  # the processor is back to consulting explore_rate of spans

    class NoName:  # a span whose name must not be read on the common path
        context = SimpleNamespace(span_id=2 ** 63)

        @property
        def name(self):
            raise AssertionError("span.name read with no candidate route")

    assert policy.should_profile(NoName()) is False
    assert estimated_profiling_cost(1.0) > estimated_profiling_cost(0.001) > 0


def test_without_early_sampling_the_call_tree_starts_at_the_threshold(pipeline):
    """sampler_early_interval_seconds=0: the sampler looks at a span only once it is slow
    (the behaviour before whole-span sampling), and the report says so."""
    perfmon = pipeline["start"](sampler_early_interval_seconds=0)
    assert pipeline["client"].get(f"/other?s={THRESHOLD * 3}").status_code == 200
    assert perfmon.force_flush(10)
    (first,) = pipeline["exporter"].reports
    report = read_report(pipeline["reports"], first.report_id)
    assert report["profile"]["mode"] == "after_threshold"
    assert "busy_python" in report["profile"]["call_tree_text"]
    assert 0 < report["profile"]["coverage"] < 0.85, report["profile"]


def test_bad_policy_settings_raise(pipeline):
    for field, value in (("profile_budget", 2.0), ("profile_explore_rate", -0.1), ("inflight_multiple", 0.5),
                         ("sampler_interval_seconds", 0), ("profile_policy", "sometimes"),
                         ("sampler_budget", 1.5), ("sampler_early_interval_seconds", -0.01)):
        with pytest.raises(ConfigurationError, match=field):
            pipeline["start"](**{field: value})


def test_default_policy_profiles_candidates_and_samples_the_rest(pipeline):
    perfmon = pipeline["start"]()
    assert perfmon.config.profile_policy == "adaptive"
    client = pipeline["client"]
    for _ in range(5):
        assert client.get("/work").status_code == 200
    assert perfmon.stats()["spans_profiled"] == 0                # fast, never near the threshold

    # a first slow request on a route never seen near the threshold: no profiler was running,
    # the stack sampler gives the call tree of the whole span, from its start.
    assert client.get(f"/other?s={THRESHOLD * 6}").status_code == 200
    assert perfmon.force_flush(10)
    (first,) = pipeline["exporter"].reports
    report = read_report(pipeline["reports"], first.report_id)
    assert report["profile"]["mode"] == "sampled"
    assert "busy_python" in report["profile"]["call_tree_text"]
    assert report["profile"]["coverage"] >= 0.9, report["profile"]
    assert perfmon.stats()["spans_profiled"] == 0

    # two requests near (not over) the threshold make /work a candidate: the next one is profiled.
    assert client.get(f"/work?s={THRESHOLD * 0.7}").status_code == 200
    assert client.get(f"/work?s={THRESHOLD * 0.7}").status_code == 200
    profiled_before = perfmon.stats()["spans_profiled"]
    assert client.get(f"/work?s={THRESHOLD * 2.5}").status_code == 200
    assert perfmon.stats()["spans_profiled"] == profiled_before + 1
    assert perfmon.force_flush(10)
    second = [r for r in pipeline["exporter"].reports if r.route == "/work"]
    assert len(second) == 1
    full = read_report(pipeline["reports"], second[0].report_id)
    assert full["profile"]["mode"] == "full" and full["profile"]["coverage"] > 0.9
    assert "busy_python" in full["profile"]["call_tree_text"]

    # the route now has a report within the dedup window: it is not profiled any more.
    profiled = perfmon.stats()["spans_profiled"]
    for _ in range(3):
        assert client.get(f"/work?s={THRESHOLD * 2}").status_code == 200
    assert perfmon.stats()["spans_profiled"] == profiled
    assert perfmon.force_flush(10)
    stats = perfmon.stats()
    assert stats["reports_created"] == 2 and stats["reports_deduplicated"] == 3
    assert 0 < stats["profiled_fraction"] < 0.5
    assert stats["profiling_seconds_estimate"] >= estimated_profiling_cost(THRESHOLD * 2.5)
    slow_spans = [s for s in pipeline["spans"].get_finished_spans() if s.attributes.get("perfmon.slow")]
    assert len(slow_spans) == 5
    assert {s.attributes["perfmon.report.id"] for s in slow_spans} == {first.report_id, second[0].report_id}


def test_always_policy_profiles_every_span(pipeline):
    perfmon = pipeline["start"](profile_policy="always")
    for _ in range(4):
        assert pipeline["client"].get("/work").status_code == 200
    stats = perfmon.stats()
    assert stats["spans_profiled"] == stats["spans_started"] == 4
    assert stats["profiled_fraction"] == 1.0


def test_in_flight_report_before_the_request_ends(pipeline):
    perfmon = pipeline["start"](inflight_multiple=3.0)
    done = threading.Event()

    def call():
        pipeline["client"].get(f"/stuck?s={THRESHOLD * 8}")
        done.set()

    caller = threading.Thread(target=call)
    caller.start()
    try:
        early = wait_until(lambda: pipeline["exporter"].reports, 10, message="the in-flight report")
        assert not done.is_set(), "the in-flight report must come while the request still runs"
        (report,) = early
        assert report.profile_mode == "in_flight"
        data = read_report(pipeline["reports"], report.report_id)
        assert data["profile"]["mode"] == "in_flight" and "stuck_in_a_loop" in data["profile"]["call_tree_text"]
        assert data["duration_ms"] >= THRESHOLD * 3 * 1000 * 0.9
    finally:
        caller.join(30)
    assert perfmon.force_flush(10)
    final = read_report(pipeline["reports"], report.report_id)
    assert final["profile"]["mode"] == "sampled"                # the same file, now complete
    assert final["duration_ms"] >= THRESHOLD * 8 * 1000 * 0.95
    assert "stuck_in_a_loop" in final["profile"]["call_tree_text"]
    assert len(pipeline["exporter"].reports) == 1                 # notified once
    assert perfmon.stats()["reports_created"] == 1
    (span,) = [s for s in pipeline["spans"].get_finished_spans() if s.name == "GET /stuck"]
    assert span.attributes["perfmon.report.id"] == report.report_id


def test_unrouted_requests_share_one_fingerprint(pipeline):
    """A scanner hitting many slow unknown paths makes one report, not one per path."""
    app = Flask("unrouted")

    @app.errorhandler(404)
    def slow_not_found(_error):
        busy_python(THRESHOLD * 2)
        return "nope", 404

    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    exporter = InMemoryReportExporter()
    perfmon = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                                report_dir=pipeline["reports"], dedup_store="memory", exporters=[exporter])
    try:
        client = app.test_client()
        for path in ("/wp-admin", "/.env", "/phpmyadmin/index.php", "/<script>x</script>", "/.env"):
            assert client.get(path).status_code == 404
        assert perfmon.force_flush(10)
        assert len(exporter.reports) == 1
        assert perfmon.stats()["reports_deduplicated"] == 4
        (report,) = exporter.reports
        data = read_report(pipeline["reports"], report.report_id)
        assert data["http"]["route"] == "[unrouted]"  # not the first scanner path
        assert data["unrouted_paths"] == ["/wp-admin", "/.env", "/phpmyadmin/index.php", "/<script>x</script>"]
        html = open(os.path.join(pipeline["reports"], report.report_id + ".html"), encoding="utf-8").read()
        assert "<script>x</script>" not in html and "/wp-admin" in html
    finally:
        perfmon.shutdown(timeout_seconds=2)


def test_a_custom_policy_object_decides_from_the_span(pipeline):
    """The policy object of docs/contract.md: should_profile gets the SDK span at start (name and the
    instrumentor's attributes), on_span_end is called only as span_end_min_seconds says."""
    seen, ended = [], []

    class WorkOnly:
        description = "work route only"
        span_end_min_seconds = float("inf")  # on_span_end for profiled spans only

        def should_profile(self, span):
            seen.append((span.name, dict(span.attributes or {})))
            return span.name.endswith("/work")

        def on_span_end(self, name, duration_seconds, profiled, slow):
            ended.append((name, profiled))

    perfmon = pipeline["start"](profile_policy=WorkOnly())
    client = pipeline["client"]
    assert client.get("/other").status_code == 200
    assert client.get("/work").status_code == 200
    assert [name for name, _ in seen] == ["GET /other", "GET /work"]
    assert seen[1][1].get("http.method", seen[1][1].get("http.request.method")) == "GET"
    stats = perfmon.stats()
    assert stats["spans_started"] == 2 and stats["spans_profiled"] == 1
    assert ended == [("GET /work", True)]


def test_explore_rate_is_drawn_from_the_span_id():
    rng = random.Random(7)
    ids = [rng.getrandbits(64) for _ in range(20000)]
    assert 0.22 < sum(i < span_id_bound(0.25) for i in ids) / len(ids) < 0.28
    assert span_id_bound(0.0) == 0 and all(i < span_id_bound(1.0) for i in ids)
    clock = FakeClock()
    policy = AdaptiveProfilePolicy(threshold_seconds=1.0, budget=1.0, explore_rate=0.25, clock=clock)
    clock.advance(0.01)  # some budget
    explored = SimpleNamespace(name="GET /e", attributes={}, context=SimpleNamespace(span_id=span_id_bound(0.25) - 1))
    skipped = SimpleNamespace(name="GET /e", attributes={}, context=SimpleNamespace(span_id=span_id_bound(0.25)))
    assert policy.should_profile(explored) is True and policy.should_profile(skipped) is False


def test_the_processor_consults_the_adaptive_policy_only_when_it_asks(pipeline):
    """No candidate route and no exploring: should_profile is never called on the request
    path; once a route is a candidate (wants_all_spans), every span goes to it."""
    calls = []

    class Counting(AdaptiveProfilePolicy):
        def should_profile(self, span):
            calls.append(span.name)
            return super().should_profile(span)

    policy = Counting(threshold_seconds=THRESHOLD, explore_rate=0.0)
    perfmon = pipeline["start"](profile_policy=policy)
    client = pipeline["client"]
    for _ in range(5):
        assert client.get("/other").status_code == 200
    assert calls == [] and perfmon.stats()["spans_started"] == 5
    for _ in range(2):  # two spans near the threshold make /work a candidate
        assert client.get(f"/work?s={THRESHOLD * 0.7}").status_code == 200
    assert policy.wants_all_spans and calls == []
    assert client.get("/other").status_code == 200
    assert client.get("/work").status_code == 200
    assert calls == ["GET /other", "GET /work"]
    assert perfmon.stats()["spans_profiled"] == 1  # the candidate route only
