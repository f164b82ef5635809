"""Counters behind ``perfmon.stats()`` and one-time error logging."""

from __future__ import annotations

import logging
import threading
from typing import Dict, Set

STAT_KEYS = (
    "spans_started",         # eligible spans seen (local-root SERVER spans, @profile spans)
    "spans_profiled",        # of those, spans that got a pyinstrument session
    "slow_spans",            # spans over their threshold
    "reports_created",       # new reports written to report_dir
    "reports_deduplicated",  # slow spans counted against an existing report
    "reports_dropped",       # slow spans lost: queue full, shut down, or the build failed
    "export_failures",       # exporter calls that failed, timed out or were skipped while stuck
    "internal_errors",       # exceptions caught inside otel-perfmon's hooks and threads
)


class Stats:
    """Thread-safe counters; ``incr`` is safe to call from the request path (one short lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: Dict[str, int] = dict.fromkeys(STAT_KEYS, 0)

    def incr(self, key: str, amount: int = 1) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount

    def snapshot(self) -> Dict[str, int]:
        with self._lock:
            return dict(self._values)


_logged: Set[str] = set()


def log_once(logger: logging.Logger, key: str, message: str, *args: object, exc_info: bool = True) -> None:
    """Log ``message`` as an error the first time ``key`` is seen in this process."""
    if key in _logged:
        return
    _logged.add(key)
    logger.error("otel-perfmon: " + message, *args, exc_info=exc_info)
