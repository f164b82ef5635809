"""In-process section: every variant's Flask / FastAPI app called through its WSGI / ASGI
callable (no sockets, no client), variants taking turns request by request in shuffled order;
then the slow-request checks on fresh apps at a 50 ms threshold (each slow span links to a
report with a call tree).

Why our own timing loop and not pyperf or pytest-benchmark: both time one benchmark at a time
(pyperf in its own worker processes, calibrating a loop count per benchmark), so variants run
in separate batches or processes. On this VM, whose speed drifts by ±10 % within seconds, that
turns drift into apparent overhead, and separate processes alone differ by up to 4 %. The
3 % goal became judgeable only with variants taking turns one request at a time, in a fresh
random order per turn, in one process, next to an A/A control (docs/performance.md, "How
`make bench` measures"). Neither harness can interleave that way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

from bench import apps
from bench.common import Timings, log, rotated, summarize_turns, turns

LOAD_ROUTES = ("fast", "calls", "io", "db")
PHASES = ("in-process flask", "in-process fastapi")


class WsgiDriver:
    """Calls a WSGI app directly: one environ per route built with werkzeug's EnvironBuilder,
    copied per request; the response body is consumed and closed inside the timed region."""

    def __init__(self, routes: Sequence[str] = apps.ROUTES + ("health",)) -> None:
        from werkzeug.test import EnvironBuilder

        self._environs = {}
        for route in routes:
            builder = EnvironBuilder(path=f"/{route}", base_url="http://127.0.0.1:8000",
                                     headers={"User-Agent": "otel-perfmon-bench", "Accept": "*/*"})
            self._environs[route] = builder.get_environ()
            builder.close()
        self.status = ""

    def _start_response(self, status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        self.status = status
        return lambda data: None

    def run(self, app: Any, route: str, count: int) -> List[int]:
        """Serve ``count`` requests of ``route``; returns each request's time in ns."""
        base = self._environs[route]
        start_response = self._start_response
        clock = time.perf_counter_ns
        times = []
        for _ in range(count):
            environ = dict(base)
            started = clock()
            body = app(environ, start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
            times.append(clock() - started)
        if not self.status.startswith("200"):
            raise RuntimeError(f"/{route} answered {self.status!r}")
        return times

    def close(self) -> None:
        return None


class AsgiDriver:
    """Calls an ASGI app directly on one event loop with a minimal HTTP scope; each request is
    awaited alone and timed (ns)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.status = 0

    def _scope(self, route: str) -> Dict[str, Any]:
        return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                "method": "GET", "scheme": "http", "path": f"/{route}", "raw_path": f"/{route}".encode(),
                "query_string": b"", "root_path": "",
                "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"otel-perfmon-bench"),
                            (b"accept", b"*/*")],
                "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}

    async def _serve(self, app: Any, route: str, count: int) -> List[int]:
        scope_template = self._scope(route)
        clock = time.perf_counter_ns
        times = []
        request_message = {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]

        for _ in range(count):
            delivered = False
            done = asyncio.Event()

            async def receive() -> Dict[str, Any]:
                nonlocal delivered
                if not delivered:
                    delivered = True
                    return dict(request_message)
                await done.wait()  # noqa: B023  (awaited in this iteration: released once the response is sent)
                return {"type": "http.disconnect"}

            scope = dict(scope_template)
            started = clock()
            await app(scope, receive, send)
            times.append(clock() - started)
            done.set()
        if self.status != 200:
            raise RuntimeError(f"/{route} answered {self.status}")
        return times

    def run(self, app: Any, route: str, count: int) -> List[int]:
        """Serve ``count`` requests of ``route``; returns each request's time in ns."""
        return self.loop.run_until_complete(self._serve(app, route, count))

    def close(self) -> None:
        self.loop.close()


@contextlib.contextmanager
def driver(framework: str, routes: Sequence[str] = apps.ROUTES + ("health",)) -> Iterator[Any]:
    """A :class:`WsgiDriver` (flask, for ``routes``) or :class:`AsgiDriver` (fastapi), closed on exit."""
    instance = WsgiDriver(routes) if framework == "flask" else AsgiDriver()
    try:
        yield instance
    finally:
        instance.close()


def measure(bench_apps: Dict[str, apps.BenchApp], run: Callable[[Any, str, int], List[int]],
            rounds: int, requests: int, slow_requests: int, warmup: int) -> Timings:
    """Interleaved rounds over ``bench_apps``; returns per (variant, route) the request times
    (ns) of each round. Within a round the variants take turns request by request, each turn in
    a fresh random order (:func:`~bench.common.turns`), so every variant sees the same machine:
    this VM's speed drifts by ±10 % within seconds, which batch-by-batch turns would read as
    overhead."""
    variants = list(bench_apps)
    timings: Timings = {(v, r): [] for v in variants for r in apps.ROUTES}
    for variant in variants:  # warm-up: imports, caches, the adaptive policy's first durations
        for route in LOAD_ROUTES:
            run(bench_apps[variant].app, route, warmup)
        run(bench_apps[variant].app, "slow", 1)
        bench_apps[variant].flush()
    for round_index in range(rounds):
        order = rotated(variants, round_index)
        gc.collect()  # once per round (~50 ms), outside the timed batches
        for route in LOAD_ROUTES:
            batches: Dict[str, List[int]] = {variant: [] for variant in variants}
            for variant in turns(variants, requests, seed=round_index):
                batches[variant].extend(run(bench_apps[variant].app, route, 1))
            for variant in variants:
                timings[(variant, route)].append(batches[variant])
        for variant in order:
            timings[(variant, "slow")].append(run(bench_apps[variant].app, "slow", slow_requests))
        for variant in order:  # report building runs now, outside the timed batches
            bench_apps[variant].flush()
    return timings


def check_slow_spans(bench_app: apps.BenchApp) -> Dict[str, Any]:
    """For each recorded slow SERVER span: perfmon.report.id set and the report's JSON has a
    non-empty profile.call_tree_text. Returns counts, report ids, profile modes and failures."""
    bench_app.flush()
    result: Dict[str, Any] = {"spans": 0, "with_call_tree": 0, "report_ids": set(), "modes": {}, "failures": []}
    for span in bench_app.recorder.spans():
        result["spans"] += 1
        report_id = (span.attributes or {}).get("perfmon.report.id")
        if not report_id:
            result["failures"].append(f"{span.name}: no perfmon.report.id "
                                      f"({(span.end_time - span.start_time) / 1e6:.1f} ms)")
            continue
        try:
            with open(os.path.join(bench_app.perfmon.report_dir, f"{report_id}.json"), encoding="utf-8") as handle:
                profile = json.load(handle).get("profile") or {}
        except (OSError, ValueError) as exc:
            result["failures"].append(f"{span.name}: report {report_id} unreadable ({exc})")
            continue
        if str(profile.get("call_tree_text") or "").strip():
            result["with_call_tree"] += 1
            result["report_ids"].add(report_id)
            mode = str(profile.get("mode", "unspecified"))
            result["modes"][mode] = result["modes"].get(mode, 0) + 1
        else:
            result["failures"].append(f"{span.name}: report {report_id} has an empty call tree")
    return result


def slow_check(framework: str, variant: str, tmp_root: str, count: int,
               extra_perfmon: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A fresh app of ``variant`` at the bench threshold (``apps.DEFAULT_THRESHOLD_SECONDS``,
    50 ms): 20 fast requests, then ``count`` slow ones; :func:`check_slow_spans` of them.
    ``extra_perfmon``: more ``configure_perfmon`` overrides (e.g. ``dedup_window_seconds=0``)."""
    name = "-".join([framework, variant] + sorted(extra_perfmon or {}))
    bench_app = apps.build(framework, variant, os.path.join(tmp_root, f"slow-check-{name}"),
                           threshold_seconds=apps.DEFAULT_THRESHOLD_SECONDS, extra_perfmon=extra_perfmon)
    with driver(framework) as client:
        client.run(bench_app.app, "fast", 20)
        client.run(bench_app.app, "slow", count)
    result = check_slow_spans(bench_app)
    bench_app.shutdown()
    return result


def run(args: argparse.Namespace, tmp_root: str, results: Dict[str, Any]) -> None:
    """Per framework: build the variants' apps (the perfmon ones with the package defaults,
    threshold 1 s included, as in production), measure them; then the slow-request checks on
    fresh apps at the bench threshold (50 ms, so the ~80 ms slow route is slow): each perfmon
    variant with dedup on, and the default with dedup off. Fills ``results["in-process
    <framework>"]``, "slow checks", "perfmon stats".

    Why the timed apps keep the 1 s default: a 50 ms threshold is not the default configuration.
    It wakes the watchdog 20 times as often, and it makes the adaptive policy take a 25 ms
    hiccup of the ~7 ms ``/db`` route for a route near its threshold and spend its profiling
    budget there. Same code, Flask: fast 1.031 and ``/db`` 1.053 at 50 ms, 1.020 and 1.020 at
    1 s (docs/performance.md)."""
    slow_count = args.rounds * args.slow_requests + 1  # as many as the timed rounds had, plus the warm-up's
    for framework in args.frameworks:
        bench_apps = {variant: apps.build(framework, variant, os.path.join(tmp_root, f"inproc-{framework}-{variant}")
                                          if variant in apps.PERFMON_VARIANTS else None, threshold_seconds=None,
                                          record_slow=False)
                      for variant in apps.VARIANTS}
        started = time.monotonic()
        with driver(framework) as client:
            timings = measure(bench_apps, client.run, args.rounds, args.requests, args.slow_requests, args.warmup)
        log(f"in-process {framework}: {args.rounds} rounds in {time.monotonic() - started:.1f} s")
        results[f"in-process {framework}"] = summarize_turns(timings)
        for variant in apps.PERFMON_VARIANTS:
            timed = bench_apps[variant]
            results["perfmon stats"].append((f"in-process {framework} {variant}", timed.policy_description,
                                             timed.perfmon.stats()))
        for bench_app in bench_apps.values():
            bench_app.shutdown()
        for variant in apps.PERFMON_VARIANTS:
            check = slow_check(framework, variant, tmp_root, slow_count)
            check["label"] = f"in-process {framework} {variant} (dedup on, default window)"
            results["slow checks"].append(check)
        check = slow_check(framework, "perfmon_default", tmp_root, args.dedup_off_requests,
                           extra_perfmon={"dedup_window_seconds": 0})
        check["label"] = f"in-process {framework} perfmon_default with dedup_window_seconds=0"
        results["slow checks"].append(check)
