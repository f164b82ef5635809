"""The one place a pyinstrument ``Profiler`` or ``Session`` is assembled.

:func:`new_profiler` builds the profiler of a span (or of an anyio worker thread), with
pyinstrument's timer-overhead warning routed once through the ``otel_perfmon`` logger instead
of being printed into the app's stderr. :func:`session_from_records` turns frame records
(pyinstrument identifiers, seconds) into a ``Session`` that pyinstrument's own renderers draw.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, List, Optional, Sequence, Tuple

from pyinstrument import Profiler
from pyinstrument.session import Session

FrameRecord = Tuple[List[str], float]

_logger = logging.getLogger("otel_perfmon.profiling")
_warned = False


def _silence_timer_warning() -> None:
    # pyinstrument prints ~15 lines to stderr when its timer is slow (virtual machines); the
    # check runs once per thread's stack sampler. Log it once ourselves and mark the calling
    # thread's sampler as warned, so the app's stderr stays clean.
    global _warned
    try:
        from pyinstrument import stack_sampler

        sampler = stack_sampler.get_stack_sampler()
        if sampler.has_warned_about_timing_overhead:
            return
        sampler.has_warned_about_timing_overhead = True
        if not _warned:
            _warned = True
            overhead = stack_sampler.timing_overhead().get("walltime")
            if overhead is not None and overhead > 300e-9:
                _logger.warning("otel-perfmon: pyinstrument's timer costs %.0f ns per call on this machine; "
                                "full profiles cost more here than the documented figures", overhead * 1e9)
    except Exception:  # a pyinstrument without these internals: its own warning may print
        _logger.debug("otel-perfmon: could not check pyinstrument's timer", exc_info=True)


def new_profiler(interval_seconds: float, async_mode: bool) -> Profiler:
    """A pyinstrument Profiler for the calling thread (``async_mode``: per asyncio task).
    Call on the thread that will start it; raises what pyinstrument raises."""
    _silence_timer_warning()
    return Profiler(interval=interval_seconds, async_mode="enabled" if async_mode else "disabled")


def session_from_records(records: Sequence[FrameRecord], start_time: float, duration_seconds: float,
                         interval_seconds: float, description: str, cpu_time_seconds: Optional[float],
                         start_call_stack: Optional[List[str]] = None, sys_path: Any = None,
                         sys_prefixes: Any = None, sample_count: Optional[int] = None) -> Optional[Session]:
    """A Session of ``records`` (None when there are none). ``start_time`` is ``time.time()``
    seconds, durations and intervals are seconds; ``cpu_time_seconds`` None means unknown
    (rendered as 0 by pyinstrument; :func:`otel_perfmon.report.build.call_tree_text` says
    "n/a" instead). Any thread; no I/O."""
    records = list(records)
    if not records:
        return None
    return Session(frame_records=records, start_time=start_time, duration=duration_seconds,
                   min_interval=interval_seconds, max_interval=interval_seconds,
                   sample_count=sample_count if sample_count is not None else len(records),
                   start_call_stack=start_call_stack if start_call_stack is not None else list(records[0][0][:1]),
                   target_description=description, cpu_time=cpu_time_seconds or 0.0,
                   sys_path=sys_path if sys_path is not None else sys.path,
                   sys_prefixes=sys_prefixes if sys_prefixes is not None else Session.current_sys_prefixes())
