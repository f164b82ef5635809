"""The watchdog: fires when an open span passes its deadline, while it is still recording.

The SDK freezes a span's attributes before any end-time processor hook runs, so the
``perfmon.*`` link attributes are set from here, on the watchdog's own daemon thread, the
moment a span becomes slow. ``schedule`` (request path) is a heap push under a short lock;
the thread is woken only when the new deadline is the earliest. Entries of spans that ended
early are dropped lazily when their deadline comes.
"""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from typing import Any, Callable, List, Optional, Tuple


class Watchdog:
    """Calls ``on_deadline(item)`` on a daemon thread at ``deadline`` (``time.monotonic`` s)."""

    def __init__(self, on_deadline: Callable[[Any], None], on_error: Callable[[BaseException], None]) -> None:
        self._on_deadline = on_deadline
        self._on_error = on_error
        self._closed = False
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: List[Tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None

    def schedule(self, deadline: float, item: Any) -> None:
        """Request path: O(log n) push; wakes the thread only for a new earliest deadline."""
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (deadline, next(self._seq), item))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="otel-perfmon-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is item:
                self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed:
                        return
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            _, _, item = heapq.heappop(self._heap)
                            break
                        self._cond.wait(wait)
                    else:
                        self._cond.wait()
            if getattr(item, "ended", False):
                continue
            try:
                self._on_deadline(item)
            except BaseException as exc:
                self._on_error(exc)

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def close(self, timeout_seconds: float = 1.0) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=timeout_seconds)
