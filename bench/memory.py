"""Memory section: a fresh process (``python -m bench.memory``) serves fast requests in-process
with the default perfmon variant; VmRSS after warm-up and at the end, and VmHWM (peak), in MB."""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, Optional, Sequence

from bench import apps
from bench.common import ROOT, log
from bench.inprocess import WsgiDriver


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(requests: int, warmup: int, report_dir: str) -> Dict[str, Any]:
    """In this process: the default perfmon Flask app serves ``warmup`` then ``requests`` fast
    requests in-process; returns VmRSS before/after and VmHWM (MB)."""
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
    result = {"requests": requests, "warmup": warmup, "rss_before_mb": before / 1024,
              "rss_after_mb": after / 1024, "growth_mb": (after - before) / 1024,
              "peak_mb": _proc_status_kb("VmHWM") / 1024, "seconds": elapsed,
              "policy": bench_app.policy_description, "stats": bench_app.perfmon.stats()}
    bench_app.shutdown()
    return result


def run(args: argparse.Namespace, tmp_root: str, results: Dict[str, Any]) -> None:
    """Run :func:`child` in a fresh interpreter; fills ``results["memory"]``."""
    argv = [sys.executable, "-m", "bench.memory", "--requests", str(args.rss_requests),
            "--warmup", str(args.rss_warmup), "--report-dir", os.path.join(tmp_root, "rss")]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"RSS child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    log(f"memory: {args.rss_requests} requests in {time.monotonic() - started:.1f} s")
    results["memory"] = json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--report-dir", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(child(args.requests, args.warmup, args.report_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
