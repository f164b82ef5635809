"""The runtime block: GC pauses that overlapped the span, versions, process (report/runtime.py)."""

from __future__ import annotations

import gc
import json
import os
import time

from flask import Flask
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from otel_perfmon import configure_perfmon
from otel_perfmon.report.runtime import gc_during, install_gc_hook


def test_gc_pauses_are_counted_only_inside_the_window():
    install_gc_hook()
    before = time.time()
    gc.collect()
    gc.collect()
    after = time.time()
    inside = gc_during(before, after)
    assert inside["recorded"] is True and inside["collections"] >= 2 and inside["pause_ms"] > 0
    assert gc_during(after + 10, after + 20)["collections"] == 0


def test_a_slow_request_report_carries_the_runtime_block(tmp_path):
    app = Flask("runtime")

    @app.get("/slow")
    def slow():
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:
            gc.collect(0)
        return "ok"

    provider = TracerProvider(resource=Resource.create({"service.name": "rt", "service.version": "1.2.3",
                                                        "deployment.environment": "staging"}))
    perfmon = configure_perfmon(app=app, tracer_provider=provider, threshold_seconds=0.1,
                                report_dir=str(tmp_path), dedup_store="memory")
    try:
        assert app.test_client().get("/slow").status_code == 200
        assert perfmon.force_flush(10)
        (name,) = [n for n in os.listdir(tmp_path) if n.endswith(".json") and ".speedscope." not in n]
        runtime = json.load(open(os.path.join(tmp_path, name), encoding="utf-8"))["runtime"]
    finally:
        perfmon.shutdown(timeout_seconds=2)
    assert {k: runtime["resource"][k] for k in ("service.name", "service.version", "deployment.environment")} \
        == {"service.name": "rt", "service.version": "1.2.3", "deployment.environment": "staging"}
    assert "telemetry.sdk.version" not in runtime["resource"]  # only the attributes that say where it ran
    assert runtime["gc"]["collections"] >= 5
    assert runtime["versions"]["flask"] and runtime["process"]["parent_pid"] == os.getppid()
