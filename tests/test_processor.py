"""PerfmonSpanProcessor and configure_perfmon in-process: idempotence, late provider, the
``@profile`` decorator, failure isolation (policy, exporters, hung exporter, full queue),
stats keys, and the master switch."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_perfmon import ConfigurationError, ExportResult, ReportExporter, configure_perfmon, profile
from otel_perfmon import attributes as attr
from otel_perfmon.testing import InMemoryReportExporter, wait_until

THRESHOLD = 0.1
SLOW = 0.3  # 3x the threshold
STAT_KEYS = ("spans_started", "spans_profiled", "slow_spans", "reports_created", "reports_deduplicated",
             "reports_dropped", "export_failures")


def busy(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def make_app():
    from flask import Flask

    app = Flask(__name__)

    @app.get("/slow")
    def slow():
        busy(SLOW)
        return "slow"

    @app.get("/fast")
    def fast():
        return "fast"

    return app


def make_provider():
    provider = TracerProvider(resource=Resource.create({"service.name": "processor-test"}))
    spans = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    return provider, spans


def report_files(report_dir) -> list:
    """A report's three files (<id>.json/.html/.md; its flame graph <id>.speedscope.json aside)."""
    if not os.path.isdir(report_dir):
        return []
    return sorted(n for n in os.listdir(report_dir)
                  if n.endswith((".json", ".html", ".md")) and "." not in n.rsplit(".", 1)[0])


@pytest.fixture
def handles():
    """Handles created by a test; shut down (bounded) afterwards, whatever happened."""
    created = []
    yield created
    for handle in created:
        handle.shutdown(timeout_seconds=2)


# ---------------------------------------------------------------------------------- idempotence
def test_configure_twice_returns_the_same_handle_and_reports_once(tmp_path, handles):
    app = make_app()
    provider, spans = make_provider()
    first = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                              report_dir=str(tmp_path), dedup_store="memory", dedup_window_seconds=0,
                              profile_policy="always")
    handles.append(first)
    second = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                               report_dir=str(tmp_path), dedup_store="memory", dedup_window_seconds=0,
                               profile_policy="always")
    assert second is first
    assert first.attached and first.tracer_provider is provider
    client = app.test_client()
    assert client.get("/slow").status_code == 200
    assert first.force_flush(10)
    stats = first.stats()
    assert (stats["spans_started"], stats["spans_profiled"], stats["slow_spans"], stats["reports_created"]) == \
        (1, 1, 1, 1)
    assert len([n for n in report_files(tmp_path) if n.endswith(".json")]) == 1
    server_spans = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(server_spans) == 1  # the app was not instrumented twice


def test_different_providers_get_different_handles(tmp_path, handles):
    a = configure_perfmon(tracer_provider=make_provider()[0], report_dir=str(tmp_path / "a"), dedup_store="memory")
    handles.append(a)
    b = configure_perfmon(tracer_provider=make_provider()[0], report_dir=str(tmp_path / "b"), dedup_store="memory")
    handles.append(b)
    assert a is not b


LATE_PROVIDER_SCRIPT = r"""
import json, os, sys, time
sys.path.insert(0, {src!r})
from flask import Flask
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otel_perfmon import configure_perfmon

app = Flask(__name__)

@app.get("/slow")
def slow():
    deadline = time.perf_counter() + {slow}
    while time.perf_counter() < deadline:
        pass
    return "slow"

report_dir = sys.argv[1]
perfmon = configure_perfmon(app=app, threshold_seconds={threshold}, report_dir=report_dir, dedup_store="memory")
attached_before = perfmon.attached

provider = TracerProvider()          # the app sets its provider only now
spans = InMemorySpanExporter()
provider.add_span_processor(SimpleSpanProcessor(spans))
trace.set_tracer_provider(provider)

again = configure_perfmon(app=app, threshold_seconds={threshold}, report_dir=report_dir, dedup_store="memory")
status = app.test_client().get("/slow").status_code
flushed = perfmon.force_flush(10)
(span,) = spans.get_finished_spans()
print(json.dumps({{
    "attached_before": attached_before, "attached_after": perfmon.attached,
    "same_provider": perfmon.tracer_provider is provider, "same_handle": again is perfmon,
    "status": status, "flushed": flushed, "stats": perfmon.stats(),
    "attributes": {{k: v for k, v in span.attributes.items() if k.startswith("perfmon.")}},
    "files": sorted(n for n in os.listdir(report_dir) if ".speedscope." not in n),
}}))
perfmon.shutdown(timeout_seconds=2)
"""


def test_configure_before_the_app_sets_its_tracer_provider(tmp_path):
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    script = tmp_path / "late_provider.py"
    script.write_text(LATE_PROVIDER_SCRIPT.format(src=src, slow=SLOW, threshold=THRESHOLD))
    report_dir = tmp_path / "reports"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run([sys.executable, str(script), str(report_dir)], capture_output=True, text=True,
                            timeout=60, cwd=str(tmp_path), env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["attached_before"] is False
    assert data["attached_after"] is True
    assert data["same_provider"] is True
    assert data["same_handle"] is True
    assert data["status"] == 200 and data["flushed"] is True
    assert data["stats"]["spans_started"] == 1
    assert data["stats"]["reports_created"] == 1
    report_id = data["attributes"][attr.PERFMON_REPORT_ID]
    assert data["attributes"][attr.PERFMON_SLOW] is True
    assert data["files"] == sorted(f"{report_id}.{s}" for s in ("html", "json", "md"))


# ---------------------------------------------------------------------------------- @profile
@pytest.fixture
def decorated_env(tmp_path, handles):
    provider, spans = make_provider()
    memory = InMemoryReportExporter()
    handle = configure_perfmon(tracer_provider=provider, threshold_seconds=THRESHOLD, report_dir=str(tmp_path),
                               dedup_store="memory", dedup_window_seconds=0, exporters=[memory],
                               profile_policy="always")
    handles.append(handle)
    return {"handle": handle, "spans": spans, "memory": memory, "report_dir": str(tmp_path)}


def test_profile_sync_function(decorated_env):
    @profile
    def compute_totals(n, *, factor=2):
        """Adds things up."""
        busy(SLOW) if n > 1 else None
        return n * factor

    assert compute_totals.__name__ == "compute_totals"
    assert compute_totals.__doc__ == "Adds things up."
    assert compute_totals(1) == 2          # fast
    assert compute_totals(5, factor=3) == 15  # slow
    handle = decorated_env["handle"]
    assert handle.force_flush(10)
    reports = decorated_env["memory"].reports
    assert len(reports) == 1
    assert reports[0].span_name == compute_totals.__qualname__
    assert reports[0].duration_ms >= SLOW * 1000
    assert any(h["function"] == "busy" for h in reports[0].hotspots)
    stats = handle.stats()
    assert (stats["spans_started"], stats["slow_spans"], stats["reports_created"]) == (2, 1, 1)
    spans = {s.attributes.get(attr.PERFMON_SLOW): s for s in decorated_env["spans"].get_finished_spans()}
    assert spans[True].name == compute_totals.__qualname__
    assert spans[True].attributes[attr.PERFMON_REPORT_ID] == reports[0].report_id
    assert not [k for k in spans[None].attributes if k.startswith("perfmon.")]


def test_profile_async_function(decorated_env):
    @profile
    async def fetch_rows(delay):
        """Awaits things."""
        await asyncio.sleep(delay)
        busy(delay)
        return ["row", delay]

    assert fetch_rows.__name__ == "fetch_rows"
    assert fetch_rows.__doc__ == "Awaits things."
    assert asyncio.iscoroutinefunction(fetch_rows)

    async def main():
        fast = await fetch_rows(0)
        slow = await fetch_rows(SLOW / 2)
        return fast, slow

    assert asyncio.run(main()) == (["row", 0], ["row", SLOW / 2])
    assert decorated_env["handle"].force_flush(10)
    reports = decorated_env["memory"].reports
    assert len(reports) == 1
    assert reports[0].span_name == fetch_rows.__qualname__
    assert reports[0].duration_ms >= SLOW * 1000 * 0.9


def test_profile_reraises_the_same_exception_object(decorated_env):
    error = KeyError("missing")

    @profile
    def fails():
        raise error

    @profile(threshold_seconds=0.05)
    async def fails_async():
        raise error

    with pytest.raises(KeyError) as info:
        fails()
    assert info.value is error
    with pytest.raises(KeyError) as info:
        asyncio.run(fails_async())
    assert info.value is error
    spans = decorated_env["spans"].get_finished_spans()
    assert len(spans) == 2
    assert all(any(e.name == "exception" for e in s.events) for s in spans)


def test_profile_with_arguments(decorated_env):
    @profile(threshold_seconds=0.05, name="custom-span")
    def quick_but_over_its_own_threshold():
        busy(0.15)
        return "done"

    @profile()
    def same_work_under_the_configured_threshold():
        busy(0.02)
        return "done"

    assert quick_but_over_its_own_threshold.__name__ == "quick_but_over_its_own_threshold"
    assert quick_but_over_its_own_threshold() == "done"
    assert same_work_under_the_configured_threshold() == "done"
    assert decorated_env["handle"].force_flush(10)
    (report,) = decorated_env["memory"].reports
    assert report.span_name == "custom-span"
    assert report.threshold_ms == 50.0


def test_profile_rejects_bad_thresholds():
    with pytest.raises(ConfigurationError, match="threshold_seconds"):
        profile(threshold_seconds=0)
    with pytest.raises(ConfigurationError, match="threshold_seconds"):
        profile(threshold_seconds=-1)


# ---------------------------------------------------------------------------------- never raise
class ExplodingPolicy:
    description = "explodes"

    def __init__(self, where):
        self.where = where

    def should_profile(self, key):
        if self.where == "start":
            raise RuntimeError("policy bug at start")
        return True

    def on_span_end(self, key, duration_seconds, profiled, slow):
        if self.where == "end":
            raise RuntimeError("policy bug at end")


@pytest.mark.parametrize("where", ["start", "end"])
def test_a_raising_policy_never_breaks_the_request(tmp_path, handles, where):
    app = make_app()
    provider, _spans = make_provider()
    handle = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                               report_dir=str(tmp_path), dedup_store="memory", profile_policy=ExplodingPolicy(where))
    handles.append(handle)
    client = app.test_client()
    before = handle.stats()["internal_errors"]
    response = client.get("/fast")
    assert response.status_code == 200 and response.data == b"fast"
    assert client.get("/fast").status_code == 200
    assert handle.stats()["internal_errors"] >= before + 2


class RaisingExporter(ReportExporter):
    name = "raising"

    def __init__(self):
        self.calls = 0

    def export(self, report):
        self.calls += 1
        raise ConnectionError("notifier down")


class FailingExporter(ReportExporter):
    name = "failing"

    def __init__(self):
        self.calls = 0

    def export(self, report):
        self.calls += 1
        return ExportResult.FAILURE


def test_failing_exporters_are_counted_and_files_still_written(tmp_path, handles):
    app = make_app()
    provider, _spans = make_provider()
    raising, failing, memory = RaisingExporter(), FailingExporter(), InMemoryReportExporter()
    handle = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                               report_dir=str(tmp_path), dedup_store="memory", dedup_window_seconds=0,
                               exporters=[raising, failing, memory])
    handles.append(handle)
    client = app.test_client()
    assert client.get("/slow").status_code == 200
    assert client.get("/slow").status_code == 200
    handle.force_flush(10)
    stats = handle.stats()
    assert raising.calls == 2 and failing.calls == 2
    assert stats["export_failures"] == 4
    assert stats["reports_created"] == 2
    assert len(memory.reports) == 2  # a healthy exporter is unaffected by the others
    for report in memory.reports:
        for path in report.files:
            assert os.path.getsize(path) > 0


class HungExporter(ReportExporter):
    name = "hung"

    def __init__(self):
        self.release = threading.Event()
        self.entered = threading.Event()

    def export(self, report):
        self.entered.set()
        self.release.wait(60)
        return ExportResult.SUCCESS

    def shutdown(self):
        self.release.wait(60)

    def force_flush(self, timeout_seconds=30.0):
        return self.release.wait(timeout_seconds)


def test_a_hung_exporter_blocks_neither_files_nor_shutdown(tmp_path):
    app = make_app()
    provider, _spans = make_provider()
    hung = HungExporter()
    handle = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                               report_dir=str(tmp_path), dedup_store="memory", exporters=[hung])
    try:
        started = time.monotonic()
        assert app.test_client().get("/slow").status_code == 200
        assert time.monotonic() - started < SLOW + 2
        assert hung.entered.wait(10), "the exporter was never called"
        files = wait_until(lambda: len(report_files(tmp_path)) == 3 and report_files(tmp_path), 10,
                           message="the report files")
        assert {os.path.splitext(n)[1] for n in files} == {".json", ".html", ".md"}
        assert handle.force_flush(timeout_seconds=0.5) is False
        started = time.monotonic()
        handle.shutdown(timeout_seconds=1)
        assert time.monotonic() - started < 4
    finally:
        hung.release.set()
        handle.shutdown(timeout_seconds=1)


# ---------------------------------------------------------------------------------- queue overflow
def test_queue_overflow_drops_and_counts_without_blocking_the_request_thread(tmp_path):
    from otel_perfmon.config import resolve_config
    from otel_perfmon.dedup.memory import MemoryDedupStore
    from otel_perfmon.processor import PerfmonSpanProcessor

    class BlockingStore(MemoryDedupStore):
        def __init__(self):
            super().__init__()
            self.entered = threading.Event()
            self.release = threading.Event()

        def claim(self, fingerprint, candidate_id, now, window_seconds):
            self.entered.set()
            self.release.wait(30)
            return super().claim(fingerprint, candidate_id, now, window_seconds)

    config = resolve_config(overrides=dict(threshold_seconds=THRESHOLD, report_dir=str(tmp_path), queue_size=1,
                                           dedup_store="memory", profile_policy="always"), environ={})
    store = BlockingStore()
    processor = PerfmonSpanProcessor(config, store=store)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("overflow-test")

    def slow_span(i):
        # a 1 s SERVER span without waiting: explicit start and end timestamps
        start = time.time_ns()
        span = tracer.start_span(f"GET /overflow/{i}", kind=SpanKind.SERVER, start_time=start,
                                 attributes={"http.method": "GET", "http.target": f"/overflow/{i}",
                                             "http.route": "/overflow/<int:i>"})
        began = time.monotonic()
        span.end(end_time=start + 1_000_000_000)
        return time.monotonic() - began

    try:
        end_times = [slow_span(0)]
        assert store.entered.wait(10), "the worker never reached the store"
        # the worker is stuck in claim(); one more fits in the queue, the rest are dropped
        end_times += [slow_span(i) for i in range(1, 8)]
        stats = processor.stats.snapshot()
        assert stats["slow_spans"] == 8
        assert stats["reports_dropped"] == 6
        assert max(end_times) < 0.5, end_times  # span.end() never waited for the worker (blocked 30 s)
        store.release.set()
        assert processor.force_flush(10_000)
        stats = processor.stats.snapshot()
        assert stats["reports_created"] == 1
        assert stats["reports_deduplicated"] == 1
        assert stats["reports_dropped"] == 6
    finally:
        store.release.set()
        processor.shutdown(timeout_seconds=2)


# ---------------------------------------------------------------------------------- stats / switch
def test_stats_has_every_design_key(tmp_path, handles):
    handle = configure_perfmon(tracer_provider=make_provider()[0], report_dir=str(tmp_path), dedup_store="memory")
    handles.append(handle)
    stats = handle.stats()
    for key in STAT_KEYS + ("internal_errors",):
        assert key in stats, key
        assert stats[key] == 0
    stats["spans_started"] = 99  # a snapshot: changing it changes nothing
    assert handle.stats()["spans_started"] == 0


def test_disabled_profiles_nothing_and_writes_nothing(tmp_path, handles):
    app = make_app()
    provider, spans = make_provider()
    report_dir = tmp_path / "reports"
    handle = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                               report_dir=str(report_dir), enabled=False)  # default sqlite store
    handles.append(handle)
    client = app.test_client()
    assert client.get("/slow").status_code == 200
    assert client.get("/fast").status_code == 200
    handle.force_flush(5)
    assert all(value == 0 for value in handle.stats().values()), handle.stats()
    for span in spans.get_finished_spans():
        assert not [k for k in span.attributes if k.startswith("perfmon.")]
    assert report_files(report_dir) == []
    assert not report_dir.exists() or not any(report_dir.iterdir())


def test_enabled_control_case_for_the_disabled_test(tmp_path, handles):
    """Same setup with enabled=True: proves the disabled test would notice profiling."""
    app = make_app()
    provider, spans = make_provider()
    report_dir = tmp_path / "reports"
    handle = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                               report_dir=str(report_dir))
    handles.append(handle)
    assert app.test_client().get("/slow").status_code == 200
    assert handle.force_flush(10)
    assert handle.stats()["reports_created"] == 1
    assert len(report_files(report_dir)) == 3
    assert any(attr.PERFMON_SLOW in s.attributes for s in spans.get_finished_spans())


def test_shutdown_is_idempotent_and_stops_profiling(tmp_path):
    app = make_app()
    provider, _spans = make_provider()
    handle = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=THRESHOLD,
                               report_dir=str(tmp_path), dedup_store="memory")
    handle.shutdown(timeout_seconds=1)
    handle.shutdown(timeout_seconds=1)
    assert app.test_client().get("/fast").status_code == 200
    assert handle.stats()["spans_started"] == 0


def test_run_sync_finds_its_request_span_under_nested_spans_and_concurrent_requests(tmp_path):
    """anyio's run_sync (how FastAPI runs sync routes) is attributed to the right tracked span
    with no ContextVar set by the request path: the current OTel span, its parent, or else the
    innermost open tracked span of the same trace on this task."""
    anyio_to_thread = pytest.importorskip("anyio.to_thread")
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    provider, _spans = make_provider()
    handle = configure_perfmon(tracer_provider=provider, report_dir=str(tmp_path), threshold_seconds=30,
                               profile_policy="always")
    processor = handle.processor
    tracer = provider.get_tracer("test")
    # the requests continue the same remote trace, as when a service calls itself several times
    remote = SpanContext(trace_id=0xABC, span_id=0x123, is_remote=True, trace_flags=TraceFlags(1))
    parent = trace.set_span_in_context(NonRecordingSpan(remote))
    started = asyncio.Event()

    @profile(name="nested work", threshold_seconds=30)
    async def nested_work():  # an @profile span inside the request span, on the same task
        with tracer.start_as_current_span("inner child"):
            with tracer.start_as_current_span("innermost child"):
                return processor.target_for_context(), await anyio_to_thread.run_sync(threading.get_ident)

    async def request(name: str, depth: int):
        with tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as server:
            opened = []
            for level in range(depth):
                opened.append(tracer.start_as_current_span(f"{name} child {level}"))
                opened[-1].__enter__()
            started.set()
            await asyncio.sleep(0.01)  # the other requests' spans are open meanwhile
            if depth < 0:
                found, worker_ident = await nested_work()
            else:
                found = processor.target_for_context()
                worker_ident = await anyio_to_thread.run_sync(threading.get_ident)
            sessions = list(found.profile._thread_sessions) if found is not None and found.profile else []
            for cm in reversed(opened):
                cm.__exit__(None, None, None)
            return server, found, worker_ident, sessions

    async def unrelated():  # another trace, no tracked span: nothing to attribute
        await started.wait()
        with tracer.start_as_current_span("background job"):
            return processor.target_for_context(), len(processor._tracked)

    async def main():
        return await asyncio.gather(request("GET /a", 0), request("GET /b", 1), request("GET /c", 3),
                                    request("GET /d", -1), unrelated())

    try:
        *results, (outside, open_spans) = asyncio.run(main())
        for server, found, worker_ident, sessions in results[:3]:
            assert found is not None and found.span is server, server.name
            assert len(sessions) == 1, f"{server.name}: the worker thread's profile was not attached"
            assert worker_ident != threading.get_ident()
        _server, found, _worker, _sessions = results[3]
        assert found is not None and found.span.name == "nested work"  # the innermost tracked span
        assert outside is None and open_spans >= 4
    finally:
        handle.shutdown()
