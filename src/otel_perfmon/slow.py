"""What happens when an open span becomes slow: runs on the watchdog thread.

The watchdog (:mod:`otel_perfmon.watchdog`) calls :meth:`SlowSpans.scan` with the time; for
each open span past its threshold this asks the dedup store which report the span belongs to
(the *claim*), tells the policy, and sets the ``perfmon.*`` link attributes while the span is
still recording (the SDK freezes attributes before any end-time hook runs). For a span that
owns a new report, it schedules an in-flight report at ``inflight_multiple`` × its threshold:
an early report of a request that may be stuck, replaced by the final one when the span ends.

The call tree itself needs nothing from here: the stack sampler samples every open span from
its start (:mod:`otel_perfmon.profiling.sampler`).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from otel_perfmon import attributes as attr
from otel_perfmon.dedup import Claim, DedupStore
from otel_perfmon.profiling.sampler import StackSampler
from otel_perfmon.report.capture import capture_span, headers_in_frames, span_fingerprint
from otel_perfmon.report.ids import new_report_id
from otel_perfmon.report.request import parameters_in_frames
from otel_perfmon.tracking import OpenSpan
from otel_perfmon.watchdog import Watchdog


class _InFlight:
    """Watchdog item: the span is still open at ``inflight_multiple`` × its threshold."""

    __slots__ = ("open_span",)

    def __init__(self, open_span: OpenSpan) -> None:
        self.open_span = open_span

    @property
    def ended(self) -> bool:
        return self.open_span.ended


def _frames_of(open_span: OpenSpan) -> List[Any]:
    """Frames of another thread's (or task's) request whose locals may be read for its headers
    and parameters (innermost first). The innermost frame of a running thread or task is left
    out: it may be a frame another thread has just pushed and not yet set up, and reading
    ``f_locals`` (CPython 3.11 runs FastToLocals on it) of such a frame can crash the process
    (see profiling/sampler.py, ``frame_identifier``). A caller's frame is past its set-up (it is
    in a call), and so is every frame of a suspended task; the request objects sought live in
    the framework's outer frames."""
    import asyncio
    import sys

    from otel_perfmon.profiling.sampler import coroutine_frames

    task = open_span.task
    if task is not None:
        chain = list(reversed(coroutine_frames(task)))
        try:
            running = asyncio.current_task(task.get_loop()) is task
        except Exception:
            running = True
        return chain[1:] if running else chain
    frame = sys._current_frames().get(open_span.thread_id)
    found: List[Any] = []
    while frame is not None:
        found.append(frame)
        frame = frame.f_back
    return found[1:]


class SlowSpans:
    """Deadline handling for the open-span ``table``. ``submit(captured) -> bool`` queues an
    in-flight report for the worker; ``on_report(name, window_seconds)`` is the policy's.
    :meth:`claim` is also called by the worker (whichever thread asks first claims)."""

    def __init__(self, table: Dict[int, OpenSpan], config: Any, store: DedupStore, sampler: StackSampler,
                 on_report: Callable[[str, float], None], submit: Callable[[Any], bool],
                 on_error: Callable[[BaseException], None], capture: Any, redact: Any) -> None:
        self._table = table
        self._config = config
        self._store = store
        self._sampler = sampler
        self._on_report = on_report
        self._submit = submit
        self._capture, self._redact = capture, redact
        self._claim_lock = threading.Lock()
        self.watchdog = Watchdog(self.scan, self.on_deadline, on_error,
                                 idle_wait_seconds=config.threshold_seconds / 2)

    def claim(self, open_span: OpenSpan) -> Claim:
        """The span's report id from the dedup store (claimed once per span). Background
        threads; may block on the store's I/O."""
        with self._claim_lock:
            if open_span.claim is None:
                now = time.time()
                open_span.claim = self._store.claim(span_fingerprint(open_span.span), new_report_id(now), now,
                                                    self._config.dedup_window_seconds)
            return open_span.claim  # type: ignore[no-any-return]

    def link_attributes(self, report_id: str) -> Dict[str, Any]:
        """The ``perfmon.*`` attributes that link a slow span to ``report_id``."""
        values: Dict[str, Any] = {attr.PERFMON_SLOW: True, attr.PERFMON_REPORT_ID: report_id}
        url = self._config.report_url(report_id)
        if url:
            values[attr.PERFMON_REPORT_URL] = url
        return values

    def scan(self, now: float) -> float:
        """Fire the open spans whose deadline (``time.time()`` s) has passed; returns the
        earliest deadline still ahead (inf if none). Watchdog thread."""
        next_deadline = math.inf
        for open_span in list(self._table.values()):
            if open_span.ended or open_span.fired:
                continue
            started = open_span.started
            if not started:
                continue
            deadline = started + open_span.threshold_seconds
            if deadline > now:
                next_deadline = min(next_deadline, deadline)
                continue
            open_span.fired = True
            self.on_deadline(open_span)
        return next_deadline

    def on_deadline(self, item: Any) -> None:
        """The span is still open and has just become slow (or, for an in-flight item, is
        still open at ``inflight_multiple`` × its threshold). Watchdog thread."""
        if isinstance(item, _InFlight):
            self._report_in_flight(item.open_span)
            return
        fire = getattr(item, "fire", None)
        if fire is not None:  # another one-off background item (the route-stats flush)
            fire()
            return
        open_span: OpenSpan = item
        span = open_span.span
        if open_span.ended:
            return
        claim = self.claim(open_span)
        self._on_report(span.name, self._config.dedup_window_seconds)
        if open_span.ended or not span.is_recording():
            return
        span.set_attributes(self.link_attributes(claim.report_id))
        if open_span.task is not None and self._config.capture_request_body != "never":
            # an asyncio span's handler frames are gone by its end: take what it parsed now
            open_span.request = parameters_in_frames(_frames_of(open_span), self._config.capture_request_body)
        multiple = self._config.inflight_multiple
        if claim.is_new and multiple > 0:
            self.watchdog.schedule(open_span.started + multiple * open_span.threshold_seconds, _InFlight(open_span))

    def _report_in_flight(self, open_span: OpenSpan) -> None:
        # an early report of a request that is still running (maybe stuck)
        span = open_span.span
        if open_span.ended:
            return
        samples: Optional[Any] = open_span.samples
        if samples is None:
            samples = self._sampler.one_shot(open_span, span.name)
        self._submit(capture_span(open_span, span, time.time_ns(), "in_flight", None, samples,
                                  self._config.sampler_interval_seconds, headers_in_frames(_frames_of(open_span)),
                                  self._capture, self._redact))
