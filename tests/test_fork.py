"""Background threads restart in a forked child (gunicorn --preload forks after start-up)."""

from __future__ import annotations

import json
import os
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from otel_perfmon import configure_perfmon

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def slow_span(tracer, route: str, seconds: float) -> None:
    span = tracer.start_span(f"GET {route}", kind=SpanKind.SERVER,
                             attributes={"http.method": "GET", "http.route": route, "http.target": route})
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(100))
    span.end()


def test_worker_watchdog_and_sampler_restart_after_fork(tmp_path):
    provider = TracerProvider()
    perfmon = configure_perfmon(tracer_provider=provider, threshold_seconds=0.05, report_dir=str(tmp_path),
                                dedup_store="sqlite")
    tracer = provider.get_tracer("fork-test")
    slow_span(tracer, "/parent", 0.2)              # starts the worker, watchdog and sampler threads
    assert perfmon.force_flush(10)
    assert perfmon.stats()["reports_created"] == 1
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only the forking thread exists here
        try:
            os.close(read_end)
            slow_span(tracer, "/child", 0.2)
            ok = perfmon.force_flush(10)
            result = {"flushed": ok, "stats": perfmon.stats()}
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        result = json.loads(pipe.read() or "{}")
    os.waitpid(pid, 0)
    assert result["flushed"] is True
    assert result["stats"]["reports_created"] == 2 and result["stats"]["slow_spans"] == 2
    routes = sorted(json.load(open(os.path.join(tmp_path, n)))["http"]["route"]
                    for n in os.listdir(tmp_path) if n.endswith(".json") and ".speedscope." not in n)
    assert routes == ["/child", "/parent"]
    reports = [json.load(open(os.path.join(tmp_path, n))) for n in os.listdir(tmp_path)
               if n.endswith(".json") and ".speedscope." not in n]
    child = [r for r in reports if r["http"]["route"] == "/child"][0]
    assert child["profile"]["mode"] == "sampled" and "slow_span" in child["profile"]["call_tree_text"]
    perfmon.shutdown(timeout_seconds=2)
