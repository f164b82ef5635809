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
import time
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
    "export_failures": "{export}", "internal_errors": "{error}", "dedup_store_errors": "{error}",
    "profiling_seconds_estimate": "s",
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
    "dedup_store_errors": "Dedup store operations its backend did not do when asked (claimed in the process, replayed)",
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


#: Longest wait (s) in the parent, at fork, for the SDK metric readers' export in progress.
FORK_EXPORT_WAIT_SECONDS = 1.0
_held_export_locks: List[Any] = []


def _sdk_readers() -> List[Any]:
    """The global SDK MeterProvider's metric readers (none for the API's no-op provider)."""
    from opentelemetry import metrics

    provider = metrics.get_meter_provider()
    config = getattr(provider, "_sdk_config", None)
    return list(getattr(config, "metric_readers", ()) or ())


def _before_fork() -> None:
    _lock.acquire()
    # opentelemetry-sdk (checked up to 1.45.1) restarts a PeriodicExportingMetricReader's
    # thread in a forked child but keeps its _export_lock: a child forked while the parent's
    # reader exports (gunicorn --preload, Celery prefork) inherits it locked, and its reader
    # thread blocks on it for ever: the child never exports a metric. Wait (bounded) for the
    # export in progress and hold the lock across fork(); the child also gets new locks below.
    try:
        deadline = time.monotonic() + FORK_EXPORT_WAIT_SECONDS
        for reader in _sdk_readers():
            lock = getattr(reader, "_export_lock", None)
            if lock is not None and lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                _held_export_locks.append(lock)
    except Exception:
        return  # never fail a fork


def _release_export_locks() -> None:
    while _held_export_locks:
        try:
            _held_export_locks.pop().release()
        except RuntimeError:
            pass


def _after_fork_in_parent() -> None:
    _release_export_locks()
    _lock.release()


def _reset_sdk_locks() -> None:
    """In a forked child: new locks for the SDK's metric collection path, which its own fork
    hooks leave as they were (the reader's export lock, the measurement consumer's, each
    reader storage's, view-instrument match's and aggregation's). Only the forking thread
    exists here, so any lock found held belongs to a thread that is gone."""
    from opentelemetry import metrics

    provider = metrics.get_meter_provider()
    for reader in _sdk_readers():
        if hasattr(reader, "_export_lock"):
            reader._export_lock = threading.Lock()
    consumer = getattr(provider, "_measurement_consumer", None)
    if consumer is None:
        return
    if hasattr(consumer, "_lock"):
        consumer._lock = threading.Lock()
    for storage in list(getattr(consumer, "_reader_storages", {}).values()):
        storage._lock = threading.RLock()
        for matches in list(getattr(storage, "_instrument_view_instrument_matches", {}).values()):
            for match in matches:
                match._lock = threading.Lock()
                for aggregation in list(getattr(match, "_attributes_aggregation", {}).values()):
                    if hasattr(aggregation, "_lock"):
                        aggregation._lock = threading.Lock()


def _after_fork_in_child() -> None:
    _held_export_locks.clear()  # replaced, not released: the child's copies are fresh locks
    try:
        _reset_sdk_locks()
    except Exception:
        log_once(_logger, "metrics-fork", "could not reset the OTel SDK metric locks after fork")
    _lock.release()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)


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
