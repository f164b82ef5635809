"""Every route's numbers: request count, p50 / p95 / p99 / max duration and slow count, for
every tracked span (fast ones too), added up over the processes and hosts sharing a store.

The request path (``processor.on_end``, for every tracked span, once its duration is known)
does one dict lookup by span name and one list increment: ``rows[span.name]`` is a list of
counts, one per histogram bucket (:data:`~otel_perfmon.dedup.base.ROUTE_BUCKET_BOUNDS_MS`,
ten per decade from 1 ms to 60 s, and an overflow bucket), twice (fast, then slow spans), and
the largest duration in seconds last::

    row = rows.get(span.name) or route_stats.new_row(span)
    row[bisect_left(BOUNDS_SECONDS, duration) + SLOW_OFFSET * slow] += 1
    if duration > row[-1]:
        row[-1] = duration

No lock, no clock read, no allocation once a name was seen. A name seen for the first time
(:meth:`RouteStats.new_row`) is mapped to its route there, once: service + method + route
template (``[unrouted]`` for a request that matched no route), the dedup fingerprint. Names
beyond :data:`MAX_NAMES` (e.g. OTel's Flask instrumentor names an unrouted request after its
raw path) share one row per route, found through that mapping on every such request.

Every :data:`FLUSH_INTERVAL_SECONDS` the watchdog thread (see :class:`_FlushItem`)
calls :meth:`RouteStats.flush`: it copies each row, subtracts what the previous flush sent,
adds up the names of one route and hands the differences to the store
(:meth:`~otel_perfmon.dedup.base.DedupStore.add_route_stats`) in one transaction. A failed
write is retried with the next interval (nothing is marked sent). The last partial interval is
flushed by ``force_flush`` and ``shutdown``. Two request threads incrementing the same bucket at
the same instant can lose one count (no lock): the numbers are statistics, not an audit.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from otel_perfmon._fork import reset_after_fork
from otel_perfmon.dedup import DedupStore, RouteStatsDelta, fingerprint
from otel_perfmon.dedup.base import OVERFLOW_BUCKET, ROUTE_BUCKET_BOUNDS_MS, bucket_key
from otel_perfmon.report.capture import fingerprint_route, service_name

_logger = logging.getLogger(__name__)

#: How often each process adds its counts to the store (seconds).
FLUSH_INTERVAL_SECONDS = 5.0
#: Distinct span names with a row of their own; later names share their route's row.
MAX_NAMES = 1000
#: The bucket bounds in seconds (the span's duration unit), for ``bisect_left``: a duration
#: equal to a bound counts in that bound's bucket.
BOUNDS_SECONDS: Tuple[float, ...] = tuple(b / 1000.0 for b in ROUTE_BUCKET_BOUNDS_MS)
#: Buckets per half-row: one per bound and the overflow bucket.
BUCKETS = len(BOUNDS_SECONDS) + 1
#: Index offset of the slow spans' buckets in a row.
SLOW_OFFSET = BUCKETS
#: Index of the largest duration (seconds) in a row.
MAX_INDEX = 2 * BUCKETS
_KEYS: Tuple[str, ...] = tuple(bucket_key(b) for b in ROUTE_BUCKET_BOUNDS_MS) + (OVERFLOW_BUCKET,)

#: (fingerprint, service, method, route) of a row
RouteKey = Tuple[str, str, str, str]


def new_row() -> List[Any]:
    """An empty row: ``2 * BUCKETS`` counts and the largest duration (0.0)."""
    return [0] * (2 * BUCKETS) + [0.0]


def record(row: List[Any], duration_seconds: float, slow: bool) -> None:
    """Count one span in ``row`` (what the processor does inline)."""
    row[bisect.bisect_left(BOUNDS_SECONDS, duration_seconds) + SLOW_OFFSET * slow] += 1
    if duration_seconds > row[MAX_INDEX]:
        row[MAX_INDEX] = duration_seconds


def route_key(span: Any) -> RouteKey:
    """The route a span is counted under: the dedup fingerprint's service + method + route."""
    service = service_name(span)
    method, route = fingerprint_route(span)
    return fingerprint(service, method, route), service, method, route


def row_delta(key: RouteKey, row: Sequence[Any], sent: Optional[Sequence[Any]]) -> Optional[RouteStatsDelta]:
    """What ``row`` counted since ``sent`` (the copy the previous flush sent; None: nothing
    yet) as a store delta, or None when nothing changed."""
    counts: Dict[str, int] = {}
    total = slow = 0
    for index in range(2 * BUCKETS):
        diff = row[index] - (sent[index] if sent is not None else 0)
        if diff:
            bucket = _KEYS[index % BUCKETS]
            counts[bucket] = counts.get(bucket, 0) + diff
            total += diff
            if index >= SLOW_OFFSET:
                slow += diff
    largest = float(row[MAX_INDEX])
    grew = sent is None or largest > sent[MAX_INDEX]
    if not total and not grew:
        return None
    return RouteStatsDelta(key[0], key[1], key[2], key[3], total, slow, largest * 1000.0 if grew else 0.0,
                           tuple(sorted(counts.items(), key=lambda item: _KEYS.index(item[0]))))


def merge(deltas: Sequence[RouteStatsDelta]) -> List[RouteStatsDelta]:
    """One delta per fingerprint (several span names can name one route)."""
    merged: Dict[str, RouteStatsDelta] = {}
    for d in deltas:
        previous = merged.get(d.fingerprint)
        if previous is None:
            merged[d.fingerprint] = d
            continue
        counts = dict(previous.buckets)
        for bucket, count in d.buckets:
            counts[bucket] = counts.get(bucket, 0) + count
        merged[d.fingerprint] = RouteStatsDelta(
            d.fingerprint, d.service_name, d.method, d.route, previous.count + d.count, previous.slow + d.slow,
            max(previous.max_ms, d.max_ms), tuple(sorted(counts.items(), key=lambda item: _KEYS.index(item[0]))))
    return list(merged.values())


class RouteStats:
    """The per-process table: ``rows`` (span name -> row) is read by the request path; the
    rest runs on the first request of a name and on the flushing thread.

    ``store``: where :meth:`flush` adds the counts. ``interval_seconds``: the flush period
    (0 disables counting: :attr:`enabled` is False). ``clock``: ``time.time`` (the store's
    ``now``; a :class:`~otel_perfmon.testing.FakeClock` in tests). ``schedule(deadline,
    item)``: the watchdog's, set by :meth:`attach`.
    """

    def __init__(self, store: DedupStore, interval_seconds: float = FLUSH_INTERVAL_SECONDS,
                 clock: Callable[[], float] = time.time,
                 on_error: Optional[Callable[[BaseException], None]] = None) -> None:
        self.store = store
        self.interval_seconds = interval_seconds
        self.enabled = interval_seconds > 0
        self._clock = clock
        self._on_error = on_error
        self._schedule: Optional[Callable[[float, Any], None]] = None
        self.rows: Dict[str, List[Any]] = {}  # the same dict for the life of the object (the processor holds it)
        self._reset()
        reset_after_fork(self)

    def _reset(self) -> None:
        # also the fork hook: a child counts its own requests only (the parent flushes its own)
        self.rows.clear()
        self._keys: Dict[str, RouteKey] = {}  # span name -> its route
        self._shared: Dict[RouteKey, List[Any]] = {}  # rows of the names beyond MAX_NAMES
        self._sent: Dict[Any, List[Any]] = {}  # row id (name or route key) -> its copy the last flush sent
        self._flush_lock = threading.Lock()
        self._item: Optional[_FlushItem] = None
        self.flushes = 0

    def attach(self, schedule: Callable[[float, Any], None]) -> None:
        """Flush through ``schedule(deadline, item)`` (the watchdog's one-off items)."""
        self._schedule = schedule

    # --- request path (first span of a name only) ------------------------------------
    def new_row(self, span: Any) -> List[Any]:
        """The row of a span name not in :attr:`rows` yet: maps it to its route (once), starts
        the periodic flush (once per process). Beyond MAX_NAMES, the route's shared row."""
        name = span.name
        key = route_key(span)
        if len(self.rows) >= MAX_NAMES:
            shared = self._shared.get(key)
            if shared is None:
                shared = self._shared.setdefault(key, new_row())
            self._start()
            return shared
        self._keys[name] = key  # before the row: a flush that sees the row must find its route
        row: List[Any] = self.rows.setdefault(name, new_row())  # two threads, one name: one row
        self._start()
        return row

    def _start(self) -> None:
        if self._item is None and self._schedule is not None and self.enabled:
            self._item = item = _FlushItem(self)
            self._schedule(self._clock() + self.interval_seconds, item)

    # --- flushing thread ---------------------------------------------------------------
    def collect(self) -> Tuple[List[RouteStatsDelta], Dict[Any, List[Any]]]:
        """(one delta per route since the last flush, the row copies to mark sent)."""
        deltas: List[RouteStatsDelta] = []
        copies: Dict[Any, List[Any]] = {}
        tables: List[Tuple[Any, List[Any], RouteKey]] = []
        for name, row in list(self.rows.items()):
            key = self._keys.get(name)
            if key is not None:
                tables.append((name, row, key))
        tables.extend((key, row, key) for key, row in list(self._shared.items()))
        for row_id, row, key in tables:
            copy = row[:]  # one C-level copy; increments after it go to the next flush
            delta = row_delta(key, copy, self._sent.get(row_id))
            if delta is not None:
                deltas.append(delta)
                copies[row_id] = copy
        return merge(deltas), copies

    def flush(self) -> int:
        """Add what was counted since the last flush to the store; returns the number of
        routes written. Background threads (the watchdog, or force_flush/shutdown's caller);
        may block on the store's I/O; raises what the store raises (nothing is marked sent)."""
        with self._flush_lock:
            deltas, copies = self.collect()
            if deltas:
                self.store.add_route_stats(deltas, self._clock())
                self._sent.update(copies)
            self.flushes += 1
            return len(deltas)

    def flush_quietly(self) -> bool:
        """:meth:`flush`, errors passed to ``on_error`` (logged and counted by the processor)."""
        try:
            self.flush()
            return True
        except Exception as exc:
            if self._on_error is not None:
                self._on_error(exc)
            else:
                _logger.warning("otel-perfmon: could not write route stats: %r", exc)
            return False

    def fire(self, item: _FlushItem) -> None:
        """The periodic item is due (watchdog thread): flush, then schedule the next one."""
        if item is not self._item:  # a stale item (from before a fork's reset)
            return
        try:
            self.flush_quietly()
        finally:
            if self._schedule is not None:
                self._schedule(self._clock() + self.interval_seconds, item)


class _FlushItem:
    """The watchdog's periodic item: ``ended`` is what the watchdog checks before firing, and
    ``fire()`` what it calls (:meth:`otel_perfmon.slow.SlowSpans.on_deadline`).

    Why the watchdog: it is otel-perfmon's thread that already waits on deadlines and already
    talks to this store (the claims), so a flush every few seconds costs one heap item and one
    store transaction, no new thread; the worker queue is for reports and may be full or busy
    rendering. A flush delays the watchdog's next scan by the store's answer time (a local
    SQLite transaction or one Redis round trip), as a claim does.
    """

    __slots__ = ("stats",)
    ended = False

    def __init__(self, stats: RouteStats) -> None:
        self.stats = stats

    def fire(self) -> None:
        self.stats.fire(self)
