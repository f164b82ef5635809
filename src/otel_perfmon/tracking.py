"""The open-span table: one :class:`OpenSpan` per eligible span between ``on_start`` and ``on_end``.

The request path (``PerfmonSpanProcessor.on_start``) builds the record and puts it in the
table (a plain dict, span id -> OpenSpan); ``on_end`` pops it. Three background threads read
the table without locks (a ``list(table.values())`` copy is atomic under the GIL): the
watchdog (deadlines, :mod:`otel_perfmon.slow`), the stack sampler
(:mod:`otel_perfmon.profiling.sampler`) and, on the event loop, anyio's ``run_sync`` wrapper
(:func:`target_for_context`). Each field has one writer, named below, so no lock is needed.

A ``__slots__`` class rather than the 8-slot list this used to be: an interleaved A/B run (a
warm loop that builds the record, puts it in the table, pops it and reads three fields;
docs/performance.md, "The open-span record") measured 390 ns per span for this class and
205 ns for the list: ~0.2 µs, 0.02–0.06 % of the bench's fastest requests, inside the noise
of every request-level measurement.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import Any, Dict, List, Optional

from opentelemetry.trace import get_current_span

#: Set by ``@profile`` around the start of its span (through :func:`force_threshold`): its
#: threshold in seconds (<= 0: the configured one). Spans started while it is set are
#: tracked whatever their kind.
FORCED_THRESHOLD: ContextVar[Optional[float]] = ContextVar("otel_perfmon_forced_threshold", default=None)
#: True once ``@profile`` has started a span in this process: until then ``on_start`` skips
#: the ContextVar read for spans that are not server spans (it reads this module attribute:
#: no call per span).
forced_in_use = False


def force_threshold(threshold_seconds: float) -> Any:
    """Mark spans started from now on in this context as ``@profile`` spans with this threshold
    (seconds; <= 0: the configured one). Returns the token for ``FORCED_THRESHOLD.reset``."""
    global forced_in_use
    forced_in_use = True
    return FORCED_THRESHOLD.set(threshold_seconds)


#: At most this many ended spans of a tracked trace are kept for its report (then counted).
MAX_CHILD_SPANS = 1000


class OpenSpan:
    """One tracked span while it is open (and, for a slow one, until its report is built).

    Written by the request thread: ``span``, ``threshold_seconds``, ``thread_id``, ``task``
    (the asyncio task, or None on a plain thread), ``profile`` (a SpanProfile or None),
    ``ended``, ``tracked_open``, ``children`` (the trace's other spans that ended in this process while it was
    the trace's tracked root, at most ``MAX_CHILD_SPANS``; ``children_dropped`` counts the rest).
    By the run_sync wrapper: ``worker_thread_id`` (the anyio worker thread running
    a sync route for this span). By the sampler thread: ``samples``. By the watchdog:
    ``fired`` and, for an asyncio span, ``request`` (the parameters its handler parsed). By
    whichever background thread claims first (under the claim lock): ``claim``. By the worker:
    ``notified``.
    """

    __slots__ = ("span", "threshold_seconds", "thread_id", "task", "profile", "ended", "worker_thread_id",
                 "samples", "fired", "claim", "notified", "children", "children_dropped", "request", "tracked_open")

    def __init__(self, span: Any, threshold_seconds: float, thread_id: int, task: Any) -> None:
        self.span = span
        self.threshold_seconds = threshold_seconds
        self.thread_id = thread_id
        self.task = task
        self.profile: Any = None
        self.ended = False
        self.worker_thread_id: Optional[int] = None
        self.samples: Any = None
        self.fired = False
        self.claim: Any = None
        self.notified = False
        self.children: Optional[List[Any]] = None  # ended spans of this trace in this process
        self.children_dropped = 0
        self.request: Optional[Dict[str, Any]] = None  # request parameters found at the deadline
        self.tracked_open = 0  # of a trace's outermost tracked span: its trace's tracked spans still open

    @property
    def span_id(self) -> int:
        return int(self.span.context.span_id)

    @property
    def started(self) -> float:
        """The span's start, ``time.time()`` seconds (the SDK stamps ``time.time_ns()``)."""
        start_ns = self.span.start_time
        return start_ns / 1e9 if start_ns else 0.0


def target_for_context(table: Dict[int, OpenSpan]) -> Optional[OpenSpan]:
    """The open span the calling context runs under, or None: the current OTel span, its
    parent, or else the innermost open tracked span of the same trace (on this task when
    several tasks have one). Called by the ``run_sync`` wrapper (profiling/threads.py) on the
    event loop; cheap when nothing is tracked."""
    if not table:
        return None
    span = get_current_span()
    context = span.get_span_context()
    found = table.get(context.span_id)
    if found is None:
        parent = getattr(span, "parent", None)
        found = table.get(parent.span_id) if parent is not None else None
    if found is None and context.is_valid:
        # deeper nesting: the open tracked spans of this trace, on this task when that tells
        # them apart, innermost (latest started) first, as for nested @profile spans
        candidates: List[OpenSpan] = [
            entry for entry in list(table.values())
            if not entry.ended and entry.span.context.trace_id == context.trace_id]
        if len(candidates) > 1:
            task = asyncio.current_task() if asyncio._get_running_loop() is not None else None
            candidates = [e for e in candidates if e.task is task] or candidates
        if candidates:
            found = max(candidates, key=lambda e: e.started)
    if found is not None and found.ended:
        return None
    return found
