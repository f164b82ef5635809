"""Benchmark: the report viewer listing a directory of 10,000 reports.

    .venv/bin/python -m bench.viewer_list [--reports 10000] [--dir DIR] [--requests 30]

Writes N real report files (``write_report_files``: JSON with a ~4 KB text call tree, HTML,
Markdown; kept in --dir for reruns), then measures in-process (index cold build, rescan,
queries) and over HTTP against a real ``otel-perfmon serve`` subprocess (list pages, sorted,
filtered, deep page, JSON API). Prints each timing beside its budget; exits 1 if any budget is
exceeded. ``make bench-viewer`` runs it with the defaults.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from typing import Callable, Dict, List, Tuple

if __package__ in (None, ""):  # run as bench/viewer_list.py
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from bench.common import Server, free_port  # noqa: E402
from otel_perfmon.dedup import fingerprint  # noqa: E402
from otel_perfmon.report.model import Report  # noqa: E402
from otel_perfmon.report.render import write_report_files  # noqa: E402
from otel_perfmon.viewer.index import ReportFilter, ReportIndex  # noqa: E402

#: Budgets in milliseconds (a 2-core VM shared with other work; generous but meaningful).
BUDGET_MS: Dict[str, float] = {
    "index: cold build (parse every JSON)": 8000.0,
    "index: refresh, directory unchanged (1 stat)": 5.0,
    "index: full rescan, nothing changed (stat each file)": 250.0,
    "index: rescan, 10 new reports": 300.0,
    "query: newest first, page 1": 20.0,
    "query: sort by duration, page 1": 60.0,
    "query: route + method + date filter": 40.0,
    "http p50: GET /reports": 120.0,
    "http p50: GET /reports?sort=duration": 150.0,
    "http p50: GET /reports?route=/r/17/*&method=POST": 150.0,
    "http p50: GET /reports?page=150": 120.0,
    "http p50: GET /api/reports?per_page=100": 150.0,
    "http max: any list request (includes periodic rescans)": 600.0,
}
ROUTES = [f"/r/{i}/<int:id>" for i in range(40)]


def make(report_dir: str, i: int, start: float) -> Report:
    rng = random.Random(i)
    route, method, service = ROUTES[i % 40], ("GET", "POST", "PUT")[i % 3], ("shop", "billing", "search")[i % 3]
    tree = "\n".join(f"{'  ' * (d % 12)}{rng.random() * 900:.3f} fn_{rng.randrange(500)}  app/mod_{d}.py:{d * 7}"
                     for d in range(80))
    return Report(
        report_id=time.strftime("%Y%m%d-%H%M%S", time.gmtime(start)) + f"-{i:08x}",
        fingerprint=fingerprint(service, method, route), trace_id=f"{rng.getrandbits(128):032x}",
        span_id=f"{rng.getrandbits(64):016x}", service_name=service, span_name=f"{method} {route}", method=method,
        route=route, path=route.replace("<int:id>", str(i)), query="", status_code=200,
        duration_ms=1000.0 + rng.random() * 9000, threshold_ms=1000.0, start_time=_iso(start),
        end_time=_iso(start + 1),
        headers={"x-request-id": f"{i:x}", "user-agent": "bench", "authorization": "[REDACTED]"},
        interval_seconds=0.001, sample_count=900,
        hotspots=[{"function": f"fn_{k}", "file": "app/db.py", "line": k, "self_ms": 100.0, "percent": 10.0}
                  for k in range(10)],
        call_tree_text=tree, host={"hostname": "bench", "pid": 1, "python_version": "3.11"},
        report_dir=report_dir)


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".000000Z"


def ensure_reports(report_dir: str, count: int) -> None:
    os.makedirs(report_dir, mode=0o700, exist_ok=True)
    existing = sum(1 for n in os.listdir(report_dir) if n.endswith(".json"))
    if existing >= count:
        print(f"using {existing} existing reports in {report_dir}")
        return
    started = time.perf_counter()
    base = time.time() - count * 60
    for i in range(existing, count):
        write_report_files(make(report_dir, i, base + i * 60))
    print(f"wrote {count - existing} reports to {report_dir} in {time.perf_counter() - started:.1f} s")


def timed(fn: Callable[[], object], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def in_process(report_dir: str) -> List[Tuple[str, float]]:
    results = []
    index = ReportIndex(report_dir, refresh_interval_seconds=3600)
    started = time.perf_counter()
    index.refresh(force=True)
    results.append(("index: cold build (parse every JSON)", (time.perf_counter() - started) * 1000))
    print(f"indexed {len(index)} reports")
    time.sleep(2.1)  # let the directory mtime settle (see otel_perfmon.viewer.index)
    index.refresh(force=True)
    results.append(("index: refresh, directory unchanged (1 stat)", timed(lambda: index.refresh(force=True))))

    def full_rescan() -> None:
        index._dir_mtime_ns = None  # what a refresh does when the directory changed
        index.refresh(force=True)

    results.append(("index: full rescan, nothing changed (stat each file)", timed(full_rescan)))
    extra = [make(report_dir, 10_000_000 + k, time.time()) for k in range(10)]
    for report in extra:
        write_report_files(report)
    started = time.perf_counter()
    index.refresh(force=True)
    results.append(("index: rescan, 10 new reports", (time.perf_counter() - started) * 1000))
    for report in extra:
        for path in report.files:
            os.unlink(path)
    index.refresh(force=True)
    results.append(("query: newest first, page 1", timed(lambda: index.query(per_page=50))))
    results.append(("query: sort by duration, page 1", timed(lambda: index.query(sort="duration", per_page=50))))
    since = time.time() - 5000 * 60
    flt = ReportFilter(route="/r/17/*", method="POST", since=since)
    results.append(("query: route + method + date filter", timed(lambda: index.query(flt, per_page=50))))
    return results


def over_http(report_dir: str, requests: int) -> List[Tuple[str, float]]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    exe = os.path.join(os.path.dirname(sys.executable), "otel-perfmon")
    log_path = tempfile.mktemp(prefix="otel-perfmon-viewer-", suffix=".log")
    started = time.perf_counter()
    server = Server("otel-perfmon serve", [exe, "serve", "--report-dir", report_dir, "--port", str(port),
                                           "--log-level", "warning"], base + "/healthz", log_path)
    try:
        server.wait_ready(timeout_seconds=120)
        print(f"server up (index built) after {time.perf_counter() - started:.2f} s")
        paths = {"http p50: GET /reports": "/reports",
                 "http p50: GET /reports?sort=duration": "/reports?sort=duration",
                 "http p50: GET /reports?route=/r/17/*&method=POST": "/reports?route=/r/17/*&method=POST",
                 "http p50: GET /reports?page=150": "/reports?page=150",
                 "http p50: GET /api/reports?per_page=100": "/api/reports?per_page=100"}
        results, worst = [], 0.0
        for name, path in paths.items():
            samples = []
            for _ in range(requests):
                t0 = time.perf_counter()
                with urllib.request.urlopen(base + path, timeout=30) as response:
                    response.read()
                samples.append((time.perf_counter() - t0) * 1000)
                time.sleep(0.02)
            results.append((name, statistics.median(samples)))
            worst = max(worst, max(samples))
        results.append(("http max: any list request (includes periodic rescans)", worst))
        return results
    finally:
        server.stop()
        os.unlink(log_path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "otel-perfmon-bench-viewer"))
    parser.add_argument("--requests", type=int, default=30, help="requests per HTTP case")
    args = parser.parse_args()
    ensure_reports(args.dir, args.reports)
    results = in_process(args.dir) + over_http(args.dir, args.requests)
    failed = 0
    print(f"\n{'case':58} {'ms':>9} {'budget':>9}")
    for name, ms in results:
        budget = BUDGET_MS[name]
        ok = ms <= budget
        failed += not ok
        print(f"{name:58} {ms:9.1f} {budget:9.0f}  {'ok' if ok else 'OVER BUDGET'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
