"""OTel metrics: the ``stats()`` counters as ``perfmon.*`` instruments, and a slow-span histogram.

Usage: nothing to do. Every :class:`~otel_perfmon.processor.PerfmonSpanProcessor` registers
its counters here, and the instruments live on the global MeterProvider
(``opentelemetry.metrics.get_meter_provider()``). They are created through OTel's proxy
meter, so the app may set its MeterProvider before or after ``configure_perfmon()``; with no
MeterProvider at all they cost nothing. Under ``opentelemetry-instrument`` the provider and
its exporter come from the usual variables::

    export OTEL_METRICS_EXPORTER=otlp
    export OTEL_METRIC_EXPORT_INTERVAL=60000     # ms

Instruments (meter ``otel_perfmon``):

* ``perfmon.<key>`` for every key of ``stats()`` (``perfmon.spans_started``,
  ``perfmon.slow_spans``, ``perfmon.reports_created`` ...): observable counters, cumulative
  since the process started, read from the processors' counters when the reader collects.
* ``perfmon.slow_span.duration`` (unit ``ms``): a histogram of slow-span durations with the
  attributes ``http.route`` and ``http.request.method`` (route templates, so the cardinality
  is the number of routes). Recorded on the background worker, never on the request path.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, Dict, Iterable, List, Optional

from otel_perfmon.stats import STAT_KEYS, Stats, log_once

_logger = logging.getLogger(__name__)

METER_NAME = "otel_perfmon"
#: Prefix of every instrument name.
PREFIX = "perfmon."
#: Histogram of slow-span durations in milliseconds, by route and method.
SLOW_SPAN_DURATION = "perfmon.slow_span.duration"

_UNITS = {
    "spans_started": "{span}", "spans_profiled": "{span}", "slow_spans": "{span}",
    "reports_created": "{report}", "reports_deduplicated": "{report}", "reports_dropped": "{report}",
    "export_failures": "{export}", "internal_errors": "{error}", "profiling_seconds_estimate": "s",
}
_DESCRIPTIONS = {
    "spans_started": "Eligible spans seen (local-root SERVER spans and @profile spans)",
    "spans_profiled": "Eligible spans that got a pyinstrument session",
    "slow_spans": "Spans slower than their threshold",
    "reports_created": "New reports written to the report directory",
    "reports_deduplicated": "Slow spans counted against an existing report",
    "reports_dropped": "Slow spans whose report was lost (queue full, shut down, build failed)",
    "export_failures": "Exporter calls that failed, timed out or were skipped",
    "internal_errors": "Exceptions caught inside otel-perfmon",
    "profiling_seconds_estimate": "Upper-bound estimate of the time spent profiling (pyinstrument)",
}
#: Gauge: share of eligible spans that got a pyinstrument session (0..1).
PROFILED_FRACTION = "perfmon.profiled_fraction"

_lock = threading.Lock()
_stats: weakref.WeakSet[Stats] = weakref.WeakSet()
_histogram: Any = None
_installed = False


def metric_names() -> List[str]:
    """Every instrument name otel-perfmon creates (``perfmon.*``)."""
    return [PREFIX + key for key in STAT_KEYS] + [PROFILED_FRACTION, SLOW_SPAN_DURATION]


def _total(key: str) -> float:
    # _lock is held across the snapshots so that a fork (gunicorn) never happens while this
    # reader thread holds a Stats lock: the child would inherit it locked, and its request
    # path (Stats.incr) would block forever. See _before_fork.
    with _lock:
        return sum(stats.snapshot().get(key, 0) for stats in list(_stats))


def _before_fork() -> None:
    _lock.acquire()


def _after_fork() -> None:
    _lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


def _callback(key: str) -> Any:
    from opentelemetry.metrics import Observation

    def observe(_options: Any) -> Iterable[Any]:
        # runs on the metric reader's thread at each collection.
        try:
            return [Observation(_total(key))]
        except Exception:
            log_once(_logger, "metrics-callback", "could not read the counters for metrics")
            return []

    return observe


def _fraction(_options: Any) -> Iterable[Any]:
    # metric reader's thread: spans_profiled / spans_started over every processor.
    from opentelemetry.metrics import Observation

    try:
        started = _total("spans_started")
        return [Observation(_total("spans_profiled") / started if started else 0.0)]
    except Exception:
        log_once(_logger, "metrics-callback", "could not read the counters for metrics")
        return []


def _install() -> None:
    global _histogram, _installed
    from opentelemetry import metrics

    from otel_perfmon import __version__

    meter = metrics.get_meter(METER_NAME, __version__)
    for key in STAT_KEYS:
        meter.create_observable_counter(PREFIX + key, callbacks=[_callback(key)], unit=_UNITS.get(key, "1"),
                                        description=_DESCRIPTIONS.get(key, key))
    meter.create_observable_gauge(PROFILED_FRACTION, callbacks=[_fraction], unit="1",
                                  description="Share of eligible spans that got a pyinstrument session")
    _histogram = meter.create_histogram(SLOW_SPAN_DURATION, unit="ms",
                                        description="Duration of spans slower than their threshold, by route")
    _installed = True


def register(stats: Stats) -> None:
    """Export ``stats``' counters through the ``perfmon.*`` instruments.

    Called from the processor's constructor (the thread that calls ``configure_perfmon``).
    The instruments are created once per process; counters of several processors are summed.
    ``stats`` is held weakly. Never raises: a failure is logged once.
    """
    try:
        with _lock:
            _stats.add(stats)
            if not _installed:
                _install()
    except Exception:
        log_once(_logger, "metrics-install", "could not create the perfmon.* metric instruments")


def record_slow_span(duration_ms: float, http: Optional[Dict[str, Any]]) -> None:
    """Record one slow span's duration (ms) in ``perfmon.slow_span.duration``.

    ``http`` is the request info dict of the captured span (``route``, ``method``). Called on
    the background worker thread. Never raises.
    """
    histogram = _histogram
    if histogram is None:
        return
    try:
        attributes = {}
        if http:
            if http.get("route"):
                attributes["http.route"] = str(http["route"])
            if http.get("method"):
                attributes["http.request.method"] = str(http["method"])
        histogram.record(duration_ms, attributes)
    except Exception:
        log_once(_logger, "metrics-record", "could not record the slow-span histogram")
