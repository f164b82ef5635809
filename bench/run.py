#!/usr/bin/env python3
"""otel-perfmon overhead benchmark (issue 6): ``make bench`` or ``python bench/run.py``.

What it measures, in one run, against the OTel-only baseline measured in the same run:

1. **In-process** (Flask through its WSGI callable, FastAPI through its ASGI callable, no
   sockets, no client): ``--rounds`` rounds; in each, the variants take turns request by request,
   each turn in a fresh random order (``--requests`` turns per route). Each request is timed
   alone (ns). Reported: the median latency (µs), its ratio to otel's median, and the quartiles
   of the per-round ratios. An A/A control (``otel_b``, a second identical OTel app) shows the
   precision of the run.
2. **Under load, interleaved** (the goal figures): one server process (gunicorn ``-w 1`` sync
   for Flask, uvicorn for FastAPI) hosting every variant under ``/<variant>/``, driven by
   ``wrk -t1 -c1`` (a Lua script requests the variants in shuffled turns) or a Python client;
   every request is timed inside the server. Same summary as in-process.
   **Under load, throughput windows**: one server per variant under ``wrk -t1 -c4 --latency``,
   ``--load-rounds`` interleaved windows; requests/s, p50 and p99 (ms) and their ratios to otel
   (the throughput "cost" is otel_rps / variant_rps, so > 1 is worse everywhere). On a shared VM
   these windows swing by ±10–20 % between identical servers (see the A/A row): shown for
   information.
3. **Memory**: a fresh process serving ``--rss-requests`` fast requests in-process with the default
   perfmon variant: VmRSS after warm-up and at the end, and VmHWM (peak), in MB.
4. **Slow requests**: every slow request of the in-process phases is checked: its span carries
   ``perfmon.report.id`` and ``<report_dir>/<id>.json`` has a non-empty ``profile.call_tree_text``.
   A second check turns dedup off (``dedup_window_seconds=0``) so each slow request must get a
   report of its own.

In-process, the perfmon variants use ``threshold_seconds=0.05`` and the slow route takes ~0.08 s, so
the bench stays short; the servers run the package default (1 s) as the slow route is not loaded.

Options: ``--quick`` (smoke run, < 60 s), ``--no-servers``, ``--no-fastapi``, ``--no-rss``,
``--output PATH`` (markdown results; a full run writes ``bench/results.md`` by default).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.client import HTTPConnection
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import apps  # noqa: E402  (bench/apps.py)

VARIANTS = apps.VARIANTS
LOAD_ROUTES = ("fast", "calls", "io")
ALL_ROUTES = apps.ROUTES
BASELINE = "otel"
GOAL_DEFAULT_RATIO = 1.03
GOAL_ALWAYS_VS_RAW = 1.05
GOAL_RSS_GROWTH_MB = 10.0

Timings = Dict[Tuple[str, str], List[List[int]]]  # (variant, route) -> per round, request times in ns


def log(message: str) -> None:
    """Progress line on stderr (the results go to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ============================================================================ machine
def machine_description() -> Dict[str, str]:
    """CPU model, cores, memory, OS, Python, package versions, load average, git commit."""
    from importlib import metadata

    info: Dict[str, str] = {}
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info["CPU"] = model
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["cores"] = f"{os.cpu_count()} logical, {usable} usable by this process"
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    info["memory"] = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    info["OS"] = f"{platform.system()} {platform.release()} ({platform.machine()})"
    info["Python"] = f"{platform.python_implementation()} {platform.python_version()}"
    versions = []
    for name in ("otel-perfmon", "opentelemetry-sdk", "opentelemetry-instrumentation-flask",
                 "opentelemetry-instrumentation-fastapi", "pyinstrument", "flask", "werkzeug", "fastapi",
                 "starlette", "gunicorn", "uvicorn"):
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    info["packages"] = ", ".join(versions)
    wrk = shutil.which("wrk")
    if wrk:
        probe = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
        first = (probe.stdout or probe.stderr).strip().splitlines()
        info["load generator"] = first[0] if first else "wrk"
    else:
        info["load generator"] = "bounded Python client (wrk not installed)"
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!bench/results.md"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["git commit"] = f"{commit}{' (with uncommitted changes)' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        pass
    info["load average at start"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    env = sorted(k for k in os.environ if k.startswith("OTEL_PERFMON_"))
    if env:
        info["OTEL_PERFMON_* set"] = ", ".join(f"{k}={os.environ[k]}" for k in env)
    return info


def default_policy_name() -> str:
    """The package's default ``profile_policy`` at run time (after env vars)."""
    from otel_perfmon.config import resolve_config

    policy = resolve_config().profile_policy
    return policy if isinstance(policy, str) else getattr(policy, "description", type(policy).__name__)


# ============================================================================ in-process drivers
class WsgiDriver:
    """Calls a WSGI app directly: one environ per route built with werkzeug's EnvironBuilder,
    copied per request; the response body is consumed and closed inside the timed region."""

    def __init__(self) -> None:
        from werkzeug.test import EnvironBuilder

        self._environs = {}
        for route in ALL_ROUTES + ("health",):
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
                await done.wait()  # a disconnect listener: released once the response is sent
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


def turns(items: Sequence[str], count: int, seed: int) -> List[str]:
    """``count`` turns of ``items``, each turn in its own random order (seeded): every item runs
    after every other about equally often. A fixed cyclic order is biased: the variant that
    always follows ``bare`` finds the OTel code cold and reads ~3 % slower than its twin."""
    rng = random.Random(seed)
    sequence: List[str] = []
    for _ in range(count):
        turn = list(items)
        rng.shuffle(turn)
        sequence.extend(turn)
    return sequence


def rotated(items: Sequence[str], shift: int) -> List[str]:
    shift %= len(items)
    return list(items[shift:]) + list(items[:shift])


def measure_in_process(bench_apps: Dict[str, "apps.BenchApp"], run: Callable[[Any, str, int], List[int]],
                       rounds: int, requests: int, slow_requests: int, warmup: int) -> Timings:
    """Interleaved rounds over ``bench_apps``; returns per (variant, route) the request times
    (ns) of each round. Within a round the variants take turns request by request (in an order
    that rotates each request), so every variant sees the same machine: this VM's speed drifts
    by ±10 % within seconds, which batch-by-batch turns would read as overhead. Slow requests are
    kept by each variant's span exporter (``BenchApp.recorder``). The turns are shuffled (:func:`turns`)."""
    variants = list(bench_apps)
    timings: Timings = {(v, r): [] for v in variants for r in ALL_ROUTES}

    def slow_batch(variant: str, count: int) -> List[int]:
        return run(bench_apps[variant].app, "slow", count)

    for variant in variants:  # warm-up: imports, caches, the adaptive policy's first durations
        for route in LOAD_ROUTES:
            run(bench_apps[variant].app, route, warmup)
        slow_batch(variant, 1)
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
            timings[(variant, "slow")].append(slow_batch(variant, slow_requests))
        for variant in order:  # report building runs now, outside the timed batches
            bench_apps[variant].flush()
    return timings


def summarize_in_process(timings: Timings) -> Dict[Tuple[str, str], Dict[str, float]]:
    """Median latency (µs) over all rounds; its ratio to the median of otel (``ratio``) and of
    raw_pyinstrument (``vs_raw``) over all rounds; and the quartiles of the per-round ratios of
    medians (``ratio_q1``/``ratio_q3``, ``vs_raw_q1``/``vs_raw_q3``), whose spread shows the noise."""
    summary: Dict[Tuple[str, str], Dict[str, float]] = {}
    for (variant, route), per_round in timings.items():
        if not per_round:
            continue
        pooled = [t for batch in per_round for t in batch]
        entry = {"median_us": statistics.median(pooled) / 1000.0, "requests": float(len(pooled))}
        for key, reference in (("ratio", BASELINE), ("vs_raw", "raw_pyinstrument")):
            base_rounds = timings.get((reference, route))
            if base_rounds and len(base_rounds) == len(per_round):
                ratios = [statistics.median(mine) / statistics.median(theirs)
                          for mine, theirs in zip(per_round, base_rounds)]
                entry[key] = statistics.median(pooled) / statistics.median(t for batch in base_rounds for t in batch)
                quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
                entry[f"{key}_q1"], entry[f"{key}_q3"] = quartiles[0], quartiles[2]
        summary[(variant, route)] = entry
    return summary


def run_in_process_phase(framework: str, tmp_root: str, args: argparse.Namespace):
    """Build the five apps of ``framework``, measure them, return (summary, apps)."""
    build = apps.build_flask if framework == "flask" else apps.build_fastapi
    bench_apps = {}
    for variant in VARIANTS:
        report_dir = os.path.join(tmp_root, f"inproc-{framework}-{variant}")
        bench_apps[variant] = build(variant, report_dir if variant in apps.PERFMON_VARIANTS else None)
    driver = WsgiDriver() if framework == "flask" else AsgiDriver()
    started = time.monotonic()
    try:
        timings = measure_in_process(bench_apps, driver.run, args.rounds, args.requests, args.slow_requests,
                                     args.warmup)
    finally:
        if isinstance(driver, AsgiDriver):
            driver.close()
    log(f"in-process {framework}: {args.rounds} rounds in {time.monotonic() - started:.1f} s")
    return summarize_in_process(timings), bench_apps


# ============================================================================ slow-request checks
def check_slow_spans(bench_app: "apps.BenchApp") -> Dict[str, Any]:
    """For each recorded slow SERVER span: perfmon.report.id set and the report's JSON has a
    non-empty profile.call_tree_text. Returns counts, report ids, profile modes and failures."""
    bench_app.flush()
    result: Dict[str, Any] = {"spans": 0, "with_call_tree": 0, "report_ids": set(), "modes": {}, "failures": []}
    report_dir = bench_app.perfmon.report_dir
    for span in bench_app.recorder.spans():
        result["spans"] += 1
        attributes = span.attributes or {}
        report_id = attributes.get("perfmon.report.id")
        if not report_id:
            result["failures"].append(f"{span.name}: no perfmon.report.id "
                                      f"({(span.end_time - span.start_time) / 1e6:.1f} ms)")
            continue
        path = os.path.join(report_dir, f"{report_id}.json")
        try:
            with open(path, encoding="utf-8") as handle:
                report = json.load(handle)
        except (OSError, ValueError) as exc:
            result["failures"].append(f"{span.name}: report {report_id} unreadable ({exc})")
            continue
        profile = report.get("profile") or {}
        if str(profile.get("call_tree_text") or "").strip():
            result["with_call_tree"] += 1
            result["report_ids"].add(report_id)
            mode = str(profile.get("mode", "unspecified"))
            result["modes"][mode] = result["modes"].get(mode, 0) + 1
        else:
            result["failures"].append(f"{span.name}: report {report_id} has an empty call tree")
    return result


def dedup_off_check(framework: str, tmp_root: str, count: int) -> Dict[str, Any]:
    """The default variant with dedup off: ``count`` slow requests must give ``count`` reports."""
    build = apps.build_flask if framework == "flask" else apps.build_fastapi
    bench_app = build("perfmon_default", os.path.join(tmp_root, f"dedup-off-{framework}"),
                      extra_perfmon={"dedup_window_seconds": 0})
    driver = WsgiDriver() if framework == "flask" else AsgiDriver()
    try:
        driver.run(bench_app.app, "fast", 20)
        driver.run(bench_app.app, "slow", count)
    finally:
        if isinstance(driver, AsgiDriver):
            driver.close()
    result = check_slow_spans(bench_app)
    bench_app.shutdown()
    return result


# ============================================================================ real servers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BenchServer:
    """One gunicorn or uvicorn process serving one variant on 127.0.0.1:<port>."""

    def __init__(self, framework: str, variant: str, report_dir: str, log_path: str) -> None:
        self.framework, self.variant = framework, variant
        self.health = "otel/health" if variant == "mixed" else "health"
        self.port = free_port()
        self.log_path = log_path
        bin_dir = os.path.dirname(sys.executable)
        if framework == "flask":
            argv = [os.path.join(bin_dir, "gunicorn"), "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{self.port}",
                    "--pythonpath", HERE, "--log-level", "warning", "--graceful-timeout", "5", "apps:flask_app"]
        else:
            argv = [os.path.join(bin_dir, "uvicorn"), "--app-dir", HERE, "--host", "127.0.0.1",
                    "--port", str(self.port), "--log-level", "warning", "--no-access-log", "apps:fastapi_app"]
        # the package's default threshold (1 s): the slow route is not loaded, and a short threshold
        # would wake the watchdog 20x more often than in production. One hash seed for all
        # servers, so identical code lays out its dicts identically in every process.
        env = dict(os.environ, BENCH_VARIANT=variant, BENCH_REPORT_DIR=report_dir, BENCH_THRESHOLD_SECONDS="",
                   PYTHONHASHSEED="0")
        with open(log_path, "ab") as log_file:
            self.process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}/{route}"

    def wait_ready(self, timeout_seconds: float = 60.0) -> None:
        """Poll the health route until it answers 200 (deadline ``timeout_seconds``, s)."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.framework}/{self.variant} server exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url(self.health), timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.framework}/{self.variant} server not ready:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-4000:]

    def stop(self) -> None:
        """SIGTERM the server's process group; SIGKILL after 15 s."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


_WRK_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_wrk(text: str) -> Dict[str, float]:
    """requests/s, p50_ms and p99_ms (and error counts) from ``wrk --latency`` output."""
    rps = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if not rps:
        raise ValueError(f"no Requests/sec in wrk output:\n{text}")
    result = {"rps": float(rps.group(1)), "errors": 0.0}
    for pct, value, unit in _WRK_LATENCY.findall(text):
        result[f"p{pct}_ms"] = float(value) * _UNIT_MS[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    result["errors"] = float(non2xx.group(1)) if non2xx else 0.0
    if sock:
        result["errors"] += sum(float(v) for v in sock.groups())
    return result


def wrk_load(url: str, seconds: float) -> Dict[str, float]:
    """``wrk -t1 -c4 -d<seconds>s --latency url`` (s), parsed."""
    duration = max(1, int(round(seconds)))
    proc = subprocess.run(["wrk", "-t1", "-c4", f"-d{duration}s", "--latency", url], capture_output=True,
                          text=True, timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}")
    return parse_wrk(proc.stdout)


def python_load(url: str, seconds: float, connections: int = 4, max_requests: int = 200000) -> Dict[str, float]:
    """Bounded fallback load client: ``connections`` threads of sequential GETs for ``seconds`` (s)
    or ``max_requests`` requests in all; reconnects when the server closes the connection."""
    host_port, path = url[len("http://"):].split("/", 1)
    host, port = host_port.split(":")
    deadline = time.monotonic() + seconds
    latencies: List[float] = []
    errors = [0]
    lock = threading.Lock()

    def worker() -> None:
        conn: Optional[HTTPConnection] = None
        mine: List[float] = []
        while time.monotonic() < deadline and len(mine) * connections < max_requests:
            started = time.perf_counter()
            try:
                if conn is None:
                    conn = HTTPConnection(host, int(port), timeout=10)
                conn.request("GET", "/" + path)
                response = conn.getresponse()
                response.read()
                if response.status != 200:
                    errors[0] += 1
                if response.will_close:
                    conn.close()
                    conn = None
            except OSError:
                errors[0] += 1
                if conn is not None:
                    conn.close()
                conn = None
                continue
            mine.append((time.perf_counter() - started) * 1000.0)
        if conn is not None:
            conn.close()
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    elapsed = time.monotonic() - started
    latencies.sort()
    if not latencies:
        raise RuntimeError(f"no successful request to {url}")
    return {"rps": len(latencies) / elapsed, "p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], "errors": float(errors[0])}


_WRK_ROTATE_LUA = """-- one request per path in turn, on every connection (bench/run.py)
local paths = {%s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n %% #paths) + 1])
end
"""


def rotating_load(base_url: str, paths: Sequence[str], seconds: float, script_path: str) -> None:
    """Saturating single-connection load that requests ``paths`` in turn for ``seconds`` (s):
    ``wrk -t1 -c1`` with a Lua script, or a sequential Python client when wrk is missing."""
    if shutil.which("wrk"):
        with open(script_path, "w", encoding="utf-8") as handle:
            handle.write(_WRK_ROTATE_LUA % ", ".join(json.dumps(p) for p in paths))
        duration = max(1, int(round(seconds)))
        proc = subprocess.run(["wrk", "-t1", "-c1", f"-d{duration}s", "-s", script_path, base_url],
                              capture_output=True, text=True, timeout=duration + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}")
        errors = parse_wrk(proc.stdout)["errors"]
        if errors:
            raise RuntimeError(f"{errors:.0f} failed requests under rotating load:\n{proc.stdout}")
        return
    host, port = base_url[len("http://"):].rstrip("/").split(":")
    conn = HTTPConnection(host, int(port), timeout=10)
    deadline, index = time.monotonic() + seconds, 0
    try:
        while time.monotonic() < deadline:
            conn.request("GET", paths[index % len(paths)])
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                raise RuntimeError(f"{paths[index % len(paths)]} answered {response.status}")
            index += 1
    finally:
        conn.close()


def run_mixed_phase(framework: str, tmp_root: str, args: argparse.Namespace) -> Dict[Tuple[str, str], Dict[str, float]]:
    """One server process (gunicorn -w 1 sync / uvicorn) hosting every variant under
    ``/<variant>/``, under a single-connection saturating load that requests the variants in
    turn; each request is timed inside the server. The same rotation as in-process, so the same
    summary (see :func:`summarize_in_process`), for ``args.mixed_rounds`` rounds of
    ``args.mixed_seconds`` (s) per route."""
    server = BenchServer(framework, "mixed", os.path.join(tmp_root, f"mixed-{framework}"),
                         os.path.join(tmp_root, f"mixed-{framework}.log"))
    script = os.path.join(tmp_root, f"rotate-{framework}.lua")
    started = time.monotonic()

    def collect() -> Dict[str, List[int]]:
        with urllib.request.urlopen(server.url(apps.TIMINGS_PATH.lstrip("/")), timeout=30) as response:
            return json.load(response)

    rounds: Timings = {(v, r): [] for v in VARIANTS for r in LOAD_ROUTES}
    try:
        server.wait_ready()
        for route in LOAD_ROUTES:  # warm-up: imports, caches, the adaptive policy's learning
            rotating_load(server.url(""), [f"/{v}/{route}" for v in VARIANTS], max(1.0, args.load_warmup_seconds * 2), script)
        collect()
        for round_index in range(args.mixed_rounds):
            for route in LOAD_ROUTES:
                # shuffled turns, as in-process; wrk cycles through them
                paths = [f"/{v}/{route}" for v in turns(VARIANTS, 500, seed=round_index)]
                rotating_load(server.url(""), paths, args.mixed_seconds, script)
                timings = collect()
                for variant in VARIANTS:
                    rounds[(variant, route)].append(timings[variant])
    finally:
        server.stop()
    log(f"mixed server {framework}: {args.mixed_rounds} rounds in {time.monotonic() - started:.1f} s")
    return summarize_in_process(rounds)


def run_server_phase(framework: str, tmp_root: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Start one server per variant, warm each up, then ``args.load_rounds`` interleaved rounds of
    ``args.load_seconds`` (s) per (route, variant). Returns per-round results and their summary."""
    load = wrk_load if shutil.which("wrk") else python_load
    servers: Dict[str, BenchServer] = {}
    started = time.monotonic()
    try:
        for variant in VARIANTS:
            servers[variant] = BenchServer(framework, variant, os.path.join(tmp_root, f"server-{framework}-{variant}"),
                                           os.path.join(tmp_root, f"server-{framework}-{variant}.log"))
        for server in servers.values():
            server.wait_ready()
        if args.load_warmup_seconds > 0:  # short bursts: imports, caches, the adaptive policy's learning
            for variant in VARIANTS:
                for route in LOAD_ROUTES:
                    python_load(servers[variant].url(route), args.load_warmup_seconds, max_requests=2000)
        rounds: Dict[Tuple[str, str], List[Dict[str, float]]] = {(v, r): [] for v in VARIANTS for r in LOAD_ROUTES}
        for round_index in range(args.load_rounds):
            for route in LOAD_ROUTES:
                for variant in rotated(VARIANTS, round_index):
                    rounds[(variant, route)].append(load(servers[variant].url(route), args.load_seconds))
    finally:
        for server in servers.values():
            server.stop()
    log(f"servers {framework}: {args.load_rounds} rounds in {time.monotonic() - started:.1f} s")
    summary: Dict[Tuple[str, str], Dict[str, float]] = {}
    for (variant, route), results in rounds.items():
        base = rounds[(BASELINE, route)]
        raw = rounds[("raw_pyinstrument", route)]
        entry: Dict[str, Any] = {key: statistics.median(r[key] for r in results) for key in ("rps", "p50_ms", "p99_ms")}
        entry["phase"], entry["route"] = WINDOW_PHASES[0 if framework == "flask" else 1], route
        entry["errors"] = sum(r.get("errors", 0.0) for r in results)
        costs = [b["rps"] / r["rps"] for r, b in zip(results, base)]
        entry["cost"], entry["cost_min"], entry["cost_max"] = statistics.median(costs), min(costs), max(costs)
        entry["p50_ratio"] = statistics.median(r["p50_ms"] / b["p50_ms"] for r, b in zip(results, base))
        entry["p99_ratio"] = statistics.median(r["p99_ms"] / b["p99_ms"] for r, b in zip(results, base))
        entry["cost_vs_raw"] = statistics.median(w["rps"] / r["rps"] for r, w in zip(results, raw))
        summary[(variant, route)] = entry
    return summary


# ============================================================================ memory
def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_child(requests: int, warmup: int, report_dir: str) -> None:
    """In a fresh process: the default perfmon Flask app serves ``warmup`` then ``requests`` fast
    requests in-process; prints one JSON line with VmRSS before/after and VmHWM (MB)."""
    bench_app = apps.build_flask("perfmon_default", report_dir, record_slow=False)
    driver = WsgiDriver()
    driver.run(bench_app.app, "fast", warmup)
    bench_app.flush()
    gc.collect()
    before = _proc_status_kb("VmRSS")
    started = time.monotonic()
    done = 0
    while done < requests:
        batch = min(1000, requests - done)
        driver.run(bench_app.app, "fast", batch)
        done += batch
    elapsed = time.monotonic() - started
    bench_app.flush()
    gc.collect()
    after = _proc_status_kb("VmRSS")
    print(json.dumps({"requests": requests, "warmup": warmup, "rss_before_mb": before / 1024,
                      "rss_after_mb": after / 1024, "growth_mb": (after - before) / 1024,
                      "peak_mb": _proc_status_kb("VmHWM") / 1024, "seconds": elapsed,
                      "policy": bench_app.policy_description, "stats": bench_app.perfmon.stats()}))
    bench_app.shutdown()


def run_rss_phase(tmp_root: str, args: argparse.Namespace) -> Dict[str, Any]:
    """Run :func:`rss_child` in a subprocess and return its JSON."""
    argv = [sys.executable, os.path.abspath(__file__), "--rss-child", "--rss-requests", str(args.rss_requests),
            "--warmup", str(args.rss_warmup), "--rss-report-dir", os.path.join(tmp_root, "rss")]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"RSS child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    log(f"memory: {args.rss_requests} requests in {time.monotonic() - started:.1f} s")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ============================================================================ output
def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def in_process_table(summary: Dict[Tuple[str, str], Dict[str, float]]) -> str:
    header = ["route"] + [f"{v}" for v in VARIANTS] + ["always / raw"]
    rows = []
    for route in ALL_ROUTES:
        if not any((variant, route) in summary for variant in VARIANTS):
            continue
        row = [route]
        for variant in VARIANTS:
            entry = summary.get((variant, route))
            if entry is None:
                row.append("-")
                continue
            ratio = entry.get("ratio")
            if ratio is None or variant == BASELINE:
                row.append(f"{entry['median_us']:.0f} µs")
            else:
                row.append(f"{entry['median_us']:.0f} µs · {ratio:.3f} ({entry['ratio_q1']:.2f}–{entry['ratio_q3']:.2f})")
        always = summary.get(("perfmon_always", route), {})
        row.append(f"{always['vs_raw']:.3f} ({always['vs_raw_q1']:.2f}–{always['vs_raw_q3']:.2f})"
                   if "vs_raw" in always else "-")
        rows.append(row)
    return _md_table(header, rows)


def server_table(summary: Dict[Tuple[str, str], Dict[str, float]]) -> str:
    header = ["route", "variant", "req/s", "cost × otel (range)", "p50 ms", "p50 × otel", "p99 ms", "p99 × otel", "errors"]
    rows = []
    for route in LOAD_ROUTES:
        for variant in VARIANTS:
            e = summary[(variant, route)]
            rows.append([route, variant, f"{e['rps']:.0f}", f"{e['cost']:.3f} ({e['cost_min']:.2f}–{e['cost_max']:.2f})", f"{e['p50_ms']:.2f}",
                         f"{e['p50_ratio']:.3f}", f"{e['p99_ms']:.2f}", f"{e['p99_ratio']:.3f}", f"{e['errors']:.0f}"])
    return _md_table(header, rows)


IN_PROCESS_PHASES = ("in-process flask", "in-process fastapi")
#: one server process per framework, variants interleaved request by request (run_mixed_phase)
INTERLEAVED_PHASES = ("gunicorn, interleaved (flask)", "uvicorn, interleaved (fastapi)")
#: one server per variant, throughput windows (run_server_phase)
WINDOW_PHASES = ("gunicorn (flask)", "uvicorn (fastapi)")


def goal_lines(results: Dict[str, Any]) -> List[Tuple[str, str, Optional[bool]]]:
    """(goal, measured value, met) for each goal figure of issue 6 that this run measured;
    ``met`` is None for the lines shown for information (the A/A control, throughput windows)."""
    goals: List[Tuple[str, str, Optional[bool]]] = []

    def per_route(phases: Sequence[str], variant: str, limit: Optional[float], label: str,
                  measured: Callable[[Dict[str, float]], Tuple[float, str]]) -> None:
        for phase in phases:
            summary = results.get(phase)
            for route in (LOAD_ROUTES if summary else ()):
                value, text = measured(summary[(variant, route)])
                goals.append((f"{label}, {phase}, {route}", text, None if limit is None else value <= limit))

    def ratio(key: str) -> Callable[[Dict[str, float]], Tuple[float, str]]:
        return lambda e: (e[key], f"{e[key]:.3f} (quartiles over rounds {e[key + '_q1']:.3f}–{e[key + '_q3']:.3f})")

    both = IN_PROCESS_PHASES + INTERLEAVED_PHASES
    per_route(both, "perfmon_default", GOAL_DEFAULT_RATIO, f"default ≤ {GOAL_DEFAULT_RATIO} × otel", ratio("ratio"))
    per_route(both, "perfmon_always", GOAL_ALWAYS_VS_RAW, f"always ≤ {GOAL_ALWAYS_VS_RAW} × raw pyinstrument",
              ratio("vs_raw"))
    per_route(both, "otel_b", None, "A/A control: otel_b ÷ otel (identical apps; shows the run's precision)",
              ratio("ratio"))
    per_route(WINDOW_PHASES, "perfmon_default", None, "throughput windows: otel req/s ÷ default req/s",
              lambda e: (e["cost"], f"{e['cost']:.3f} (range {e['cost_min']:.3f}–{e['cost_max']:.3f}; "
                                    f"A/A otel_b {results[e['phase']][('otel_b', e['route'])]['cost']:.3f})"))
    slow = results.get("slow checks") or []
    if slow:
        total = sum(c["spans"] for c in slow)
        ok = sum(c["with_call_tree"] for c in slow)
        goals.append(("every slow request has a report with a call tree", f"{ok}/{total}", total > 0 and ok == total))
    rss = results.get("memory")
    if rss:
        goals.append((f"RSS growth over {rss['requests']:,} requests ≤ {GOAL_RSS_GROWTH_MB:.0f} MB",
                      f"{rss['growth_mb']:.1f} MB (peak {rss['peak_mb']:.1f} MB)", rss["growth_mb"] <= GOAL_RSS_GROWTH_MB))
    return goals


def setup_lines(default_policy: str, args: argparse.Namespace) -> List[str]:
    """The "Setup" section of the results: what was run, how, and how to read the cells."""
    return [
        f"- otel-perfmon default profile_policy at run time: **{default_policy}**.",
        f"- Variants: {', '.join(VARIANTS)}. `otel` = SDK TracerProvider + BatchSpanProcessor + a null "
        "exporter + OTel's Flask/FastAPI instrumentor; every ratio is against it, measured in the same run. "
        "`otel_b` is an identical second `otel` app: the A/A control, whose ratio shows the run's precision.",
        f"- perfmon variants: in-process, threshold_seconds={apps.DEFAULT_THRESHOLD_SECONDS} and the slow route "
        f"takes ~{(apps.SLOW_CPU_SECONDS + apps.SLOW_SLEEP_SECONDS) * 1000:.0f} ms, so the bench stays short; "
        "the servers use the package default (1 s; the slow route is not loaded). Other settings are the "
        "package defaults (report_dir in a temp dir).",
        "- Routes: fast ≈ 0.3 ms of bytecode, calls = 20,000 small Python calls, io = 2 ms sleep, "
        "slow ≈ 40 ms of calls + 40 ms sleep.",
        f"- In-process: {args.rounds} rounds; in each, {args.requests} turns per route in which every variant "
        f"serves one request, in a fresh random order per turn ({args.slow_requests} slow request per variant "
        f"and round), after {args.warmup} warm-up requests. Cells: median latency · its ratio to otel's median "
        "(all rounds pooled) with, in parentheses, the quartiles of the per-round ratios. `always / raw` is "
        "perfmon_always against raw_pyinstrument the same way. Every variant's span exporter keeps the slow "
        "route's spans (on the BatchSpanProcessor's thread) for the call-tree check.",
        f"- Under load, interleaved (the goal figures): one server process (gunicorn -w 1 sync / uvicorn) hosts "
        f"every variant under /<variant>/; `wrk -t1 -c1` with a Lua script requests them in shuffled turns, "
        f"{args.mixed_rounds} rounds of {args.mixed_seconds:g} s per route; each request is timed inside the "
        "server. Cells as in-process.",
        f"- Under load, throughput windows (information): one server per variant, {args.load_rounds} interleaved "
        f"rounds of {args.load_seconds:g} s per variant and route, `wrk -t1 -c4 --latency` (or the Python "
        f"client), after a {args.load_warmup_seconds:g} s warm-up burst; medians over rounds. `cost × otel` = "
        "otel req/s ÷ variant req/s (> 1 is slower), with its range over rounds; p50/p99 ratios are variant ÷ "
        "otel. Separate processes and seconds-long windows make these swing by ±10–20 % on a shared VM (see "
        "otel_b). The slow route is not loaded; its reports are checked in-process.",
    ]


def render(results: Dict[str, Any], machine: Dict[str, str], args: argparse.Namespace, elapsed: float) -> str:
    """The whole result as markdown (printed and written to ``--output``)."""
    out: List[str] = []
    title = "otel-perfmon overhead benchmark" + (" (quick smoke run: too short to judge)" if args.quick else "")
    out += [f"# {title}", "",
            f"Run `{' '.join(results['command'])}` at {results['date']} in {elapsed:.0f} s.", ""]
    out += ["## Machine", ""] + [f"- {k}: {v}" for k, v in machine.items()] + [""]
    out += ["## Setup", ""] + setup_lines(results["default_policy"], args) + [""]
    for phase in IN_PROCESS_PHASES:
        if results.get(phase):
            out += [f"## {phase.capitalize()} (median latency, ratio against otel)", "",
                    in_process_table(results[phase]), ""]
    for phase in INTERLEAVED_PHASES:
        if results.get(phase):
            out += [f"## Under load, {phase} (server-side median latency, ratio against otel)", "",
                    in_process_table(results[phase]), ""]
    for phase in WINDOW_PHASES:
        if results.get(phase):
            out += [f"## Under load, throughput windows: {phase}", "", server_table(results[phase]), ""]
    out += ["## Slow requests", ""]
    for check in results.get("slow checks") or []:
        modes = ", ".join(f"{k}: {v}" for k, v in sorted(check["modes"].items())) or "-"
        out.append(f"- {check['label']}: {check['with_call_tree']}/{check['spans']} slow spans link to a report "
                   f"with a call tree ({len(check['report_ids'])} distinct reports; profile.mode {modes})")
        out += [f"  - MISS: {failure}" for failure in check["failures"][:10]]
    out.append("")
    if results.get("perfmon stats"):
        out += ["## perfmon stats() after the in-process runs (warm-up included)", ""]
        for label, policy, stats in results["perfmon stats"]:
            shown = ", ".join(f"{k}={v}" for k, v in stats.items())
            out.append(f"- {label} (profile_policy {policy}): {shown}")
        out.append("")
    rss = results.get("memory")
    if rss:
        out += ["## Memory (perfmon_default, Flask in-process, fast route, fresh process)", "",
                f"- VmRSS after {rss['warmup']:,} warm-up requests: {rss['rss_before_mb']:.1f} MB; after "
                f"{rss['requests']:,} more: {rss['rss_after_mb']:.1f} MB; growth {rss['growth_mb']:.1f} MB; "
                f"peak (VmHWM) {rss['peak_mb']:.1f} MB; {rss['requests'] / rss['seconds']:.0f} req/s; "
                f"policy {rss['policy']}; stats {json.dumps(rss['stats'])}", ""]
    out += ["## Goals", ""]
    for goal, value, met in goal_lines(results):
        out.append(f"- {'info' if met is None else 'PASS' if met else 'MISS'}  {goal}: {value}")
    return "\n".join(out) + "\n"


# ============================================================================ main
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short smoke run (< 60 s), noisy figures")
    parser.add_argument("--no-servers", action="store_true", help="skip gunicorn/uvicorn under load")
    parser.add_argument("--no-fastapi", action="store_true", help="skip FastAPI (in-process and uvicorn)")
    parser.add_argument("--no-rss", action="store_true", help="skip the memory measurement")
    parser.add_argument("--rounds", type=int, help="in-process rounds (default 10, quick 3)")
    parser.add_argument("--requests", type=int, help="in-process requests per variant, route and round, in turns (default 150, quick 10)")
    parser.add_argument("--slow-requests", type=int, help="slow requests per variant and round (default 1)")
    parser.add_argument("--warmup", type=int, help="warm-up requests per variant and route (default 200, quick 20)")
    parser.add_argument("--mixed-rounds", type=int, help="rounds of the interleaved one-server run (default 3, quick 1)")
    parser.add_argument("--mixed-seconds", type=float, help="seconds per route and round of the interleaved run (default 6, quick 1)")
    parser.add_argument("--load-rounds", type=int, help="rounds under load (default 3, quick 1)")
    parser.add_argument("--load-seconds", type=float, help="seconds per variant, route and round under load (default 2, quick 1)")
    parser.add_argument("--load-warmup-seconds", type=float, help="warm-up burst (Python client) per variant and route, s; 0 skips it (default 0.5, quick 0)")
    parser.add_argument("--rss-requests", type=int, help="requests of the memory run (default 100000, quick 3000)")
    parser.add_argument("--rss-warmup", type=int, help="warm-up requests of the memory run (default 2000, quick 300)")
    parser.add_argument("--dedup-off-requests", type=int, help="slow requests of the dedup-off check (default 8, quick 3)")
    parser.add_argument("--output", help="markdown results file (default bench/results.md; none for --quick)")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir with reports and server logs")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rss-report-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {"rounds": (10, 3), "requests": (150, 10), "slow_requests": (1, 1), "warmup": (200, 20),
                "mixed_rounds": (3, 1), "mixed_seconds": (6.0, 1.0), "load_rounds": (3, 1), "load_seconds": (2.0, 1.0), "load_warmup_seconds": (0.5, 0.0),
                "rss_requests": (100000, 3000), "rss_warmup": (2000, 300), "dedup_off_requests": (8, 3)}
    for name, (full, short) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    if args.output is None and not quick and not args.rss_child:
        args.output = os.path.join(HERE, "results.md")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.rss_child:
        rss_child(args.rss_requests, args.warmup, args.rss_report_dir)
        return 0
    started = time.monotonic()
    machine = machine_description()
    tmp_root = tempfile.mkdtemp(prefix="otel-perfmon-bench-")
    results: Dict[str, Any] = {"command": [os.path.relpath(sys.argv[0], ROOT)] + list(sys.argv[1:]),
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "default_policy": default_policy_name(), "slow checks": [], "perfmon stats": []}
    log(f"default profile_policy: {results['default_policy']}; temp dir {tmp_root}")
    frameworks = ["flask"] if args.no_fastapi else ["flask", "fastapi"]
    try:
        for framework in frameworks:
            summary, bench_apps = run_in_process_phase(framework, tmp_root, args)
            results[f"in-process {framework}"] = summary
            for variant in apps.PERFMON_VARIANTS:
                stats = bench_apps[variant].perfmon.stats()
                results["perfmon stats"].append((f"in-process {framework} {variant}",
                                                 bench_apps[variant].policy_description, stats))
                check = check_slow_spans(bench_apps[variant])
                check["label"] = f"in-process {framework} {variant} (dedup on, default window)"
                results["slow checks"].append(check)
            for bench_app in bench_apps.values():
                bench_app.shutdown()
            check = dedup_off_check(framework, tmp_root, args.dedup_off_requests)
            check["label"] = f"in-process {framework} perfmon_default with dedup_window_seconds=0"
            results["slow checks"].append(check)
        if not args.no_servers:
            for index, framework in enumerate(("flask", "fastapi")):
                if framework in frameworks:
                    results[INTERLEAVED_PHASES[index]] = run_mixed_phase(framework, tmp_root, args)
                    results[WINDOW_PHASES[index]] = run_server_phase(framework, tmp_root, args)
        if not args.no_rss:
            results["memory"] = run_rss_phase(tmp_root, args)
    finally:
        if args.keep_tmp:
            log(f"kept {tmp_root}")
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)
    machine["load average at end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    text = render(results, machine, args, time.monotonic() - started)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
        log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
