"""Call-tree quality section: does a cold slow route's report show its culprit as well as
profiling the whole span (``profile_policy="always"``) does?

Each case is one request to a fresh app with a fresh ``configure_perfmon`` (threshold 1 s,
memory dedup store, a fresh report_dir, an ``InMemoryReportExporter``), called in-process (WSGI
/ ASGI callable). The route spends 0.8 s in its culprit, then 0.4 s of CPU in ``render_page``.
From the report: ``profile.mode``, ``profile.coverage``, ``profile.sample_count`` and the
culprit's share, the ``percent`` of the culprit function in ``profile.hotspots`` (self time).
The time of a sleep or an await is charged to the Python function that called it: full
pyinstrument sessions show ``time.sleep`` as a ``sleep <built-in>`` frame and an await's time
in ``asyncio.sleep`` (asyncio/tasks.py), while the sampler may charge them to the caller, so
those hotspots count as the culprit's (``CHARGED``). Two variants per case: the default
configuration and ``profile_policy="always"`` (the reference). Goal per case: the default's
coverage >= 0.9 and its culprit share within 10 points of the reference's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any, Dict, List

from bench import apps
from bench.common import Goal, log, md_table
from bench.inprocess import driver

THRESHOLD_SECONDS = 1.0
CULPRIT_SECONDS = 0.8
RENDER_SECONDS = 0.4
GOAL_COVERAGE = 0.9
GOAL_SHARE_POINTS = 10.0
#: case -> (route, culprit function, description); the route is the case name
CASES = {
    "cpu": ("slow_query_cpu", "CPU culprit (0.8 s Python loop)"),
    "sleep": ("slow_upstream", "sleep culprit (time.sleep 0.8 s)"),
    "await": ("slow_await", "await culprit (await asyncio.sleep 0.8 s)"),
    "thread": ("slow_query_cpu", "sync route in a worker thread (CPU culprit)"),
}
#: hotspots (function, file) charged to the culprit: what it waits in
CHARGED = {"sleep": {("sleep", "<built-in>")}, "await": {("sleep", "asyncio/tasks.py")}}
FRAMEWORK_CASES = {"flask": ("cpu", "sleep"), "fastapi": ("cpu", "sleep", "await", "thread")}
VARIANTS = {"default": {}, "always": {"profile_policy": "always"}}
SETUP = ("- Call-tree quality: per case a fresh app and `configure_perfmon(threshold_seconds=1.0, "
         "dedup_store=\"memory\")` (fresh report_dir, InMemoryReportExporter), one cold request in-process: "
         f"{CULPRIT_SECONDS:g} s in the culprit, then {RENDER_SECONDS:g} s of CPU in `render_page`. Share = the "
         "culprit's `percent` in `profile.hotspots` (self time; a `sleep` frame under it, built-in or "
         "asyncio's, counts as the culprit's). Variants: the default configuration and "
         "`profile_policy=\"always\"` (the reference).")


# ---------------------------------------------------------------------------- route work
# The CPU loops are written out in each function (no helper), so their self time is theirs.
def slow_query_cpu(seconds: float = CULPRIT_SECONDS) -> int:
    """``seconds`` of this thread's CPU time in a pure-bytecode loop."""
    deadline, total = time.thread_time() + seconds, 0
    while time.thread_time() < deadline:
        for i in range(20000):
            total += i * i % 7
    return total


def render_page(seconds: float = RENDER_SECONDS) -> int:
    """``seconds`` of this thread's CPU time (the part that is not the culprit)."""
    deadline, total = time.thread_time() + seconds, 0
    while time.thread_time() < deadline:
        for i in range(20000):
            total += i * i % 5
    return total


def slow_upstream(seconds: float = CULPRIT_SECONDS) -> None:
    time.sleep(seconds)


async def slow_await(seconds: float = CULPRIT_SECONDS) -> None:
    await asyncio.sleep(seconds)


def flask_app() -> Any:
    from flask import Flask

    app = Flask("bench_quality")

    @app.get("/cpu")
    def cpu():
        return {"total": slow_query_cpu() + render_page()}

    @app.get("/sleep")
    def sleep():
        slow_upstream()
        return {"total": render_page()}

    return app


def fastapi_app() -> Any:
    from fastapi import FastAPI

    app = FastAPI(title="bench-quality")

    @app.get("/cpu")
    async def cpu():
        return {"total": slow_query_cpu() + render_page()}

    @app.get("/sleep")
    async def sleep():
        slow_upstream()
        return {"total": render_page()}

    @app.get("/await")
    async def await_():
        await slow_await()
        return {"total": render_page()}

    @app.get("/thread")
    def thread():  # a sync route: FastAPI runs it in anyio's worker thread
        return {"total": slow_query_cpu() + render_page()}

    return app


# ---------------------------------------------------------------------------- measurement
def measure_case(framework: str, case: str, variant: str, report_dir: str) -> Dict[str, Any]:
    """One cold request of ``case`` to a fresh app; the report's profile figures."""
    from otel_perfmon.testing import InMemoryReportExporter

    culprit = CASES[case][0]
    exporter = InMemoryReportExporter()
    app = flask_app() if framework == "flask" else fastapi_app()
    bench_app = apps.instrument(framework, "perfmon_default", app, report_dir, THRESHOLD_SECONDS,
                                extra_perfmon=dict(VARIANTS[variant], dedup_store="memory", exporters=[exporter]))
    row: Dict[str, Any] = {"framework": framework, "case": case, "culprit": culprit, "variant": variant}
    try:
        with driver(framework, routes=(case,)) as client:
            row["request_ms"] = client.run(bench_app.app, case, 1)[0] / 1e6
        bench_app.flush()
        reports = exporter.reports
    finally:
        bench_app.shutdown()
    row["reports"] = len(reports)
    if not reports:
        row.update(mode="no report", coverage=0.0, samples=0, share=0.0)
        return row
    profile = reports[-1].to_dict()["profile"]
    row.update(mode=profile["mode"], coverage=float(profile["coverage"]), samples=int(profile["sample_count"]),
               share=culprit_share(profile["hotspots"], case))
    return row


def culprit_share(hotspots: List[Dict[str, Any]], case: str) -> float:
    """Percent of self time in the case's culprit and what it waits in (:data:`CHARGED`)."""
    charged = CHARGED.get(case, set())
    return sum(float(h["percent"]) for h in hotspots
               if h["function"] == CASES[case][0] or (h["function"], h["file"]) in charged)


def run(args: argparse.Namespace, tmp_root: str, results: Dict[str, Any]) -> None:
    """Every (framework, case, variant); fills ``results["quality"]`` with one row each."""
    started = time.monotonic()
    rows: List[Dict[str, Any]] = []
    for framework in args.frameworks:
        for case in FRAMEWORK_CASES[framework]:
            for variant in VARIANTS:
                report_dir = os.path.join(tmp_root, f"quality-{framework}-{case}-{variant}")
                rows.append(measure_case(framework, case, variant, report_dir))
    log(f"call-tree quality: {len(rows)} requests in {time.monotonic() - started:.1f} s")
    results["quality"] = rows


def _pairs(rows: List[Dict[str, Any]]) -> List[Dict[str, Dict[str, Any]]]:
    pairs: Dict[tuple, Dict[str, Dict[str, Any]]] = {}
    for row in rows:
        pairs.setdefault((row["framework"], row["case"]), {})[row["variant"]] = row
    return list(pairs.values())


def markdown(rows: List[Dict[str, Any]]) -> List[str]:
    header = ["framework", "case", "culprit", "variant", "profile.mode", "coverage", "samples", "culprit share",
              "request ms"]
    table = [[r["framework"], CASES[r["case"]][1], r["culprit"], r["variant"], r["mode"], f"{r['coverage']:.3f}",
              r["samples"], f"{r['share']:.1f} %", f"{r['request_ms']:.0f}"] for r in rows]
    return ["## Call-tree quality (cold slow routes, one request each)", "", md_table(header, table)]


def goals(rows: List[Dict[str, Any]]) -> List[Goal]:
    out: List[Goal] = []
    for pair in _pairs(rows):
        default, always = pair.get("default"), pair.get("always")
        if default is None or always is None:
            continue
        gap = abs(default["share"] - always["share"])
        met = default["reports"] > 0 and default["coverage"] >= GOAL_COVERAGE and gap <= GOAL_SHARE_POINTS
        out.append((f"call tree, {default['framework']}, {CASES[default['case']][1]}: default coverage ≥ "
                    f"{GOAL_COVERAGE} and {default['culprit']} share within {GOAL_SHARE_POINTS:.0f} points of always",
                    f"coverage {default['coverage']:.3f} ({default['mode']}), share {default['share']:.1f} % vs "
                    f"{always['share']:.1f} % (always, coverage {always['coverage']:.3f})", met))
    return out
