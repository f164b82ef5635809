"""Profile the worker threads that run sync FastAPI / Starlette routes.

FastAPI runs ``def`` endpoints and sync dependencies through
``starlette.concurrency.run_in_threadpool`` -> ``anyio.to_thread.run_sync``. pyinstrument
samples only the thread it started on, so the event loop's profile shows nothing but
``run_sync_in_worker_thread`` (the blind spot of the older middlewares). :func:`install` wraps
``anyio.to_thread.run_sync`` once per process: when the calling task's span is being
profiled, the callable runs under its own pyinstrument profiler in the worker thread and the
session is attached to the span's profile; when it is not, the worker thread's id is recorded
so the stack sampler can sample it. Calls outside a tracked span pass straight
through.

The span is found from the calling task's OTel context (see :func:`otel_perfmon.tracking.target_for_context`)
when ``run_sync`` is called, so the request path itself sets nothing for this: spans of async
routes that never call ``run_sync`` pay nothing.
"""

from __future__ import annotations

import functools
import logging
import threading
import weakref
from typing import Any, Callable, Optional

_logger = logging.getLogger(__name__)

_MARK = "__otel_perfmon_wrapped__"

#: Running PerfmonSpanProcessors (weakly held): ``run_sync`` asks each for the OpenSpan of
#: the calling context (``target_for_context()``, on the event loop).
_SPAN_TRACKERS: weakref.WeakSet[Any] = weakref.WeakSet()


def add_span_tracker(tracker: Any) -> None:
    """Register an object with ``target_for_context() -> Optional[OpenSpan]`` (idempotent)."""
    _SPAN_TRACKERS.add(tracker)


def remove_span_tracker(tracker: Any) -> None:
    """Unregister it (at the processor's shutdown)."""
    _SPAN_TRACKERS.discard(tracker)


def _current_target() -> Optional[Any]:
    for tracker in list(_SPAN_TRACKERS):
        try:
            target = tracker.target_for_context()
        except Exception:  # never break the route because the lookup failed
            _logger.debug("otel-perfmon: span lookup for run_sync failed", exc_info=True)
            continue
        if target is not None:
            return target
    return None


def _run_profiled(profile: Any, func: Callable[..., Any], *args: Any) -> Any:
    # Runs in the anyio worker thread. The name is matched when grafting (span_profile.py).
    from otel_perfmon.profiling.sessions import new_profiler

    try:
        profiler = new_profiler(profile.interval_seconds, async_mode=False)
        profiler.start()
    except Exception:  # never break the route because profiling failed
        _logger.debug("otel-perfmon: could not profile worker thread", exc_info=True)
        return func(*args)
    try:
        return func(*args)
    finally:
        try:
            profile.add_thread_session(profiler.stop())
        except Exception:
            _logger.debug("otel-perfmon: could not stop worker-thread profiler", exc_info=True)


def _run_tracked(target: Any, func: Callable[..., Any], *args: Any) -> Any:
    # Runs in the anyio worker thread for an unprofiled span: tells the stack
    # sampler which thread does the span's work. The name is matched when grafting.
    target.worker_thread_id = threading.get_ident()
    try:
        return func(*args)
    finally:
        target.worker_thread_id = None


def install() -> bool:
    """Wrap ``anyio.to_thread.run_sync`` (idempotent). Returns False when anyio is absent."""
    try:
        import anyio.to_thread as to_thread
    except ImportError:
        return False
    original = to_thread.run_sync
    if getattr(original, _MARK, False):
        return True

    @functools.wraps(original)
    async def run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        target = _current_target() if _SPAN_TRACKERS else None
        if target is not None:
            profile = target.profile
            if profile is not None and profile.running:
                func = functools.partial(_run_profiled, profile, func)
            else:
                func = functools.partial(_run_tracked, target, func)
        return await original(func, *args, **kwargs)

    setattr(run_sync, _MARK, True)
    run_sync.__wrapped_original__ = original  # type: ignore[attr-defined]
    to_thread.run_sync = run_sync
    return True
