"""What the two soak apps share: the OTel set-up, the routes, the slowness parameter, the
stats endpoint's payload.

Ten routes ``/r0`` .. ``/r9``; a request is slow only when the client asks for it with
``?slow=<seconds>`` (the load client decides, from a seeded random generator, so it knows
exactly how many slow requests each route got). Both apps report the same service name and
the same route templates, so a Flask and a FastAPI server on one Redis store share every
fingerprint. ``/health`` and ``/perfmon-stats`` are excluded from perfmon.

The server's own account of which spans were slow, independent of perfmon: each route marks its
server span (``soak.slow_requested``), and :class:`SlowSpanCounter`, a plain SpanProcessor
beside perfmon's, counts the marked spans longer than the threshold per route, apart for the
requests the client asked to be slow and the others (fast requests that an overloaded server
made slow).
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from typing import Any, Dict, Optional

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider

SERVICE_NAME = "soak"
ROUTES = tuple(f"/r{n}" for n in range(10))
EXCLUDED = ["/health", "/perfmon-stats"]
MAX_SLOW_SECONDS = 5.0


MARK = "soak.slow_requested"


class SlowSpanCounter(SpanProcessor):
    """Counts the marked spans whose duration is over the threshold, as perfmon decides it
    (``end - start > threshold``): ``{"<route> requested" | "<route> unrequested": n}``."""

    def __init__(self, threshold_seconds: float) -> None:
        self.threshold_ns = threshold_seconds * 1e9
        self.counts: Counter = Counter()
        self._lock = threading.Lock()

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        if MARK not in attributes or (span.end_time or 0) - (span.start_time or 0) <= self.threshold_ns:
            return
        key = f"{attributes.get('http.route')} {'requested' if attributes[MARK] else 'unrequested'}"
        with self._lock:
            self.counts[key] += 1


COUNTER = SlowSpanCounter(float(os.environ.get("OTEL_PERFMON_THRESHOLD_SECONDS", "1.0")))


def setup_tracing() -> None:
    """The SDK TracerProvider with :data:`COUNTER`, no span exporter (the soak measures
    perfmon, not an exporter)."""
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(COUNTER)
    trace.set_tracer_provider(provider)


def mark(slow_requested: bool) -> None:
    """Mark the request's server span (the current span in the route) for :data:`COUNTER`."""
    trace.get_current_span().set_attribute(MARK, slow_requested)


def slow_seconds(value: Optional[str]) -> float:
    """The ``slow`` query parameter: how long the request sleeps (0 when absent or bad)."""
    try:
        seconds = float(value or 0)
    except ValueError:
        return 0.0
    return min(max(seconds, 0.0), MAX_SLOW_SECONDS)


def stats_payload(perfmon: Any) -> Dict[str, Any]:
    """This worker's pid, perfmon counters (after writing what its queue holds) and
    :data:`COUNTER`'s counts."""
    flushed = perfmon.force_flush(timeout_seconds=15)
    with COUNTER._lock:
        slow_spans = dict(COUNTER.counts)
    return {"pid": os.getpid(), "flushed": flushed, "stats": perfmon.stats(), "slow_spans": slow_spans}
