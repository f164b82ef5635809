"""Request-path cost of otel-perfmon's hooks, in microseconds (issue 6, item 5).

Measures, with a real SDK TracerProvider and real spans carrying the Flask instrumentor's
attributes, the time ``span.end()`` takes on the request thread:

* a fast span (not slow: the common case);
* a slow span that was not profiled (adaptive policy): capture headers (walking up to the
  WSGI ``environ``), redact, enqueue;
* the same span kept open 30 ms, so the stack sampler has samples of it (stop + session build);

each against the same span with no perfmon processor. The goal: a slow request's added
latency beyond profiling itself is <= 0.5 ms. Run: ``.venv/bin/python bench/request_path.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from otel_perfmon.config import resolve_config
from otel_perfmon.processor import PerfmonSpanProcessor

ATTRIBUTES = {"http.method": "GET", "http.route": "/items/<int:item_id>", "http.target": "/items/7?q=shoes",
              "http.scheme": "http", "http.host": "127.0.0.1:8000", "http.status_code": 200,
              "http.user_agent": "bench"}
ENVIRON = {"wsgi.version": (1, 0), "REQUEST_METHOD": "GET", "PATH_INFO": "/items/7", "QUERY_STRING": "q=shoes",
           "HTTP_USER_AGENT": "bench", "HTTP_AUTHORIZATION": "Bearer secret", "HTTP_X_REQUEST_ID": "abc",
           "HTTP_ACCEPT": "application/json", "HTTP_COOKIE": "session=1"}


def start(tracer, start_ns=None):
    return tracer.start_span("GET /items/<int:item_id>", kind=SpanKind.SERVER, attributes=ATTRIBUTES,
                             start_time=start_ns)


def end_cost_us(tracer, slow: bool, n: int) -> float:
    """Median µs of span.end(), called from a frame that holds a WSGI environ (like Flask)."""
    environ = ENVIRON  # noqa: F841  (found by the header capture's frame walk)
    samples = []
    for _ in range(n):
        start_ns = time.time_ns() - (2_000_000_000 if slow else 0)
        span = start(tracer, start_ns)
        t0 = time.perf_counter()
        span.end()
        samples.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(samples)


def start_cost_us(tracer, n: int) -> float:
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        span = start(tracer)
        samples.append((time.perf_counter() - t0) * 1e6)
        span.end()
    return statistics.median(samples)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=3000, help="spans per case (default 3000)")
    args = parser.parse_args(argv)
    bare = TracerProvider()
    with_perfmon = TracerProvider()
    processor = PerfmonSpanProcessor(resolve_config(overrides=dict(
        report_dir=tempfile.mkdtemp(prefix="perfmon-bench-"), dedup_store="memory", threshold_seconds=1.0,
        queue_size=100_000, profile_explore_rate=0.0)))
    with_perfmon.add_span_processor(processor)
    bare_tracer, tracer = bare.get_tracer("bench"), with_perfmon.get_tracer("bench")
    rows = []
    rows.append(("span start (any span)", start_cost_us(bare_tracer, args.n), start_cost_us(tracer, args.n)))
    rows.append(("span end, fast span", end_cost_us(bare_tracer, False, args.n), end_cost_us(tracer, False, args.n)))
    rows.append(("span end, slow span (capture + enqueue)", end_cost_us(bare_tracer, True, args.n),
                 end_cost_us(tracer, True, args.n)))
    # open 30 ms, so the stack sampler (public behaviour only: it samples open spans) has samples
    # of the span, which span.end() turns into its session.
    samples = []
    environ = ENVIRON  # noqa: F841
    for _ in range(min(args.n, 300)):
        span = start(tracer, time.time_ns() - 2_000_000_000)
        time.sleep(0.03)
        t0 = time.perf_counter()
        span.end()
        samples.append((time.perf_counter() - t0) * 1e6)
    rows.append(("span end, slow span + sampler samples (30 ms open)", rows[-1][1], statistics.median(samples)))
    processor.force_flush(60_000)
    processor.shutdown(10)
    print(f"{'case':48} {'OTel only µs':>13} {'+ perfmon µs':>13} {'added µs':>9}")
    worst = 0.0
    for name, base, perfmon in rows:
        print(f"{name:48} {base:13.1f} {perfmon:13.1f} {perfmon - base:9.1f}")
        if "slow" in name:
            worst = max(worst, perfmon - base)
    verdict = "PASS" if worst <= 500 else "MISS"
    print(f"\nslow request's added latency on the request path: {worst:.1f} µs (goal <= 500 µs): {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
