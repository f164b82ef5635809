"""Counters behind ``perfmon.stats()`` and one-time error logging."""

from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Dict, Set

from otel_perfmon._fork import reset_after_fork

_logger = logging.getLogger("otel_perfmon.processor")

STAT_KEYS = (
    "spans_started",         # eligible spans seen (local-root SERVER spans, @profile spans)
    "spans_profiled",        # of those, spans that got a pyinstrument session
    "slow_spans",            # spans over their threshold
    "reports_created",       # new reports written to report_dir
    "reports_deduplicated",  # slow spans counted against an existing report
    "reports_dropped",       # slow spans lost: queue full, shut down, or the build failed
    "export_failures",       # exporter calls that failed, timed out or were skipped while stuck
    "internal_errors",       # exceptions caught inside otel-perfmon's hooks and threads
    "dedup_store_errors",    # dedup store operations its backend did not do when asked (down, locked,
                             # timed out): claimed in this process / queued for replay (dedup/resilient.py)
    "profiling_seconds_estimate",  # upper-bound estimate of the time profiling cost (s, float)
    "reports_replaced",      # kept reports rewritten with a better call tree (same id)
    "sampler_passes",        # passes of the stack sampler thread over the open spans
    "sampler_samples",       # stack samples it took
    "sampler_cpu_seconds",   # CPU time the sampler thread used (s, float)
    "sampler_max_pass_seconds",  # longest stretch one pass held the GIL without a break (s, float)
    "spool_reports",         # reports waiting in the local spool for the remote report store (now)
    "spool_bytes",           # bytes of those spooled files (now)
    "upload_failures",       # writes to the remote report store that failed (the report was spooled)
    "spool_dropped",         # spooled reports dropped, oldest first, past the spool's bounds
)


class Stats:
    """Thread-safe counters. ``incr`` takes one short lock; ``spans_started``, counted on
    every eligible span, is an ``itertools.count`` whose ``next()`` is atomic under the GIL
    and takes no lock (:meth:`started_counter`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Dict[str, float] = dict.fromkeys(STAT_KEYS, 0)
        self._started = itertools.count()
        reset_after_fork(self, "_new_lock")

    def started_counter(self) -> itertools.count[int]:
        """The ``spans_started`` counter: call ``next()`` on it once per eligible span."""
        return self._started

    def _new_lock(self) -> None:
        # in a forked child: another thread of the parent may have held the lock at fork time.
        self._lock = threading.Lock()

    def incr(self, key: str, amount: float = 1) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def set_max(self, key: str, value: float) -> None:
        """Keep the largest ``value`` seen for ``key``."""
        with self._lock:
            if value > self._values.get(key, 0):
                self._values[key] = value

    def snapshot(self) -> Dict[str, float]:
        with self._lock:
            values = dict(self._values)
        # the next value the count would return, read without consuming it: repr is "count(N)"
        values["spans_started"] += int(repr(self._started)[6:-1])
        return values

    def report(self) -> Dict[str, Any]:
        """``stats()``: the counters plus ``profiled_fraction`` (profiled / started spans, 0..1);
        float counters (seconds) rounded to µs."""
        values: Dict[str, Any] = self.snapshot()
        values["profiled_fraction"] = self.profiled_fraction(values)
        for key in ("profiling_seconds_estimate", "sampler_cpu_seconds", "sampler_max_pass_seconds"):
            values[key] = round(values[key], 6)
        return values

    def error(self, key: str, message: str, *args: object) -> None:
        """Count an ``internal_errors`` and log ``message`` once per ``key`` (with the traceback)."""
        self.incr("internal_errors")
        log_once(_logger, key, message, *args)

    def dropped(self) -> None:
        """Count a report lost to a full or closed queue (logged once)."""
        self.incr("reports_dropped")
        log_once(_logger, "queue-full", "report queue full or closed; slow span reports are being dropped",
                 exc_info=False)

    def profiled_fraction(self, values: Dict[str, float]) -> float:
        """spans_profiled / spans_started of a snapshot (0..1)."""
        started = values.get("spans_started", 0)
        return round(values.get("spans_profiled", 0) / started, 6) if started else 0.0


_logged: Set[str] = set()


def log_once(logger: logging.Logger, key: str, message: str, *args: object, exc_info: bool = True) -> None:
    """Log ``message`` as an error the first time ``key`` is seen in this process."""
    if key in _logged:
        return
    _logged.add(key)
    logger.error("otel-perfmon: " + message, *args, exc_info=exc_info)
