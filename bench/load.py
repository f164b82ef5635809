"""Under-load section: real gunicorn (Flask) / uvicorn (FastAPI) servers on loopback.

* **Interleaved** (the goal figures): one server process hosting every variant under
  ``/<variant>/``, driven by ``wrk -t1 -c1`` with a Lua script that requests the variants in
  shuffled turns (or a sequential Python client); every request is timed inside the server
  (``bench.apps.MixedWsgi`` / ``MixedAsgi``), so the summary is the in-process one.
* **Throughput windows** (information): one server per variant under
  ``wrk -t1 -c4 --latency``, ``--load-rounds`` interleaved windows; requests/s, p50, p99.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from http.client import HTTPConnection
from typing import Any, Dict, List, Optional, Sequence, Tuple

from bench import apps
from bench.common import BASELINE, ROOT, Server, Timings, free_port, log, rotated, summarize_turns, turns
from bench.inprocess import LOAD_ROUTES

#: one server process per framework, variants interleaved request by request (run_mixed_phase)
INTERLEAVED_PHASES = {"flask": "gunicorn, interleaved (flask)", "fastapi": "uvicorn, interleaved (fastapi)"}
#: one server per variant, throughput windows (run_server_phase)
WINDOW_PHASES = {"flask": "gunicorn (flask)", "fastapi": "uvicorn (fastapi)"}


class BenchServer(Server):
    """One gunicorn (``-w 1`` sync) or uvicorn process serving ``variant`` ("mixed": all of
    them under ``/<variant>/``) on 127.0.0.1:<port>."""

    def __init__(self, framework: str, variant: str, report_dir: str, log_path: str) -> None:
        self.port = free_port()
        bin_dir = os.path.dirname(sys.executable)
        if framework == "flask":
            argv = [os.path.join(bin_dir, "gunicorn"), "-w", "1", "-k", "sync", "-b", f"127.0.0.1:{self.port}",
                    "--pythonpath", ROOT, "--log-level", "warning", "--graceful-timeout", "5",
                    "bench.apps:flask_app"]
        else:
            argv = [os.path.join(bin_dir, "uvicorn"), "--app-dir", ROOT, "--host", "127.0.0.1",
                    "--port", str(self.port), "--log-level", "warning", "--no-access-log", "bench.apps:fastapi_app"]
        # the package's default threshold (1 s): the slow route is not loaded, and a short threshold
        # would wake the watchdog 20x more often than in production. One hash seed for all
        # servers, so identical code lays out its dicts identically in every process.
        env = dict(os.environ, BENCH_VARIANT=variant, BENCH_REPORT_DIR=report_dir, BENCH_THRESHOLD_SECONDS="",
                   PYTHONHASHSEED="0")
        super().__init__(f"{framework}/{variant}", argv, self.url("otel/health" if variant == "mixed" else "health"),
                         log_path, env)

    def url(self, route: str) -> str:
        return f"http://127.0.0.1:{self.port}/{route}"


# ============================================================================ load generators
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


def wrk(options: Sequence[str], url: str, seconds: float) -> Dict[str, float]:
    """``wrk -t1 <options> -d<seconds>s url`` (s, rounded, at least 1), parsed."""
    duration = max(1, int(round(seconds)))
    proc = subprocess.run(["wrk", "-t1", *options, f"-d{duration}s", url], capture_output=True, text=True,
                          timeout=duration + 60)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr}")
    parsed = parse_wrk(proc.stdout)
    parsed["output"] = proc.stdout  # type: ignore[assignment]
    return parsed


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


_WRK_ROTATE_LUA = """-- one request per path in turn, on every connection (bench/load.py)
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
        result = wrk(["-c1", "-s", script_path], base_url, seconds)
        if result["errors"]:
            raise RuntimeError(f"{result['errors']:.0f} failed requests under rotating load:\n{result['output']}")
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


# ============================================================================ phases
def run_mixed_phase(framework: str, tmp_root: str, args: argparse.Namespace) -> Dict[Tuple[str, str], Dict[str, float]]:
    """One server process hosting every variant, under a single-connection saturating load that
    requests the variants in shuffled turns; each request is timed inside the server. The same
    summary as in-process, for ``args.mixed_rounds`` rounds of ``args.mixed_seconds`` (s) per route."""
    server = BenchServer(framework, "mixed", os.path.join(tmp_root, f"mixed-{framework}"),
                         os.path.join(tmp_root, f"mixed-{framework}.log"))
    script = os.path.join(tmp_root, f"rotate-{framework}.lua")
    started = time.monotonic()

    def collect() -> Dict[str, List[int]]:
        with urllib.request.urlopen(server.url(apps.TIMINGS_PATH.lstrip("/")), timeout=30) as response:
            return json.load(response)

    rounds: Timings = {(v, r): [] for v in apps.VARIANTS for r in LOAD_ROUTES}
    try:
        server.wait_ready()
        for route in LOAD_ROUTES:  # warm-up: imports, caches, the adaptive policy's learning
            rotating_load(server.url(""), [f"/{v}/{route}" for v in apps.VARIANTS],
                          max(1.0, args.load_warmup_seconds * 2), script)
        collect()
        for round_index in range(args.mixed_rounds):
            for route in LOAD_ROUTES:  # shuffled turns, as in-process; wrk cycles through them
                paths = [f"/{v}/{route}" for v in turns(apps.VARIANTS, 500, seed=round_index)]
                rotating_load(server.url(""), paths, args.mixed_seconds, script)
                timings = collect()
                for variant in apps.VARIANTS:
                    rounds[(variant, route)].append(timings[variant])
    finally:
        server.stop()
    log(f"mixed server {framework}: {args.mixed_rounds} rounds in {time.monotonic() - started:.1f} s")
    return summarize_turns(rounds)


def run_server_phase(framework: str, tmp_root: str, args: argparse.Namespace) -> Dict[Tuple[str, str], Dict[str, Any]]:
    """Start one server per variant, warm each up, then ``args.load_rounds`` interleaved rounds of
    ``args.load_seconds`` (s) per (route, variant). Returns the summary per (variant, route)."""
    if shutil.which("wrk"):
        load = lambda url, seconds: wrk(["-c4", "--latency"], url, seconds)  # noqa: E731
    else:
        load = python_load
    servers: Dict[str, BenchServer] = {}
    started = time.monotonic()
    try:
        for variant in apps.VARIANTS:
            name = f"server-{framework}-{variant}"
            servers[variant] = BenchServer(framework, variant, os.path.join(tmp_root, name),
                                           os.path.join(tmp_root, f"{name}.log"))
        for server in servers.values():
            server.wait_ready()
        if args.load_warmup_seconds > 0:  # short bursts: imports, caches, the adaptive policy's learning
            for variant in apps.VARIANTS:
                for route in LOAD_ROUTES:
                    python_load(servers[variant].url(route), args.load_warmup_seconds, max_requests=2000)
        rounds: Dict[Tuple[str, str], List[Dict[str, float]]] = {(v, r): [] for v in apps.VARIANTS for r in LOAD_ROUTES}
        for round_index in range(args.load_rounds):
            for route in LOAD_ROUTES:
                for variant in rotated(apps.VARIANTS, round_index):
                    rounds[(variant, route)].append(load(servers[variant].url(route), args.load_seconds))
    finally:
        for server in servers.values():
            server.stop()
    log(f"servers {framework}: {args.load_rounds} rounds in {time.monotonic() - started:.1f} s")
    summary: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for (variant, route), windows in rounds.items():
        base = rounds[(BASELINE, route)]
        raw = rounds[("raw_pyinstrument", route)]
        entry: Dict[str, Any] = {key: statistics.median(w[key] for w in windows) for key in ("rps", "p50_ms", "p99_ms")}
        entry["phase"], entry["route"] = WINDOW_PHASES[framework], route
        entry["errors"] = sum(w.get("errors", 0.0) for w in windows)
        costs = [b["rps"] / w["rps"] for w, b in zip(windows, base)]
        entry["cost"], entry["cost_min"], entry["cost_max"] = statistics.median(costs), min(costs), max(costs)
        entry["p50_ratio"] = statistics.median(w["p50_ms"] / b["p50_ms"] for w, b in zip(windows, base))
        entry["p99_ratio"] = statistics.median(w["p99_ms"] / b["p99_ms"] for w, b in zip(windows, base))
        entry["cost_vs_raw"] = statistics.median(r["rps"] / w["rps"] for w, r in zip(windows, raw))
        summary[(variant, route)] = entry
    return summary


def run(args: argparse.Namespace, tmp_root: str, results: Dict[str, Any]) -> None:
    """The interleaved run, then the throughput windows, per framework (Flask first)."""
    for framework in args.frameworks:
        results[INTERLEAVED_PHASES[framework]] = run_mixed_phase(framework, tmp_root, args)
        results[WINDOW_PHASES[framework]] = run_server_phase(framework, tmp_root, args)
