"""Reset background state in a forked child (gunicorn forks workers after importing the app)."""

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
