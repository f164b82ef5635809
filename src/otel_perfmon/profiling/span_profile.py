"""A pyinstrument session bound to one span.

``SpanProfile.start()``/``stop()`` run on the request thread or event loop (20–40 µs each,
pyinstrument's own cost). On an event loop the profiler runs in pyinstrument's
``async_mode="enabled"``, so time spent in other tasks shows as ``[await]`` and no other
request's samples enter this profile. Work that a sync FastAPI route does in anyio's worker
thread is profiled there (see :mod:`otel_perfmon.profiling.threads`) and grafted back under
the awaiting coroutine by :meth:`SpanProfile.session`, which runs on the background worker.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Dict, List, Optional, Sequence, Tuple

from pyinstrument import Profiler
from pyinstrument.frame import AWAIT_FRAME_IDENTIFIER
from pyinstrument.session import Session

from otel_perfmon.profiling.sessions import new_profiler, session_from_records

FrameRecord = Tuple[List[str], float]

#: Functions in threads.py that run a sync callable in a worker thread for a span; frames up
#: to and including them are dropped when grafting.
_THREAD_ENTRY_FUNCTIONS = ("_run_profiled", "_run_tracked")


def _function_and_file(identifier: str) -> Tuple[str, str]:
    parts = identifier.split("\x00")
    return parts[0], (parts[1] if len(parts) > 1 else "")


#: (function, file suffix) of the awaits that hand a sync call to a worker thread: anyio's
#: run_sync (FastAPI/Starlette) and asgiref's SyncToAsync (Django under ASGI).
_THREAD_HANDOFFS = (("run_sync", "anyio/to_thread.py"), ("__call__", "asgiref/sync.py"))


def _is_anyio_thread_await(stack: Sequence[str]) -> bool:
    if not stack or stack[-1] != AWAIT_FRAME_IDENTIFIER:
        return False
    for identifier in stack:
        function, path = _function_and_file(identifier)
        path = path.replace("\\", "/")
        if any(function == name and path.endswith(suffix) for name, suffix in _THREAD_HANDOFFS):
            return True
    return False


def trim_thread_stack(stack: Sequence[str]) -> List[str]:
    """Drop a worker thread's frames up to and including otel-perfmon's entry function."""
    for index in range(len(stack) - 1, -1, -1):
        function, path = _function_and_file(stack[index])
        if function in _THREAD_ENTRY_FUNCTIONS and path.endswith("threads.py"):
            return list(stack[index + 1:])
    return list(stack)


def graft_thread_records(loop_records: Sequence[FrameRecord],
                         thread_records: Sequence[Sequence[FrameRecord]]) -> List[FrameRecord]:
    """Replace the event loop's ``[await]`` samples on anyio's ``run_sync`` by the samples
    taken in the worker threads, placed under the awaiting coroutine's stack.

    ``thread_records`` holds one record list per worker-thread call, in start order. Consecutive
    await samples with the same stack form one episode; episodes pair with thread calls in order
    when their counts match, otherwise every call goes under the longest-waiting stack.
    Pure function; called on the background worker.
    """
    episodes: List[List[str]] = []
    waited: Dict[Tuple[str, ...], float] = {}
    kept: List[FrameRecord] = []
    for stack, seconds in loop_records:
        if _is_anyio_thread_await(stack):
            prefix = list(stack[:-1])
            if not episodes or episodes[-1] != prefix:
                episodes.append(prefix)
            waited[tuple(prefix)] = waited.get(tuple(prefix), 0.0) + seconds
        else:
            kept.append((stack, seconds))
    if len(episodes) != len(thread_records):
        fallback = list(max(waited.items(), key=lambda item: item[1])[0]) if waited else []
        episodes = [fallback] * len(thread_records)
    for prefix, records in zip(episodes, thread_records):
        for stack, seconds in records:
            kept.append((prefix + trim_thread_stack(stack), seconds))
    return kept


class SpanProfile:
    """One span's profiler. ``start``/``stop`` must run on the same thread (pyinstrument's rule).

    ``interval_seconds`` is pyinstrument's sampling interval. Never raises from ``start``/``stop``
    to the caller's caller: the processor wraps both and counts failures.
    """

    __slots__ = ("interval_seconds", "is_async", "_profiler", "_session", "_thread_sessions",
                 "_lock", "started_at", "thread_id")

    def __init__(self, interval_seconds: float) -> None:
        self.interval_seconds = interval_seconds
        self.is_async = False
        self._profiler: Optional[Profiler] = None
        self._session: Optional[Session] = None
        self._thread_sessions: List[Session] = []
        self._lock = threading.Lock()
        self.started_at = 0.0
        self.thread_id = 0

    def start(self, description: str = "") -> None:
        """Start sampling the calling thread (or, on an event loop, the calling task).

        ``description`` names the profile in renderings (the span name)."""
        self.is_async = asyncio._get_running_loop() is not None
        self._profiler = new_profiler(self.interval_seconds, self.is_async)
        self.thread_id = threading.get_ident()
        self.started_at = time.time()
        self._profiler.start(target_description=description or None)

    @property
    def running(self) -> bool:
        return self._profiler is not None and self._session is None

    def stop(self) -> None:
        """Stop sampling; cheap (no tree building or rendering). Same thread as ``start``."""
        profiler = self._profiler
        if profiler is not None and self._session is None:
            self._session = profiler.stop()

    def add_thread_session(self, session: Session) -> None:
        """Attach a worker-thread session; called from that worker thread."""
        with self._lock:
            self._thread_sessions.append(session)

    def session(self) -> Optional[Session]:
        """The combined session (worker threads grafted in); call after ``stop``, off the request path."""
        session = self._session
        if session is None:
            return None
        with self._lock:
            threads = sorted(self._thread_sessions, key=lambda s: s.start_time)
        if not threads:
            return session
        records = graft_thread_records(session.frame_records, [t.frame_records for t in threads])
        return session_from_records(
            records, start_time=session.start_time, duration_seconds=session.duration,
            interval_seconds=session.min_interval, description=session.target_description,
            cpu_time_seconds=session.cpu_time + sum(t.cpu_time for t in threads),
            start_call_stack=session.start_call_stack, sys_path=session.sys_path, sys_prefixes=session.sys_prefixes)
