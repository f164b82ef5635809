"""After-threshold stack sampler: a call tree for slow spans that had no pyinstrument session.

When the watchdog sees an unprofiled span pass its threshold, it registers the span here.
One daemon thread (``otel-perfmon-sampler``) then samples, every ``interval_seconds``, the
stack of that span's thread (``sys._current_frames``) or, on an event loop, of that span's
asyncio task: the loop thread's stack while the task runs, else the task's coroutine chain
ending in ``[await]``. Frames are identified exactly as pyinstrument does
(``pyinstrument.low_level.stat_profile.get_frame_info``), so the samples become a
pyinstrument ``Session`` rendered by pyinstrument's own renderers.

Cost: nothing while no span is past its threshold; while some are, one
``sys._current_frames()`` call and a stack walk per slow span per interval, on this thread.
Idea after py-spy / Austin-style external sampling, done in-process.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from otel_perfmon._fork import reset_after_fork

from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER
from pyinstrument.low_level.stat_profile import get_frame_info
from pyinstrument.session import Session

from otel_perfmon.profiling.span_profile import trim_thread_stack

MAX_SAMPLES_PER_SPAN = 100_000


def _thread_identifier(thread_id: int) -> str:
    thread = threading._active.get(thread_id)  # type: ignore[attr-defined]
    name = thread.name if thread is not None else "thread"
    return "%s\x00%s\x00%i" % (name, "<thread>", thread_id)


def thread_stack(frame: Any, thread_id: int) -> List[str]:
    """pyinstrument identifiers from the thread's root to ``frame``."""
    stack = []
    while frame is not None:
        stack.append(get_frame_info(frame))
        frame = frame.f_back
    stack.append(_thread_identifier(thread_id))
    stack.reverse()
    return stack


def coroutine_frames(task: Any) -> List[Any]:
    """Frames of a suspended task's await chain, outermost first."""
    frames = []
    awaitable = task.get_coro()
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return frames


class SpanTarget:
    """Where a span runs, as the sampler reads it: ``thread_id``, plus ``task`` and ``loop``
    when on an event loop, and ``worker_thread_id`` while a sync route runs in anyio's pool.
    Subclasses set them (the processor's ``_Tracked``); the defaults below are "none"."""

    thread_id: int = 0
    task: Any = None
    loop: Any = None
    worker_thread_id: Optional[int] = None

    def stack(self, frames: Dict[int, Any]) -> Optional[List[str]]:
        """The span's current stack (pyinstrument identifiers), or None if it is gone."""
        frame = frames.get(self.thread_id)
        if self.task is None:
            return thread_stack(frame, self.thread_id) if frame is not None else None
        if self.task.done():
            return None
        import asyncio

        if frame is not None and asyncio.current_task(self.loop) is self.task:
            return thread_stack(frame, self.thread_id)
        chain = coroutine_frames(self.task)
        if not chain:
            return None
        prefix = [get_frame_info(f) for f in chain]
        worker = self.worker_thread_id
        worker_frame = frames.get(worker) if worker is not None else None
        if worker_frame is not None:  # a sync route: the work is in anyio's worker thread
            return prefix + trim_thread_stack(thread_stack(worker_frame, worker))
        return prefix + [AWAIT_FRAME_IDENTIFIER]

    def frames(self) -> List[Any]:
        """Frames to search for the request (innermost first): used for in-flight headers."""
        if self.task is not None:
            return list(reversed(coroutine_frames(self.task)))
        frame = sys._current_frames().get(self.thread_id)
        found = []
        while frame is not None:
            found.append(frame)
            frame = frame.f_back
        return found


class _Capture:
    __slots__ = ("target", "records", "started", "last", "description", "done")

    def __init__(self, target: SpanTarget, description: str) -> None:
        self.target = target
        self.records: List[Tuple[List[str], float]] = []
        self.started = self.last = time.time()
        self.description = description
        self.done = False


class StackSampler:
    """Samples registered spans on one lazily started daemon thread (restarted after fork)."""

    def __init__(self, interval_seconds: float) -> None:
        self.interval_seconds = interval_seconds
        self._reset()
        reset_after_fork(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._captures: Dict[int, _Capture] = {}
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    def start(self, key: int, target: SpanTarget, description: str) -> None:
        """Begin sampling ``target`` under ``key`` (a span id). Background threads only."""
        capture = _Capture(target, description)
        self._sample_one(capture, sys._current_frames())
        with self._lock:
            if self._closed:
                return
            self._captures[key] = capture
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="otel-perfmon-sampler", daemon=True)
                self._thread.start()
        self._wake.set()

    def stop(self, key: int) -> Optional[Session]:
        """Stop sampling ``key`` and return its samples as a pyinstrument Session (or None).

        Called on the request thread at span end: a dict pop under a short lock, plus building
        the Session object from the records (no tree building)."""
        with self._lock:
            capture = self._captures.pop(key, None)
        if capture is None:
            return None
        capture.done = True
        return self._session(capture)

    def snapshot(self, key: int) -> Optional[Session]:
        """The samples of a still-running capture so far, with one fresh sample."""
        with self._lock:
            capture = self._captures.get(key)
        if capture is None:
            return None
        self._sample_one(capture, sys._current_frames())
        return self._session(capture)

    def one_shot(self, target: SpanTarget, description: str) -> Optional[Session]:
        """A single-sample Session of ``target``'s current stack."""
        capture = _Capture(target, description)
        self._sample_one(capture, sys._current_frames())
        return self._session(capture) if capture.records else None

    def _session(self, capture: _Capture) -> Optional[Session]:
        records = list(capture.records)
        if not records:
            return None
        return Session(frame_records=records, start_time=capture.started,
                       duration=max(capture.last - capture.started, self.interval_seconds),
                       min_interval=self.interval_seconds, max_interval=self.interval_seconds,
                       sample_count=len(records), start_call_stack=list(records[0][0][:1]),
                       target_description=capture.description,
                       cpu_time=0.0, sys_path=sys.path, sys_prefixes=Session.current_sys_prefixes())

    def _sample_one(self, capture: _Capture, frames: Dict[int, Any]) -> None:
        now = time.time()
        stack = capture.target.stack(frames)
        if stack is not None and len(capture.records) < MAX_SAMPLES_PER_SPAN:
            capture.records.append((stack, max(now - capture.last, 0.0) if capture.records else self.interval_seconds))
        capture.last = now

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                captures = list(self._captures.values())
            if not captures:
                self._wake.wait()
                self._wake.clear()
                continue
            frames = sys._current_frames()
            for capture in captures:
                if not capture.done:
                    self._sample_one(capture, frames)
            del frames
            time.sleep(self.interval_seconds)

    def active(self) -> int:
        with self._lock:
            return len(self._captures)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._captures.clear()
        self._wake.set()
