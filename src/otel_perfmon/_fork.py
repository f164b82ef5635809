"""Reset background state in a forked child (gunicorn forks workers after importing the app).

Our objects register their own reset here. The OTel SDK's metric pipeline (its reader's
export lock, its collection locks, its exporter's connections), which the SDK does not reset
itself, is handled by otel_perfmon.metrics' fork hooks.
"""

from __future__ import annotations

import os
import weakref
from typing import Any


def reset_after_fork(obj: Any, method: str = "_reset") -> None:
    """Call ``obj.<method>()`` in the child after ``fork`` while ``obj`` is alive.

    Holds only a weak reference, so registering does not keep ``obj`` alive for the life of
    the process (``os.register_at_fork`` hooks cannot be removed).
    """
    if not hasattr(os, "register_at_fork"):
        return
    ref = weakref.ref(obj)

    def hook() -> None:
        target = ref()
        if target is not None:
            getattr(target, method)()

    os.register_at_fork(after_in_child=hook)


def reset_locks_after_fork(obj: Any, *names: str) -> None:
    """In the child after ``fork``, replace each lock attribute ``names`` of ``obj`` (a
    ``threading.Lock`` or ``RLock``; other values are left alone) by a new, unlocked one.

    Only the forking thread exists in the child: a lock another thread of the parent held at
    fork time would stay locked for ever. For objects whose module registers no reset itself
    (the claim lock of :class:`otel_perfmon.slow.SlowSpans`, the memory and SQLite stores'
    locks); holds ``obj`` weakly.
    """
    if not hasattr(os, "register_at_fork"):
        return
    import threading

    ref = weakref.ref(obj)
    rlock_type = type(threading.RLock())
    lock_type = type(threading.Lock())

    def hook() -> None:
        target = ref()
        if target is None:
            return
        for name in names:
            old = getattr(target, name, None)
            if isinstance(old, rlock_type):
                setattr(target, name, threading.RLock())
            elif isinstance(old, lock_type):
                setattr(target, name, threading.Lock())

    os.register_at_fork(after_in_child=hook)
