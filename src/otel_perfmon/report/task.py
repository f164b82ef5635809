"""Task facts for the report of a slow task span (Celery's ``run/<task>`` CONSUMER span).

What OTel's Celery instrumentor puts on the span (at task end, before the span ends):
``celery.task_name``, ``messaging.message.id`` (the task id), ``messaging.destination`` (the
delivery routing key, the queue for Celery's default direct exchange), ``celery.retries``
(only when non-zero), ``celery.state`` (and ``celery.hostname``, the sender's host, not used).
The arguments are not on the span: they come from the running task's request
(``task.request.args`` / ``.kwargs``), taken on the worker thread at span end through Celery's
current-task stack, or, for an in-flight report on the watchdog thread, from the
``task_request`` local of Celery's tracer frame on the task's thread. Only for slow spans;
bounded work; never imports Celery (a process that has not imported it has no task to
describe) and never raises.

Arguments are redacted by the request-parameter rule: a keyword argument (or a positional one,
named through the task function's signature) whose name looks secret becomes ``[REDACTED]``,
and so does any such key inside dict values; every value is shown as its ``repr``, truncated.

The ``task`` object of the report JSON (docs/report-schema.md)::

    {"name": "orders.rebuild", "id": "5b1c…", "queue": "celery", "retries": 0,
     "args": ["42"], "kwargs": {"password": "[REDACTED]", "mode": "'full'"},
     "worker": "celery@host", "state": "SUCCESS"}
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional

from otel_perfmon.redaction import REDACTED, is_sensitive_parameter

#: Each argument's repr is cut to this many characters.
MAX_ARG_CHARS = 500
#: At most this many positional and this many keyword arguments are listed.
MAX_ARGS = 50
_MAX_DEPTH = 6
_MAX_FRAMES = 64

_CONSUMER_PREFIX = "run/"

#: ``(text, limit) -> text``: :func:`otel_perfmon.report.capture.truncate`, passed in by
#: ``capture_span`` (this module sits below ``capture``, which imports it).
Cut = Callable[[str, int], str]


def _sensitive(name: Any) -> bool:
    return is_sensitive_parameter(str(name))


def _scrub(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` with the values of secret-looking keys replaced (dicts, lists, tuples)."""
    if depth > _MAX_DEPTH:
        return "…"
    if isinstance(value, Mapping):
        return {k: (REDACTED if _sensitive(k) else _scrub(v, depth + 1)) for k, v in list(value.items())[:MAX_ARGS]}
    if isinstance(value, list):
        return [_scrub(v, depth + 1) for v in value[:MAX_ARGS]]
    if isinstance(value, tuple):
        return tuple(_scrub(v, depth + 1) for v in value[:MAX_ARGS])
    return value


def _show(value: Any, cut: Cut) -> str:
    try:
        text = repr(_scrub(value))
    except Exception:  # a hostile __repr__
        text = f"<{type(value).__name__}>"
    return cut(text, MAX_ARG_CHARS)


def _parameter_names(task: Any) -> List[str]:
    """Positional parameter names of the task function (without a bound task's ``self``)."""
    run = getattr(task, "run", None)
    if run is None:
        return []
    try:
        params = inspect.signature(run).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def arguments(args: Any, kwargs: Any, task: Any, cut: Cut) -> Dict[str, Any]:
    """``{"args": [repr...], "kwargs": {name: repr}}``, redacted and truncated."""
    names = _parameter_names(task) if task is not None else []
    shown_args: List[str] = []
    for index, value in enumerate(list(args or ())[:MAX_ARGS]):
        name = names[index] if index < len(names) else ""
        shown_args.append(REDACTED if name and _sensitive(name) else _show(value, cut))
    shown_kwargs: Dict[str, str] = {}
    items = list(kwargs.items()) if isinstance(kwargs, Mapping) else []
    for key, value in items[:MAX_ARGS]:
        shown_kwargs[cut(str(key), 200)] = REDACTED if _sensitive(key) else _show(value, cut)
    return {"args": shown_args, "kwargs": shown_kwargs}


def _current_task() -> Any:
    """Celery's task running on this thread (``celery.current_task``), or None."""
    state = sys.modules.get("celery._state")
    if state is None:
        return None
    try:
        return state.get_current_task()
    except Exception:
        return None


def _request_in_frames(frames: Iterable[Any]) -> Any:
    """The ``task_request`` (a Celery ``Context``) held by Celery's tracer frame, or None."""
    for depth, frame in enumerate(frames):
        if depth >= _MAX_FRAMES:
            break
        request = frame.f_locals.get("task_request")
        if request is not None and hasattr(request, "delivery_info") and hasattr(request, "args"):
            return request
    return None


def _frames_of_thread(thread_id: int) -> Iterable[Any]:
    frame: Any = sys._current_frames().get(thread_id)
    while frame is not None:
        yield frame
        frame = frame.f_back


def _get(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def task_facts(attributes: Mapping[str, Any], span_name: str, thread_id: Optional[int], cut: Cut) -> Dict[str, Any]:
    """The report's ``task`` object for a task span: from the span's ``attributes`` and the
    running task's request (current task on this thread, else the frames of ``thread_id``).
    Never raises: an odd request gives only the attribute facts."""
    name = attributes.get("celery.task_name")
    if name is None and span_name.startswith(_CONSUMER_PREFIX):
        name = span_name[len(_CONSUMER_PREFIX):]
    task_id = attributes.get("messaging.message.id")
    facts: Dict[str, Any] = {"name": cut(str(name or span_name), 300)}
    request: Any = None
    task: Any = None
    try:
        task = _current_task()
        request = _get(task, "request") if task is not None else None
        if request is not None and task_id is not None and _get(request, "id") != task_id:
            task, request = None, None  # another task's (should not happen at span end)
        if request is None and thread_id is not None and "celery" in sys.modules:
            request = _request_in_frames(_frames_of_thread(thread_id))
            task = None
    except Exception:
        request = None
    if task_id is None and request is not None:
        task_id = _get(request, "id")
    facts["id"] = None if task_id is None else cut(str(task_id), 200)
    queue = attributes.get("messaging.destination.name") or attributes.get("messaging.destination")
    delivery = _get(request, "delivery_info") if request is not None else None
    if queue is None and isinstance(delivery, Mapping):
        queue = delivery.get("routing_key")
    facts["queue"] = None if queue is None else cut(str(queue), 300)
    retries = attributes.get("celery.retries")
    if retries is None and request is not None:
        retries = _get(request, "retries")
    facts["retries"] = retries if isinstance(retries, int) and not isinstance(retries, bool) else \
        int(retries) if isinstance(retries, str) and retries.isascii() and retries.isdigit() else 0
    worker = _get(request, "hostname") if request is not None else None  # celery.hostname is the sender's
    if worker is not None:
        facts["worker"] = cut(str(worker), 300)
    state = attributes.get("celery.state")
    if state is not None:
        facts["state"] = cut(str(state), 100)
    if request is not None:
        try:
            facts.update(arguments(_get(request, "args"), _get(request, "kwargs"), task, cut))
        except Exception:
            pass
    facts.setdefault("args", [])
    facts.setdefault("kwargs", {})
    return facts
