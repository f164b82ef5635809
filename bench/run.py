#!/usr/bin/env python3
"""otel-perfmon overhead benchmark: ``make bench`` or ``python bench/run.py [--only SECTIONS]``.

Sections (modules of this package), run in this order; ``--only`` picks some of them:

* ``inprocess`` (:mod:`bench.inprocess`): each framework's variants called in-process, taking
  turns request by request in shuffled order, with an A/A control; slow-request checks.
* ``load`` (:mod:`bench.load`): one gunicorn / uvicorn process hosting every variant under a
  rotating ``wrk`` load (the goal figures), then one server per variant (throughput windows).
* ``memory`` (:mod:`bench.memory`): RSS of a fresh process serving many fast requests.
* ``quality`` (:mod:`bench.quality`): mode, coverage and culprit share of cold slow routes'
  call trees, default configuration against ``profile_policy="always"``.
* ``sampler`` (:mod:`bench.sampler_cost`): the stack sampler's CPU and pauses with 1-64
  concurrent open spans.
* ``frameworks`` (:mod:`bench.frameworks`): a Django request and a Celery task (``apply()``),
  perfmon_default against OTel alone, in-process, in shuffled turns with an A/A control.

Prints the results as markdown (goal lines last) and writes them to ``--output`` (a full run:
``bench/results.md``). The instruction counts (``python -m bench.instructions``), the request
path (``bench/request_path.py``) and the report viewer (``python -m bench.viewer_list``) run alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __package__ in (None, ""):  # run as bench/run.py: import the package, not its modules, by name
    sys.path[0] = ROOT

from bench import frameworks, inprocess, load, memory, quality, sampler_cost  # noqa: E402
from bench.common import default_policy_name, load_average, log, machine_description  # noqa: E402
from bench.output import render  # noqa: E402

SECTIONS = {"inprocess": inprocess.run, "load": load.run, "memory": memory.run, "quality": quality.run,
            "sampler": sampler_cost.run, "frameworks": frameworks.run}
#: option -> (full run, --quick)
DEFAULTS = {"rounds": (10, 3), "requests": (150, 10), "slow_requests": (1, 1), "warmup": (200, 20),
            "mixed_rounds": (3, 1), "mixed_seconds": (6.0, 1.0), "load_rounds": (3, 1), "load_seconds": (2.0, 1.0),
            "load_warmup_seconds": (0.5, 0.0), "rss_requests": (100000, 3000), "rss_warmup": (2000, 300),
            "dedup_off_requests": (8, 3), "sampler_seconds": (3.0, 1.5)}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--quick", action="store_true", help="short smoke run (< 2 min), noisy figures")
    add("--only", help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    add("--no-servers", action="store_true", help="skip the load section (gunicorn/uvicorn)")
    add("--no-fastapi", action="store_true", help="skip FastAPI (in every section)")
    add("--no-rss", action="store_true", help="skip the memory section")
    add("--rounds", type=int, help="in-process rounds (default 10, quick 3)")
    add("--requests", type=int,
        help="in-process requests per variant, route and round, in turns (default 150, quick 10)")
    add("--slow-requests", type=int,
        help="in-process requests of the slow route per variant and round (default 1); the slow-request "
             "checks send rounds x this + 1 slow requests per perfmon variant")
    add("--warmup", type=int, help="warm-up requests per variant and route (default 200, quick 20)")
    add("--mixed-rounds", type=int, help="rounds of the interleaved one-server run (default 3, quick 1)")
    add("--mixed-seconds", type=float, help="seconds per route and round of the interleaved run (default 6, quick 1)")
    add("--load-rounds", type=int, help="rounds under load (default 3, quick 1)")
    add("--load-seconds", type=float, help="seconds per variant, route and round under load (default 2, quick 1)")
    add("--load-warmup-seconds", type=float,
        help="warm-up burst (Python client) per variant and route, s; 0 skips it (default 0.5, quick 0)")
    add("--rss-requests", type=int, help="requests of the memory run (default 100000, quick 3000)")
    add("--rss-warmup", type=int, help="warm-up requests of the memory run (default 2000, quick 300)")
    add("--dedup-off-requests", type=int, help="slow requests of the dedup-off check (default 8, quick 3)")
    add("--sampler-seconds", type=float, help="seconds per row of the sampler section (default 3, quick 1.5)")
    add("--output", help="markdown results file (default bench/results.md for a full run of every section)")
    add("--keep-tmp", action="store_true", help="keep the temp dir with reports and server logs")
    args = parser.parse_args(argv)
    for name, (full, short) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, short if args.quick else full)
    sections = args.only.split(",") if args.only else list(SECTIONS)
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; expected {', '.join(SECTIONS)}")
    skipped = {name for name, flag in (("load", args.no_servers), ("memory", args.no_rss)) if flag}
    args.sections = [s for s in SECTIONS if s in sections and s not in skipped]
    args.frameworks = ["flask"] if args.no_fastapi else ["flask", "fastapi"]
    if args.output is None and not args.quick and not args.only:
        args.output = os.path.join(ROOT, "bench", "results.md")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    machine = machine_description()
    tmp_root = tempfile.mkdtemp(prefix="otel-perfmon-bench-")
    results: Dict[str, Any] = {"command": [os.path.relpath(sys.argv[0], ROOT)] + list(sys.argv[1:]),
                               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "default_policy": default_policy_name(), "slow checks": [], "perfmon stats": []}
    log(f"sections {','.join(args.sections)}; default profile_policy {results['default_policy']}; temp dir {tmp_root}")
    try:
        for section in args.sections:
            SECTIONS[section](args, tmp_root, results)
    finally:
        if args.keep_tmp:
            log(f"kept {tmp_root}")
        else:
            shutil.rmtree(tmp_root, ignore_errors=True)
    machine["load average at end"] = load_average()
    text = render(results, machine, args, time.monotonic() - started)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            handle.write(text)
        log(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
