"""The watchdog: fires when an open span passes its deadline, while it is still recording.

The SDK freezes a span's attributes before any end-time processor hook runs, so the
``perfmon.*`` link attributes are set from here, on the watchdog's own daemon thread, the
moment a span becomes slow.

The request path does nothing for it: the watchdog scans the processor's table of open
spans (as many entries as requests in flight) and sleeps until the earliest deadline among
them, or for ``idle_wait_seconds`` (half the default threshold) when none is due sooner: a
span that starts while it sleeps cannot be due before it wakes unless the instrumentor started
it more than that long before our hook saw it. A span with a shorter threshold than the
default calls :meth:`wake` (rescan now); extra one-off deadlines (in-flight reports) go
through :meth:`schedule`. Either, arriving during a scan, makes the thread scan again before
it sleeps.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

from otel_perfmon._fork import reset_after_fork


class Watchdog:
    """A daemon thread that calls ``scan(now)`` periodically and ``on_deadline(item)`` for
    one-off items once their deadline has passed (unless the item has ``ended``). Times are
    ``time.time()`` seconds: span timestamps are wall-clock.

    ``scan(now)`` fires whatever open spans are due (on the watchdog thread; errors go to
    ``on_error``) and returns the earliest deadline still ahead (``math.inf`` if none); the
    thread sleeps until then, or ``idle_wait_seconds`` at most.
    """

    def __init__(self, scan: Callable[[float], float], on_deadline: Callable[[Any], None],
                 on_error: Callable[[BaseException], None], idle_wait_seconds: float) -> None:
        self._scan = scan
        self._on_deadline = on_deadline
        self._on_error = on_error
        self._idle_wait = idle_wait_seconds
        self._closed = False
        self._reset()
        reset_after_fork(self)

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: List[Tuple[float, int, Any]] = []
        self._seq = itertools.count()
        self._thread: Optional[threading.Thread] = None
        self._kicked = False  # schedule()/wake() since the current scan began: scan again at once
        self.running = False

    def ensure_started(self) -> None:
        """Start the thread if needed (cheap when running: callers check ``running`` first)."""
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="otel-perfmon-watchdog", daemon=True)
                self._thread.start()
                self.running = True

    def schedule(self, deadline: float, item: Any) -> None:
        """Fire ``item`` at ``deadline`` (an extra, one-off deadline). Any thread."""
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (deadline, next(self._seq), item))
            self._kicked = True
            self._cond.notify()
        if not self.running:
            self.ensure_started()

    def wake(self) -> None:
        """Rescan now (a span with a deadline earlier than the thread's next wake-up started)."""
        with self._cond:
            self._kicked = True
            self._cond.notify()

    def _fire(self, item: Any) -> None:
        try:
            self._on_deadline(item)
        except BaseException as exc:
            self._on_error(exc)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._kicked = False
            now = time.time()
            wake_at = now + self._idle_wait
            try:
                wake_at = min(wake_at, self._scan(now))
            except BaseException as exc:
                self._on_error(exc)
            due = []
            with self._cond:
                if self._closed:
                    return
                while self._heap and self._heap[0][0] <= now:
                    due.append(heapq.heappop(self._heap)[2])
                if self._heap and self._heap[0][0] < wake_at:
                    wake_at = self._heap[0][0]
            for item in due:
                if not item.ended:
                    self._fire(item)
            with self._cond:
                if self._closed:
                    return
                if not due and not self._kicked:
                    # bounded: a wall-clock step backwards must not stall the thread
                    self._cond.wait(min(self._idle_wait, max(0.0, wake_at - time.time())))

    def pending(self) -> int:
        """Number of one-off deadlines still scheduled."""
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
