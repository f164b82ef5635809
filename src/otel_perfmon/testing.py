"""Helpers for testing apps that use otel-perfmon (public, like structlog.testing).

``InMemoryReportExporter`` collects reports; ``wait_until`` polls a condition with a deadline;
``FakeClock`` is a clock a test moves by hand (after pyinstrument's ``FakeClock``), for the
components that take a ``clock`` (``AdaptiveProfilePolicy(clock=...)``), so no test waits out
a real window.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, List

from otel_perfmon.exporters.base import ExportResult, ReportExporter


class InMemoryReportExporter(ReportExporter):
    """Keeps every exported report in ``reports`` (thread-safe)."""

    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reports: List[Any] = []
        self.shut_down = False

    def export(self, report: Any) -> ExportResult:
        with self._lock:
            self._reports.append(report)
        return ExportResult.SUCCESS

    @property
    def reports(self) -> List[Any]:
        with self._lock:
            return list(self._reports)

    def clear(self) -> None:
        with self._lock:
            self._reports.clear()

    def shutdown(self) -> None:
        self.shut_down = True


def wait_until(predicate: Callable[[], Any], timeout_seconds: float = 10.0, interval_seconds: float = 0.02,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value (returned) or raise AssertionError
    after ``timeout_seconds``."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_seconds} s waiting for {message}")
        time.sleep(interval_seconds)


class FakeClock:
    """A monotonic clock in seconds that only moves when told: ``clock()`` reads it,
    ``advance(seconds)`` moves it forward. Thread-safe; never sleeps."""

    def __init__(self, start_seconds: float = 1000.0) -> None:
        self._lock = threading.Lock()
        self._now = float(start_seconds)

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (>= 0); returns the new time."""
        if seconds < 0:
            raise ValueError("a monotonic clock does not go back")
        with self._lock:
            self._now += seconds
            return self._now
