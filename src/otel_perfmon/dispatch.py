"""Background threads: the bounded report queue and one runner per exporter.

Modelled on sentry-python's ``worker.py``: a bounded queue drained by one named daemon
thread, started lazily on the first ``submit`` and again in a forked child (gunicorn
workers), ``submit() -> bool`` that never blocks, ``flush(timeout)`` and a bounded ``close``.
Each exporter gets its own :class:`BackgroundQueue`, so a hung notifier only stalls itself;
while one call has run longer than ``export_timeout_seconds`` new reports for that exporter
are skipped and counted as export failures.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, List, Optional

from otel_perfmon._fork import reset_after_fork
from otel_perfmon.exporters.base import ExportResult
from otel_perfmon.stats import Stats, log_once

_logger = logging.getLogger(__name__)
_STOP = object()


class BackgroundQueue:
    """A bounded queue served by one daemon thread named ``name``.

    ``handler(item)`` runs on that thread; its exceptions are passed to ``on_error``.
    ``submit`` is safe on the request path (no I/O, no waiting).
    """

    def __init__(self, name: str, handler: Callable[[Any], None], maxsize: int,
                 on_drop: Callable[[Any], None], on_error: Callable[[BaseException], None]) -> None:
        self.name = name
        self._handler = handler
        self._maxsize = maxsize
        self._on_drop = on_drop
        self._on_error = on_error
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self.busy_since: Optional[float] = None
        self._reset()
        reset_after_fork(self)

    def _reset(self) -> None:
        # also the fork hook: the parent's thread does not exist in the child.
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self._maxsize)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._thread: Optional[threading.Thread] = None
        self.busy_since = None

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    thread.start()
                    self._thread = thread

    def submit(self, item: Any) -> bool:
        """Queue ``item``; False (and ``on_drop``) when full or closed. Never blocks."""
        if self._closed:
            self._on_drop(item)
            return False
        self._ensure_thread()
        with self._lock:
            self._pending += 1
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._done()
            self._on_drop(item)
            return False
        return True

    def _done(self) -> None:
        with self._lock:
            self._pending -= 1
            if self._pending <= 0:
                self._idle.notify_all()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            self.busy_since = time.monotonic()
            try:
                self._handler(item)
            except BaseException as exc:  # the thread must survive anything
                self._on_error(exc)
            finally:
                self.busy_since = None
                self._done()

    def flush(self, timeout_seconds: float) -> bool:
        """Wait up to ``timeout_seconds`` until every submitted item was handled."""
        deadline = time.monotonic() + max(0.0, timeout_seconds)
        with self._lock:
            while self._pending > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self, timeout_seconds: float) -> bool:
        """Stop after the queued items, waiting at most ``timeout_seconds``; True if drained."""
        self._closed = True
        drained = self.flush(timeout_seconds)
        if not drained:  # what is left will never be handled: count it as dropped
            abandoned = 1 if self.busy_since is not None else 0
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
                abandoned += 1
            for _ in range(abandoned):
                self._on_drop(None)
        thread = self._thread
        if thread is not None:
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                pass
            if drained:
                thread.join(timeout=1.0)
        return drained


class Dispatcher:
    """Hands each written report to every exporter on the exporter's own thread."""

    def __init__(self, exporters: List[Any], timeout_seconds: float, queue_size: int, stats: Stats) -> None:
        self._stats = stats
        self._timeout = timeout_seconds
        self.exporters = list(exporters)
        self._runners = [
            BackgroundQueue(
                f"otel-perfmon-export-{getattr(exporter, 'name', type(exporter).__name__)}",
                self._handler(exporter), queue_size,
                on_drop=self._drop_callback(exporter), on_error=self._error_callback(exporter))
            for exporter in self.exporters
        ]

    def _drop_callback(self, exporter: Any) -> Callable[[Any], None]:
        return lambda _item: self._failed(exporter, "queue full or closed", None)

    def _error_callback(self, exporter: Any) -> Callable[[BaseException], None]:
        return lambda exc: self._failed(exporter, "raised", exc)

    def _name(self, exporter: Any) -> str:
        return getattr(exporter, "name", None) or type(exporter).__name__

    def _failed(self, exporter: Any, why: str, exc: Optional[BaseException]) -> None:
        self._stats.incr("export_failures")
        name = self._name(exporter)
        if exc is not None:
            log_once(_logger, f"export:{name}:{type(exc).__name__}", "exporter %s %s: %r", name, why, exc)
        else:
            log_once(_logger, f"export:{name}:{why}", "exporter %s: %s", name, why, exc_info=False)

    def _handler(self, exporter: Any) -> Callable[[Any], None]:
        def run(report: Any) -> None:
            started = time.monotonic()
            result = exporter.export(report)
            if result is not ExportResult.SUCCESS:
                self._failed(exporter, "returned FAILURE", None)
            elif time.monotonic() - started > self._timeout:
                self._failed(exporter, f"took longer than {self._timeout} s", None)
        return run

    def dispatch(self, report: Any) -> None:
        """Queue ``report`` for every exporter; skips (and counts) exporters stuck past the timeout."""
        now = time.monotonic()
        for exporter, runner in zip(self.exporters, self._runners):
            busy = runner.busy_since
            if busy is not None and now - busy > self._timeout:
                self._failed(exporter, f"stuck for more than {self._timeout} s; report skipped", None)
                continue
            runner.submit(report)

    def flush(self, timeout_seconds: float) -> bool:
        deadline = time.monotonic() + timeout_seconds
        ok = True
        for exporter, runner in zip(self.exporters, self._runners):
            ok = runner.flush(max(0.0, deadline - time.monotonic())) and ok
            try:
                ok = bool(exporter.force_flush(timeout_seconds=max(0.0, deadline - time.monotonic()))) and ok
            except Exception as exc:
                self._failed(exporter, "force_flush raised", exc)
                ok = False
        return ok

    def close(self, timeout_seconds: float) -> bool:
        """Drain within ``timeout_seconds`` then shut every exporter down on a daemon thread."""
        deadline = time.monotonic() + timeout_seconds
        ok = True
        for runner in self._runners:
            ok = runner.close(max(0.0, deadline - time.monotonic())) and ok
        for exporter in self.exporters:
            done = threading.Event()

            def stop(e: Any = exporter, d: threading.Event = done) -> None:
                try:
                    e.shutdown()
                except Exception as exc:
                    self._failed(e, "shutdown raised", exc)
                finally:
                    d.set()

            threading.Thread(target=stop, name="otel-perfmon-exporter-shutdown", daemon=True).start()
            ok = done.wait(max(0.0, deadline - time.monotonic())) and ok
        return ok
