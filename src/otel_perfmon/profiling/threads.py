"""Profile the worker threads that run sync FastAPI / Starlette routes and Django views.

FastAPI runs ``def`` endpoints and sync dependencies through
``starlette.concurrency.run_in_threadpool`` -> ``anyio.to_thread.run_sync``. pyinstrument
samples only the thread it started on, so the event loop's profile shows nothing but
``run_sync_in_worker_thread`` (the blind spot of the older middlewares). :func:`install` wraps
``anyio.to_thread.run_sync`` once per process: when the calling task's span is being
profiled, the callable runs under its own pyinstrument profiler in the worker thread and the
session is attached to the span's profile; when it is not, the worker thread's id is recorded
so the stack sampler can sample it. Calls outside a tracked span pass straight
through.

Django under ASGI runs ``def`` views (and sync-only middleware) through asgiref's
``SyncToAsync``; :func:`install_asgiref` wraps ``SyncToAsync.thread_handler`` the same way.
There the span is looked up in the worker thread, inside the context asgiref copied from the
calling task, and nothing is done when the callable runs on the span's own thread (Django's
thread-sensitive calls come back to the thread that started the span: it is already sampled).

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
    previous = target.worker_thread_id
    target.worker_thread_id = threading.get_ident()
    try:
        return func(*args)
    finally:
        target.worker_thread_id = previous


def _wrap_for(target: Any, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` run under the span's worker-thread profiler, or with its thread recorded."""
    profile = target.profile
    if profile is not None and profile.running:
        return functools.partial(_run_profiled, profile, func)
    return functools.partial(_run_tracked, target, func)


def install() -> bool:
    """Wrap ``anyio.to_thread.run_sync`` and asgiref's ``SyncToAsync`` (idempotent). Returns
    False when anyio is absent."""
    install_asgiref()
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
            func = _wrap_for(target, func)
        return await original(func, *args, **kwargs)

    setattr(run_sync, _MARK, True)
    run_sync.__wrapped_original__ = original  # type: ignore[attr-defined]
    to_thread.run_sync = run_sync
    return True


def _run_asgiref_child(child: Callable[[], Any]) -> Any:
    # Runs in asgiref's worker thread, inside the context copied from the awaiting task.
    target = _current_target() if _SPAN_TRACKERS else None
    if target is None or (target.task is None and target.thread_id == threading.get_ident()):
        return child()
    return _wrap_for(target, child)()


def install_asgiref() -> bool:
    """Wrap ``asgiref.sync.SyncToAsync.thread_handler`` (idempotent). Returns False when asgiref
    is absent or its ``thread_handler`` is not the expected ``(loop, ..., func, child)`` method.

    asgiref calls ``thread_handler(loop, <2 args>, func, child)`` in the worker thread, where
    ``func(child)`` enters the copied context and calls ``child()`` (asgiref 3.6 to 3.13); the
    wrapper passes ``func`` a child that looks the span up first.
    """
    try:
        from asgiref.sync import SyncToAsync
    except ImportError:
        return False
    original = getattr(SyncToAsync, "thread_handler", None)
    if original is None:
        return False
    if getattr(original, _MARK, False):
        return True

    @functools.wraps(original)
    def thread_handler(self: Any, loop: Any, arg1: Any, arg2: Any, func: Callable[..., Any],
                       *args: Any, **kwargs: Any) -> Any:
        if _SPAN_TRACKERS and len(args) == 1 and callable(args[0]) and not kwargs:
            args = (functools.partial(_run_asgiref_child, args[0]),)
        return original(self, loop, arg1, arg2, func, *args, **kwargs)

    setattr(thread_handler, _MARK, True)
    thread_handler.__wrapped_original__ = original  # type: ignore[attr-defined]
    SyncToAsync.thread_handler = thread_handler  # type: ignore[assignment]
    return True
