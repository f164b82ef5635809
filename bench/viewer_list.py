"""Benchmark: the report viewer listing a directory of 10,000 reports, and the same reports in a bucket.

    .venv/bin/python -m bench.viewer_list [--reports 10000] [--dir DIR] [--requests 30]
                                          [--s3-reports N | --no-s3]

Writes N real report files (``write_report_files``: JSON with a ~4 KB text call tree, HTML,
Markdown; kept in --dir for reruns), then measures in-process (index cold build, rescan,
queries) and over HTTP against a real ``otel-perfmon serve`` subprocess (list pages, sorted,
filtered, deep page, JSON API).

Object store (``s3`` rows, unless ``--no-s3``): a real S3 API server on loopback (moto's server
mode, ``moto_server -H 127.0.0.1 -p <free port>``, fake credentials and ``AWS_ENDPOINT_URL`` in
the environment), a bucket holding the same reports (``--s3-reports``, default all of them;
every file of each, uploaded concurrently with s3fs ``pipe``), then ``report_dir="s3://bench/
reports"``: the viewer's first scan (one listing, every report downloaded into its local mirror,
then indexed: :mod:`otel_perfmon.storage.mirror`), the syncs after it (each one a bucket
listing; the viewer runs them on a background thread, so they bound how stale its listing can
be, not how long a page takes), a refresh on the interval while such a sync runs (what a
request pays), the same queries, and the same HTTP rows against ``otel-perfmon serve
--report-dir s3://…``. Queries, that refresh and the HTTP rows have the local budgets; the first
scan and the syncs have their own (``S3_BUDGET_MS``). The mirror lives under a temporary
``XDG_CACHE_HOME``, so every scan called "first" starts from an empty mirror.

Prints each timing beside its budget; exits 1 if any budget is exceeded. ``make bench-viewer``
runs it with the defaults.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from typing import Callable, Dict, List, Optional, Tuple

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
#: Budgets of the object-store rows that list the bucket (ms). The first scan downloads every
#: file of every report (30,000 objects for 10,000 reports) from a single-process S3 server on the
#: same 2 cores; each sync after it is one listing of the bucket (30 pages of 1,000 keys: 14.4 s
#: from moto's server in the 2026-12-02 run), run in the background by the viewer: its budget is
#: how stale the listing may be.
S3_BUDGET_MS: Dict[str, float] = {
    "s3 index: first scan (list bucket, download all, index)": 300000.0,
    "s3 sync (background): bucket unchanged (1 listing)": 30000.0,
    "s3 sync (background): 10 new reports (listing + 10 downloads)": 30000.0,
    "s3 index: refresh on the interval while a sync runs (mirror scan)":
        BUDGET_MS["index: full rescan, nothing changed (stat each file)"],
}
S3_BUCKET = "bench-viewer"
S3_URL = f"s3://{S3_BUCKET}/reports"
ROUTES = [f"/r/{i}/<int:id>" for i in range(40)]


def budget_of(name: str) -> float:
    """A row's budget: its own, else (an ``s3 …`` row after the first scan) the local row's."""
    if name in BUDGET_MS or name in S3_BUDGET_MS:
        return BUDGET_MS.get(name) or S3_BUDGET_MS[name]
    return BUDGET_MS[name[len("s3 "):]]


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


def over_http(report_dir: str, requests: int, prefix: str = "",
              env: Optional[Dict[str, str]] = None) -> List[Tuple[str, float]]:
    """The HTTP rows against ``otel-perfmon serve --report-dir report_dir`` (names prefixed
    with ``prefix``; ``env``: the server's environment, default this one's)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    exe = os.path.join(os.path.dirname(sys.executable), "otel-perfmon")
    log_path = tempfile.mktemp(prefix="otel-perfmon-viewer-", suffix=".log")
    started = time.perf_counter()
    server = Server("otel-perfmon serve", [exe, "serve", "--report-dir", report_dir, "--port", str(port),
                                           "--log-level", "warning"], base + "/healthz", log_path, env=env)
    try:
        server.wait_ready(timeout_seconds=600)
        print(f"{prefix}server up (index built) after {time.perf_counter() - started:.2f} s")
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
            results.append((prefix + name, statistics.median(samples)))
            worst = max(worst, max(samples))
        results.append((prefix + "http max: any list request (includes periodic rescans)", worst))
        return results
    finally:
        server.stop()
        os.unlink(log_path)


# ---------------------------------------------------------------------------- object store
def start_s3_server(log_dir: str) -> Tuple[Server, Dict[str, str]]:
    """moto's S3 server on a free loopback port; returns it and the environment (fake
    credentials, ``AWS_ENDPOINT_URL``) for this process and the viewer subprocess."""
    port = free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    server = Server("moto_server", [exe, "-H", "127.0.0.1", "-p", str(port)], f"http://127.0.0.1:{port}/",
                    os.path.join(log_dir, "moto.log"))
    server.wait_ready(timeout_seconds=60)
    env = {"AWS_ACCESS_KEY_ID": "bench-fake-key", "AWS_SECRET_ACCESS_KEY": "bench-fake-secret",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    return server, env


def _s3_fs() -> object:
    import fsspec.core

    fs, _ = fsspec.core.url_to_fs(S3_URL, skip_instance_cache=True)
    return fs


def upload_reports(report_dir: str, count: int, chunk: int = 600) -> int:
    """Upload every file of the first ``count`` reports of ``report_dir`` to :data:`S3_URL`,
    concurrently (s3fs ``pipe`` of a batch of paths); returns the number of objects."""
    fs = _s3_fs()
    fs.mkdir(S3_BUCKET)  # type: ignore[attr-defined]
    ids = sorted(n[:-5] for n in os.listdir(report_dir) if n.endswith(".json"))[:count]
    wanted = set(ids)
    names = sorted(n for n in os.listdir(report_dir) if n.split(".", 1)[0] in wanted)
    root = S3_URL[len("s3://"):]
    for start in range(0, len(names), chunk):
        batch = {}
        for name in names[start:start + chunk]:
            with open(os.path.join(report_dir, name), "rb") as handle:
                batch[f"{root}/{name}"] = handle.read()
        fs.pipe(batch)  # type: ignore[attr-defined]
    return len(names)


def s3_in_process() -> List[Tuple[str, float]]:
    """First scan of :data:`S3_URL` into an empty mirror, refreshes, queries (``s3`` rows)."""
    from otel_perfmon.storage import open_report_store
    from otel_perfmon.viewer.index import remote_index_dir

    results = []
    directory, sync = remote_index_dir(S3_URL)
    index = ReportIndex(directory, refresh_interval_seconds=3600)
    index.attach_source(sync)
    started = time.perf_counter()
    index.refresh(force=True)
    results.append(("s3 index: first scan (list bucket, download all, index)", (time.perf_counter() - started) * 1000))
    print(f"s3: indexed {len(index)} reports from {S3_URL} (mirror {directory})")
    time.sleep(2.1)  # let the mirror directory's mtime settle, as in the local case
    index.refresh(force=True)
    # a forced refresh syncs inline: its time is the sync's
    results.append(("s3 sync (background): bucket unchanged (1 listing)",
                    timed(lambda: index.refresh(force=True), 3)))
    index.refresh_interval_seconds = 0  # what a request does on the interval: start the sync, scan the mirror
    index._dir_mtime_ns = None  # a full rescan of the mirror, as after a sync that changed it
    started = time.perf_counter()
    index.refresh()
    results.append(("s3 index: refresh on the interval while a sync runs (mirror scan)",
                    (time.perf_counter() - started) * 1000))
    index.wait_for_sync(600)
    index.refresh_interval_seconds = 3600
    store = open_report_store(S3_URL)
    scratch = tempfile.mkdtemp(prefix="otel-perfmon-bench-s3-new-")
    extra = [make(scratch, 10_000_000 + k, time.time()) for k in range(10)]
    for report in extra:
        write_report_files(report)
        files = []
        for path in report.files:
            with open(path, encoding="utf-8") as handle:
                files.append((path.rsplit("/", 1)[1].split(".", 1)[1], handle.read()))
        store.write_report(report.report_id, files)
    shutil.rmtree(scratch, ignore_errors=True)
    started = time.perf_counter()
    index.refresh(force=True)
    results.append(("s3 sync (background): 10 new reports (listing + 10 downloads)",
                    (time.perf_counter() - started) * 1000))
    for report in extra:
        store.delete_report(report.report_id)
    index.refresh(force=True)
    results.append(("s3 query: newest first, page 1", timed(lambda: index.query(per_page=50))))
    results.append(("s3 query: sort by duration, page 1", timed(lambda: index.query(sort="duration", per_page=50))))
    since = time.time() - 5000 * 60
    flt = ReportFilter(route="/r/17/*", method="POST", since=since)
    results.append(("s3 query: route + method + date filter", timed(lambda: index.query(flt, per_page=50))))
    return results


def object_store(report_dir: str, count: int, requests: int) -> List[Tuple[str, float]]:
    """The ``s3`` rows: moto server, upload, in-process first scan and queries, then HTTP against
    ``otel-perfmon serve --report-dir s3://…`` (its own empty mirror)."""
    work = tempfile.mkdtemp(prefix="otel-perfmon-bench-s3-")
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                            "AWS_ENDPOINT_URL", "XDG_CACHE_HOME")}
    server = None
    try:
        server, env = start_s3_server(work)
        os.environ.update(env, XDG_CACHE_HOME=os.path.join(work, "cache-in-process"))
        started = time.perf_counter()
        objects = upload_reports(report_dir, count)
        print(f"s3: uploaded {objects} objects ({count} reports) to {S3_URL} on moto_server "
              f"{env['AWS_ENDPOINT_URL']} in {time.perf_counter() - started:.1f} s")
        results = s3_in_process()
        server_env = dict(os.environ, XDG_CACHE_HOME=os.path.join(work, "cache-serve"))
        return results + over_http(S3_URL, requests, prefix="s3 ", env=server_env)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "otel-perfmon-bench-viewer"))
    parser.add_argument("--requests", type=int, default=30, help="requests per HTTP case")
    parser.add_argument("--s3-reports", type=int, help="reports uploaded to the bucket (default --reports)")
    parser.add_argument("--no-s3", action="store_true", help="skip the object-store rows")
    args = parser.parse_args()
    ensure_reports(args.dir, args.reports)
    results = in_process(args.dir) + over_http(args.dir, args.requests)
    if not args.no_s3:
        results += object_store(args.dir, args.s3_reports or args.reports, args.requests)
    failed = 0
    print(f"\n{'case':58} {'ms':>9} {'budget':>9}")
    for name, ms in results:
        budget = budget_of(name)
        ok = ms <= budget
        failed += not ok
        print(f"{name:58} {ms:9.1f} {budget:9.0f}  {'ok' if ok else 'OVER BUDGET'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
