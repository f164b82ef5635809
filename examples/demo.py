"""``make demo``: run the Flask example under gunicorn, send real requests, print the reports.

Starts gunicorn (2 workers) on a free loopback port with a 0.5 s threshold, requests every
route, waits for the reports, and prints for each one its file, slow route, duration and the
trace/span IDs of the slow span that links to it (read from the exported spans).
"""

import glob
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = ["/fast", "/cpu", "/io", "/items/2", "/items/7?q=shoes", "/items/9", "/health"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out waiting for {what}")


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except OSError:
        return None


def exported_spans(span_dir: str):
    spans = []
    for path in glob.glob(os.path.join(span_dir, "spans-*.jsonl")):
        with open(path, encoding="utf-8") as handle:
            spans.extend(json.loads(line) for line in handle if line.strip())
    return spans


def main() -> int:
    work = tempfile.mkdtemp(prefix="perfmon-demo-")
    report_dir, span_dir = os.path.join(work, "reports"), os.path.join(work, "spans")
    port = free_port()
    env = dict(os.environ, OTEL_PERFMON_THRESHOLD_SECONDS="0.5", EXAMPLE_SLOW_SECONDS="0.8",
               OTEL_PERFMON_REPORT_DIR=report_dir, EXAMPLE_SPAN_DIR=span_dir)
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    print(f"demo: starting gunicorn (2 workers) on 127.0.0.1:{port}, reports in {report_dir}")
    server = subprocess.Popen([gunicorn, "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", HERE,
                               "--log-level", "warning", "flask_app:app"], env=env)
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{port}/health") == 200, 30, "gunicorn to start")
        for path in PATHS:
            started = time.monotonic()
            status = get(f"http://127.0.0.1:{port}{path}")
            print(f"demo: GET {path:18} -> {status} in {1000 * (time.monotonic() - started):7.1f} ms")
        expected = 3  # /cpu, /io and /items/<int:item_id> (7 and 9 share one report: same route)
        wait_for(lambda: len(glob.glob(os.path.join(report_dir, "*.json"))) >= expected, 30, "the reports")
    finally:
        server.terminate()
        server.wait(timeout=30)
    links = {}
    for span in exported_spans(span_dir):
        report_id = span.get("attributes", {}).get("perfmon.report.id")
        if report_id:
            links.setdefault(report_id, []).append((span["context"]["trace_id"], span["context"]["span_id"]))
    print()
    for path in sorted(glob.glob(os.path.join(report_dir, "*.json"))):
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
        print(f"report   {path}")
        print(f"  route  {report['http']['method']} {report['http']['route']}  "
              f"{report['duration_ms']:.1f} ms (threshold {report['threshold_ms']:.0f} ms)")
        print(f"  html   {path[:-5]}.html")
        hot = report["profile"]["hotspots"][:1]
        if hot:
            print(f"  top    {hot[0]['function']} ({hot[0]['file']}:{hot[0]['line']}) {hot[0]['self_ms']:.1f} ms self")
        for trace_id, span_id in links.get(report["report_id"], []):
            print(f"  span   trace_id={trace_id[2:] if trace_id.startswith('0x') else trace_id} "
                  f"span_id={span_id[2:] if span_id.startswith('0x') else span_id}")
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
