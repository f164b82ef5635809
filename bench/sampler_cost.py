"""Sampler cost under concurrency: what the stack sampler thread costs with N open spans.

Each row: a fresh ``TracerProvider`` with ``configure_perfmon`` attached; N SERVER-kind root
spans open at once, in N threads (sleeping 50 ms, then a 0.2 ms CPU burst, in a loop) or in N
tasks of one event loop (awaiting the same way). With a long threshold (10 s) the spans stay
in their early phase for the whole row; the short-threshold rows (0.5 s) measure after the
spans passed it. Measured over a ``--sampler-seconds`` window:

* the CPU time of the thread named ``otel-perfmon-sampler`` (its POSIX thread CPU clock) per
  second of wall time, in % of one core;
* the ``perfmon.stats()`` sampler counters over the window (``n/a`` where absent);
* the pause it causes: a ticker thread sleeps 1 ms in a loop and records its overshoot; its p99
  is compared with the same workload under ``configure_perfmon(enabled=False)``.

Goals: sampler CPU <= 1 % of one core at every N; its longest pass <= 0.5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import threading
import time
from typing import Any, Dict, List, Optional, Set

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from bench.common import Goal, log, md_table

SAMPLER_THREAD = "otel-perfmon-sampler"
#: (case, N, threshold s)
ROWS = [("threads", 1, 10.0), ("threads", 16, 10.0), ("threads", 64, 10.0),
        ("asyncio", 1, 10.0), ("asyncio", 16, 10.0), ("asyncio", 64, 10.0),
        ("threads", 16, 0.5), ("asyncio", 16, 0.5)]
SLEEP_SECONDS = 0.05
BURST_SECONDS = 0.0002
TICK_SECONDS = 0.001
GOAL_CPU_PERCENT = 1.0
GOAL_MAX_PASS_MS = 0.5
STATS_KEYS = ("sampler_passes", "sampler_samples", "sampler_cpu_seconds", "sampler_max_pass_seconds")
ATTRIBUTES = {"http.method": "GET", "http.route": "/concurrent", "http.target": "/concurrent"}


def setup_line(args: argparse.Namespace) -> str:
    return (f"- Sampler cost: per row N SERVER root spans open at once (threads, or tasks on one loop), each "
            f"looping {SLEEP_SECONDS * 1000:.0f} ms of sleep/await and a {BURST_SECONDS * 1e6:.0f} µs CPU burst; "
            f"the package defaults but threshold_seconds (10 s: the early phase; 0.5 s: past it) and a memory dedup "
            f"store; measured over {args.sampler_seconds:g} s: the `{SAMPLER_THREAD}` thread's CPU clock, the "
            "perfmon.stats() sampler counters, and the p99 overshoot of a thread sleeping 1 ms in a loop, "
            "against the same workload with enabled=False.")


def _burst() -> None:
    deadline = time.thread_time() + BURST_SECONDS
    while time.thread_time() < deadline:
        pass


class _Meter:
    """The ticker thread: records the overshoot (s) of each 1 ms sleep while ``recording``,
    and every 50 ms reads the CPU clock of the sampler threads not in ``exclude``."""

    def __init__(self, exclude: Set[threading.Thread]) -> None:
        self.exclude = exclude
        self.recording = False
        self.overshoots: List[float] = []
        self.cpu: Dict[threading.Thread, float] = {}  # last reading per sampler thread (s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-ticker", daemon=True)
        self._thread.start()

    def read_cpu(self) -> Dict[threading.Thread, float]:
        for thread in threading.enumerate():
            if thread.name == SAMPLER_THREAD and thread not in self.exclude and thread.ident:
                try:
                    self.cpu[thread] = time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
                except OSError:  # ended between enumerate() and the read: keep its last reading
                    pass
        return dict(self.cpu)

    def _run(self) -> None:
        clock, next_read = time.perf_counter, 0.0
        while not self._stop.is_set():
            started = clock()
            time.sleep(TICK_SECONDS)
            ended = clock()
            if self.recording:
                self.overshoots.append(ended - started - TICK_SECONDS)
            if ended >= next_read:
                self.read_cpu()
                next_read = ended + 0.05

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def _workload(tracer: Any, case: str, count: int, stop: threading.Event,
              opened: threading.Barrier) -> List[threading.Thread]:
    def span() -> Any:
        return tracer.start_as_current_span("GET /concurrent", kind=SpanKind.SERVER, attributes=ATTRIBUTES)

    def in_thread() -> None:
        with span():
            opened.wait()
            while not stop.is_set():
                time.sleep(SLEEP_SECONDS)
                _burst()

    async def in_task(started: asyncio.Event) -> None:
        with span():
            started.set()
            while not stop.is_set():
                await asyncio.sleep(SLEEP_SECONDS)
                _burst()

    async def loop_main() -> None:
        events = [asyncio.Event() for _ in range(count)]
        tasks = [asyncio.ensure_future(in_task(event)) for event in events]
        for event in events:
            await event.wait()
        opened.wait()
        await asyncio.gather(*tasks)

    if case == "threads":
        threads = [threading.Thread(target=in_thread, name=f"bench-span-{i}", daemon=True) for i in range(count)]
    else:
        threads = [threading.Thread(target=lambda: asyncio.run(loop_main()), name="bench-loop", daemon=True)]
    for thread in threads:
        thread.start()
    return threads


def measure_row(case: str, count: int, threshold: float, enabled: bool, seconds: float,
                report_dir: str) -> Dict[str, Any]:
    """One workload with perfmon enabled or not; the sampler's CPU, stats and the ticker's p99."""
    from otel_perfmon import configure_perfmon
    from otel_perfmon.testing import InMemoryReportExporter

    provider = TracerProvider()
    perfmon = configure_perfmon(tracer_provider=provider, enabled=enabled, threshold_seconds=threshold,
                                dedup_store="memory", report_dir=report_dir, exporters=[InMemoryReportExporter()])
    meter = _Meter({t for t in threading.enumerate() if t.name == SAMPLER_THREAD})
    stop = threading.Event()
    opened = threading.Barrier((count if case == "threads" else 1) + 1)
    threads = _workload(provider.get_tracer("bench.sampler"), case, count, stop, opened)
    try:
        opened.wait(30)
        time.sleep(0.3 + (threshold if threshold < seconds else 0.0))  # settle; past the threshold if short
        stats_before, cpu_before, wall_before = perfmon.stats(), meter.read_cpu(), time.monotonic()
        meter.recording = True
        time.sleep(seconds)
        meter.recording = False
        stats_after, cpu_after, wall = perfmon.stats(), meter.read_cpu(), time.monotonic() - wall_before
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        meter.stop()
        perfmon.force_flush(10)
        perfmon.shutdown(5)
        provider.shutdown()
    cpu = sum(value - cpu_before.get(thread, 0.0) for thread, value in cpu_after.items())
    overshoots = sorted(meter.overshoots) or [0.0]
    row: Dict[str, Any] = {
        "case": case, "n": count, "threshold": threshold, "enabled": enabled, "wall": wall,
        "sampler_threads": len(cpu_after), "cpu_percent": 100.0 * cpu / wall,
        "tick_p99_ms": 1000.0 * overshoots[min(len(overshoots) - 1, int(len(overshoots) * 0.99))],
        "tick_median_ms": 1000.0 * statistics.median(overshoots)}
    for key in STATS_KEYS:
        if key not in stats_after:
            row[key] = None
        elif key == "sampler_max_pass_seconds":
            row[key] = float(stats_after[key])
        else:
            row[key] = float(stats_after[key]) - float(stats_before.get(key, 0))
    return row


def run(args: argparse.Namespace, tmp_root: str, results: Dict[str, Any]) -> None:
    """Every row of :data:`ROWS`, perfmon enabled then disabled; fills ``results["sampler"]``."""
    started = time.monotonic()
    rows = []
    for index, (case, count, threshold) in enumerate(ROWS):
        entry = {}
        for enabled in (True, False):
            report_dir = os.path.join(tmp_root, f"sampler-{index}-{'on' if enabled else 'off'}")
            entry["on" if enabled else "off"] = measure_row(case, count, threshold, enabled, args.sampler_seconds,
                                                            report_dir)
        rows.append(entry)
    log(f"sampler cost: {len(rows)} rows in {time.monotonic() - started:.1f} s")
    results["sampler"] = rows


def _na(value: Optional[float], scale: float = 1.0, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def _label(on: Dict[str, Any]) -> str:
    return f"{on['case']}, N={on['n']}, threshold {on['threshold']:g} s"


def markdown(rows: List[Dict[str, Dict[str, Any]]]) -> List[str]:
    header = ["case", "N", "threshold s", "sampler CPU % of a core", "passes/s", "samples/s", "stats CPU %",
              "max pass ms", "tick p99 ms (perfmon)", "tick p99 ms (disabled)"]
    table = []
    for entry in rows:
        on, off = entry["on"], entry["off"]
        wall = on["wall"]
        cpu = f"{on['cpu_percent']:.2f}" if on["sampler_threads"] else "0 (no sampler thread)"
        table.append([on["case"], on["n"], f"{on['threshold']:g}", cpu,
                      _na(on["sampler_passes"], 1 / wall), _na(on["sampler_samples"], 1 / wall),
                      _na(on["sampler_cpu_seconds"], 100 / wall, 2), _na(on["sampler_max_pass_seconds"], 1000, 3),
                      f"{on['tick_p99_ms']:.3f}", f"{off['tick_p99_ms']:.3f}"])
    return ["## Sampler cost under concurrency (N open spans; CPU of the sampler thread per wall second)", "",
            md_table(header, table)]


def goals(rows: List[Dict[str, Dict[str, Any]]]) -> List[Goal]:
    out: List[Goal] = []
    for entry in rows:
        on = entry["on"]
        out.append((f"sampler CPU ≤ {GOAL_CPU_PERCENT:g} % of one core, {_label(on)}",
                    f"{on['cpu_percent']:.2f} %" + ("" if on["sampler_threads"] else " (no sampler thread)"),
                    on["cpu_percent"] <= GOAL_CPU_PERCENT))
    for entry in rows:
        on = entry["on"]
        longest = on["sampler_max_pass_seconds"]
        out.append((f"sampler max pass ≤ {GOAL_MAX_PASS_MS:g} ms, {_label(on)}",
                    "n/a (perfmon.stats() has no sampler_max_pass_seconds)" if longest is None else
                    f"{longest * 1000:.3f} ms", longest is not None and longest * 1000 <= GOAL_MAX_PASS_MS))
    for entry in rows:
        on, off = entry["on"], entry["off"]
        out.append((f"sampler pause: 1 ms ticker p99 overshoot, perfmon vs disabled, {_label(on)}",
                    f"{on['tick_p99_ms']:.3f} ms vs {off['tick_p99_ms']:.3f} ms", None))
    return out
