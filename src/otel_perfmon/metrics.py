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

Fork (gunicorn ``--preload``, Celery prefork): the SDK restarts its periodic reader's thread
in a forked child but keeps the locks of its collection and export path as they were at
fork, so a worker forked while the parent exported never exported a metric; and the child
inherits the exporter's keep-alive connection, which parent and child then share. Fork hooks
here wait (up to ``FORK_EXPORT_WAIT_SECONDS``, at each fork) for the collection and export in
progress, hold those locks across ``fork()``, and in the child release them, give the
collection path new locks and close the child's copies of the exporter's idle connections.
Details in the comment above ``_before_fork``; tests/test_fork_safety.py runs it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import weakref
from typing import Any, Dict, Iterable, List, Optional, Tuple

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


# Fork safety of the OTel SDK's metric pipeline (gunicorn --preload, Celery prefork).
#
# opentelemetry-sdk (checked up to 1.45.1) restarts a PeriodicExportingMetricReader's thread in
# a forked child and gives the MeterProvider new _lock/_meter_lock there, but leaves every lock
# of the collection path as it was at fork: the reader's _export_lock (held for the whole HTTP
# export), the measurement consumer's _lock (held for a whole collection, callbacks included),
# and the reader storages', view-instrument matches', aggregations' and exemplar reservoirs'
# locks. Only the forking thread exists in the child: a lock the parent's reader thread held
# at fork stays locked for ever, the child's new reader thread blocks on it at its first
# collection and the child never exports a metric (seen with gunicorn --preload: both
# workers' reader threads parked in ``with self._export_lock`` for good).
#
# So, around os.fork():
# * before, in the forking thread: take _install_lock, the global SDK MeterProvider's
#   measurement-consumer lock (waits for a collection in progress), _lock, then each
#   periodic reader's export lock (waits for an export in progress); the two SDK locks with a
#   shared deadline of FORK_EXPORT_WAIT_SECONDS, after which fork() goes on without them. This
#   order is the one every other thread takes them in (a collection holds the consumer lock
#   and calls our callbacks, which take _lock; register() creates instruments, which takes the
#   consumer lock, under _install_lock; an export holds only the export lock), so the wait
#   cannot deadlock;
# * in the parent: release them all;
# * in the child: give the reader storages, matches, aggregations and reservoirs new locks
#   (no collection can be running: the consumer lock is still locked), close the child's
#   copies of the idle keep-alive connections of each exporter whose export lock was taken
#   (else parent and child write their requests on one TCP connection and the receiver reads
#   them interleaved: "Wire format was corrupt", exports lost on both sides), then release
#   the consumer and export locks (a plain Lock may be released by any thread: whether this
#   thread took it before fork or a thread of the parent that is gone held it, no live thread
#   owns it), then ours. Releasing rather than replacing them matters: the SDK's own
#   after-fork hook, registered before ours, has already started the child's reader thread,
#   which may be waiting on these very lock objects.
#
# What it costs: a fork waits for an export in progress, up to FORK_EXPORT_WAIT_SECONDS (the
# parent's export completes). Past that the child gets the locks anyway; the parent's
# export goes on, and its copy in the child is abandoned (that connection stays checked out
# there; the child's first export opens a new one). Only the global MeterProvider (the one
# that holds the perfmon.* instruments) is handled; OTLP/gRPC channels have fork rules of
# their own (GRPC_ENABLE_FORK_SUPPORT).

#: Longest wait (s) in the parent, at fork, for the SDK's collection and export in progress.
FORK_EXPORT_WAIT_SECONDS = 1.0
#: Serializes the instruments' creation (never taken by the metric reader's thread).
_install_lock = threading.Lock()
#: SDK locks the forking thread holds across fork() (released in the parent and the child).
_held_sdk_locks: List[Any] = []
#: Readers whose export lock the forking thread holds (their exporter is idle at fork).
_idle_readers: List[Any] = []
#: SDK locks another thread still held when the wait at fork ran out (released in the child).
_stuck_sdk_locks: List[Any] = []
_LOCK_TYPE = type(threading.Lock())
_RLOCK_TYPE = type(threading.RLock())


def _sdk_provider() -> Any:
    """The global MeterProvider if one is set and it is the SDK's (it has a measurement
    consumer), else None. Read as set: get_meter_provider() could build one (from
    OTEL_PYTHON_METER_PROVIDER), and start its threads, in a fork hook."""
    from opentelemetry import metrics
    from opentelemetry.metrics import _internal

    provider = _internal._METER_PROVIDER if hasattr(_internal, "_METER_PROVIDER") else metrics.get_meter_provider()
    return provider if getattr(provider, "_measurement_consumer", None) is not None else None


def _sdk_readers(provider: Any) -> List[Any]:
    """``provider``'s metric readers: the keys of its measurement consumer's reader storages
    (the constructor's readers and ``add_metric_reader``'s) and ``_metric_readers``. (The
    ``_sdk_config`` of opentelemetry-sdk 1.45.1 has no ``metric_readers``: looking there
    found no reader at all, and left the export lock of gunicorn --preload workers locked.)"""
    found: Dict[int, Any] = {}
    consumer = getattr(provider, "_measurement_consumer", None)
    storages = getattr(consumer, "_reader_storages", None) or {}
    for readers in (list(storages), list(getattr(provider, "_metric_readers", None) or ())):
        for reader in readers:
            found.setdefault(id(reader), reader)
    return list(found.values())


def _sdk_fork_locks() -> Tuple[Any, List[Tuple[Any, Any]]]:
    """(consumer lock or None, [(reader, export lock)]) of the global SDK MeterProvider."""
    provider = _sdk_provider()
    if provider is None:
        return None, []
    consumer_lock = getattr(provider._measurement_consumer, "_lock", None)
    exports = [(reader, getattr(reader, "_export_lock", None)) for reader in _sdk_readers(provider)]
    return ((consumer_lock if isinstance(consumer_lock, _LOCK_TYPE) else None),
            [(reader, lock) for reader, lock in exports if isinstance(lock, _LOCK_TYPE)])


def _before_fork() -> None:
    _install_lock.acquire()
    try:
        consumer_lock, exports = _sdk_fork_locks()
    except Exception:
        consumer_lock, exports = None, []  # never fail a fork
    deadline = time.monotonic() + FORK_EXPORT_WAIT_SECONDS

    def take(lock: Any) -> bool:
        if lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            _held_sdk_locks.append(lock)
            return True
        _stuck_sdk_locks.append(lock)
        return False

    if consumer_lock is not None:
        take(consumer_lock)
    _lock.acquire()
    for reader, lock in exports:
        if take(lock):
            _idle_readers.append(reader)


def _after_fork_in_parent() -> None:
    _idle_readers.clear()
    _stuck_sdk_locks.clear()
    while _held_sdk_locks:
        _held_sdk_locks.pop().release()
    _lock.release()
    _install_lock.release()


def _renew_lock(obj: Any, name: str = "_lock") -> None:
    old = getattr(obj, name, None)
    if isinstance(old, _RLOCK_TYPE):
        setattr(obj, name, threading.RLock())
    elif isinstance(old, _LOCK_TYPE):
        setattr(obj, name, threading.Lock())


def _renew_sdk_collection_locks() -> None:
    """In a forked child: new locks for the reader storages, view-instrument matches,
    aggregations and exemplar reservoirs of the global SDK MeterProvider. No collection can
    be running meanwhile: the consumer lock is still locked (see the comment above)."""
    provider = _sdk_provider()
    if provider is None:
        return
    for storage in list((getattr(provider._measurement_consumer, "_reader_storages", None) or {}).values()):
        _renew_lock(storage)
        for matches in list((getattr(storage, "_instrument_view_instrument_matches", None) or {}).values()):
            for match in matches:
                _renew_lock(match)
                for aggregation in list((getattr(match, "_attributes_aggregation", None) or {}).values()):
                    _renew_lock(aggregation)
                    _renew_lock(getattr(aggregation, "_reservoir", None))


def _pool_managers(root: Any, depth: int = 4) -> List[Any]:
    """The urllib3 PoolManagers (requests sessions' included) reachable from ``root``, an
    OTel exporter, through the attributes of OTel objects: ``_session`` (older OTLP/HTTP
    exporters), ``_client._transport._session`` or ``_client._transport._pool`` (1.45)."""
    urllib3 = sys.modules.get("urllib3")
    requests = sys.modules.get("requests")
    found: Dict[int, Any] = {}
    seen = set()

    def visit(obj: Any, level: int) -> None:
        if obj is None or id(obj) in seen or level > depth:
            return
        seen.add(id(obj))
        if urllib3 is not None and isinstance(obj, urllib3.PoolManager):
            found.setdefault(id(obj), obj)
        elif requests is not None and isinstance(obj, requests.Session):
            for adapter in list(obj.adapters.values()):
                visit(getattr(adapter, "poolmanager", None), level + 1)
                for manager in list((getattr(adapter, "proxy_manager", None) or {}).values()):
                    visit(manager, level + 1)
        elif type(obj).__module__.startswith("opentelemetry."):
            for value in list(getattr(obj, "__dict__", {}).values()):
                visit(value, level + 1)

    visit(root, 0)
    return list(found.values())


def _drop_inherited_connections() -> None:
    """In a forked child: close the child's copies of the idle keep-alive connections of the
    exporters whose export lock the forking thread held (no export of theirs was running, so
    no thread of the parent was inside their pools). Otherwise parent and child would write
    their requests on one shared TCP connection, and the receiver would read them interleaved
    (protobuf "Wire format was corrupt": exports lost on both sides). Closing a socket in the
    child leaves the parent's connection open. An exporter whose export was still running at
    fork is left alone: its connection is checked out, the child opens its own."""
    for reader in _idle_readers:
        for manager in _pool_managers(getattr(reader, "_exporter", None)):
            manager.clear()


def _after_fork_in_child() -> None:
    try:
        _renew_sdk_collection_locks()
        _drop_inherited_connections()
    except Exception:
        log_once(_logger, "metrics-fork", "could not reset the OTel SDK metric locks after fork")
    # held: taken by this thread before fork; stuck: held at fork by a parent's thread that
    # does not exist here. Either way no live thread owns them.
    for lock in reversed(_held_sdk_locks + _stuck_sdk_locks):
        try:
            lock.release()
        except RuntimeError:
            pass
    _idle_readers.clear()
    _held_sdk_locks.clear()
    _stuck_sdk_locks.clear()
    _lock.release()
    _install_lock.release()


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
        # not under _lock: creating an instrument takes the SDK consumer's lock, which a
        # collection holds while it calls our callbacks (which take _lock)
        with _install_lock:
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
