"""The report's ``runtime`` block: what ran the slow span, and what the garbage collector took.

* Python version and implementation; versions of otel-perfmon, pyinstrument and the web or task
  framework loaded in this process (Flask, FastAPI, Starlette, Django, Falcon, Celery);
* the process: pid, parent pid, the server that runs it (gunicorn, uvicorn, celery, or the
  program's name) and the host name;
* the OTel resource attributes of the span (``service.version``, ``deployment.environment``...);
* ``gc``: the garbage collector's pauses that overlapped the span (count and ms), recorded by a
  ``gc.callbacks`` hook into a bounded ring (the request path does nothing for it).

Built on the background worker. The GC hook runs on whichever thread collects (a few µs per
collection) and never raises.
"""

from __future__ import annotations

import collections
import gc
import os
import platform
import socket
import sys
import threading
import time
from typing import Any, Deque, Dict, Mapping, Optional, Tuple

#: Frameworks reported when loaded: import name -> distribution name.
_FRAMEWORKS = {"flask": "flask", "fastapi": "fastapi", "starlette": "starlette", "django": "django",
               "falcon": "falcon", "celery": "celery"}
#: Resource attributes copied into the report (the rest stay in the trace backend).
_RESOURCE_KEYS = ("service.name", "service.namespace", "service.version", "service.instance.id",
                  "deployment.environment", "deployment.environment.name", "host.name", "k8s.pod.name",
                  "k8s.namespace.name", "container.id", "cloud.region")
#: GC pauses remembered (start, end as time.time() seconds), newest last.
GC_RING_SIZE = 4096

_pauses: Deque[Tuple[float, float]] = collections.deque(maxlen=GC_RING_SIZE)
_started: Dict[int, float] = {}
_installed = False
_lock = threading.Lock()


def _on_gc(phase: str, info: Mapping[str, Any]) -> None:
    # gc.callbacks hook: any thread, must not raise
    try:
        if phase == "start":
            _started[threading.get_ident()] = time.time()
        else:
            began = _started.pop(threading.get_ident(), None)
            if began is not None:
                _pauses.append((began, time.time()))
    except Exception:  # never break a collection
        return


def install_gc_hook() -> None:
    """Add the GC hook once per process (configure time)."""
    global _installed
    with _lock:
        if not _installed:
            gc.callbacks.append(_on_gc)
            _installed = True


def gc_during(start: float, end: float) -> Dict[str, Any]:
    """GC pauses overlapping [start, end] (``time.time()`` s): ``collections`` and ``pause_ms``
    (the overlapping part); ``recorded`` is False when the hook was not installed."""
    count, seconds = 0, 0.0
    for began, finished in list(_pauses):
        overlap = min(finished, end) - max(began, start)
        if overlap > 0 or (began >= start and finished <= end):
            count += 1
            seconds += max(overlap, 0.0)
    return {"collections": count, "pause_ms": round(seconds * 1000.0, 3), "recorded": _installed}


def _version(distribution: str) -> Optional[str]:
    try:
        from importlib.metadata import version

        return version(distribution)
    except Exception:
        return None


def _server() -> str:
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    for name in ("gunicorn", "uvicorn", "celery", "hypercorn", "daphne", "waitress"):
        if name in program:
            return name
    return program


_STATIC: Optional[Dict[str, Any]] = None


def runtime_info(resource_attributes: Optional[Mapping[str, Any]], start: float, end: float) -> Dict[str, Any]:
    """The ``runtime`` block for a span of ``start``..``end`` (``time.time()`` s) whose resource
    has ``resource_attributes``. Background worker; cheap after the first call per process."""
    global _STATIC
    if _STATIC is None or _STATIC["process"]["pid"] != os.getpid():
        frameworks = {name: _version(dist) for name, dist in _FRAMEWORKS.items() if name in sys.modules}
        _STATIC = {
            "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
            "versions": {"otel-perfmon": _version("otel-perfmon"), "pyinstrument": _version("pyinstrument"),
                         "opentelemetry-sdk": _version("opentelemetry-sdk"), **frameworks},
            "process": {"pid": os.getpid(), "parent_pid": os.getppid(), "server": _server(),
                        "hostname": socket.gethostname()},
        }
    resource = {key: str(resource_attributes[key]) for key in _RESOURCE_KEYS
                if resource_attributes and key in resource_attributes}
    return {**{k: dict(v) for k, v in _STATIC.items()}, "resource": resource, "gc": gc_during(start, end)}
