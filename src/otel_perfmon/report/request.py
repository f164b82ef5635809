"""Request parameters for the report: what the app itself parsed, scrubbed and size-capped.

Never reads a body stream: it looks, in the request's frames, for the objects the framework
already parsed into and takes only their caches —

* Flask / werkzeug: ``ctx.request`` (or a ``request`` local) — ``form`` and ``files`` when
  parsed, the cached ``get_json()`` result;
* FastAPI / Starlette: the request handler's ``body`` local (the parsed JSON or form) or a
  Starlette ``Request``'s ``_json`` / ``_form``;
* Django: an ``HttpRequest`` whose ``POST`` / ``FILES`` were loaded (``_post`` / ``_files``).

Values of sensitive names (:func:`otel_perfmon.redaction.is_sensitive_parameter`, a denylist
at least as broad as sentry-python's EventScrubber) and card-number-like values become
``[REDACTED]``; strings are truncated; the whole object is capped by the
``capture_request_body`` level (sizes after sentry-python's ``max_request_body_size``:
``small`` 1,000 bytes, ``medium`` 10,000, ``always`` 100,000; ``never`` captures nothing).
Multipart and binary bodies give content type, length and upload file names only.

Called for slow spans only: on the request thread at span end (WSGI: the frames are still
there) and on the watchdog thread when an asyncio span passes its threshold (its coroutine
chain still holds the handler's frames). Bounded work; never raises.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional

from otel_perfmon.redaction import REDACTED, is_sensitive_parameter, looks_like_card_number
from otel_perfmon.report.text import truncate

#: ``capture_request_body`` levels: the most bytes of JSON the ``request`` object may take.
LEVELS: Dict[str, int] = {"never": 0, "small": 1_000, "medium": 10_000, "always": 100_000}
MAX_VALUE_CHARS = 1000
_MAX_DEPTH = 8
_MAX_FRAMES = 48


def _scrub(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of ``value`` with sensitive keys and card-like values redacted."""
    if depth > _MAX_DEPTH:
        return "[nested too deep]"
    if isinstance(value, Mapping):
        return {str(k)[:200]: (REDACTED if is_sensitive_parameter(k) else _scrub(v, depth + 1))
                for k, v in list(value.items())[:200]}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, depth + 1) for v in list(value)[:200]]
    if value is None or isinstance(value, (bool, int, float)):
        return value
    text = value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value)
    if looks_like_card_number(text.strip()):
        return REDACTED
    return truncate(text, MAX_VALUE_CHARS)


def _multi(data: Any) -> Dict[str, Any]:
    """A MultiDict / QueryDict / FormData as a dict (lists for repeated keys)."""
    out: Dict[str, Any] = {}
    getlist = getattr(data, "getlist", None)
    for key in list(data.keys())[:200]:
        values = getlist(key) if getlist is not None else [data[key]]
        out[str(key)] = values[0] if len(values) == 1 else list(values)
    return out


def _files(files: Any) -> List[Dict[str, Any]]:
    found = []
    items = files.items(multi=True) if hasattr(files, "items") and _accepts_multi(files) else \
        (files.items() if hasattr(files, "items") else [])
    for field, upload in list(items)[:50]:
        found.append({"field": str(field)[:200], "filename": str(getattr(upload, "filename", "") or "")[:200],
                      "content_type": str(getattr(upload, "content_type", "") or "")[:200]})
    return found


def _accepts_multi(files: Any) -> bool:
    try:
        files.items(multi=True)
    except TypeError:
        return False
    return True


def _werkzeug(request: Any) -> Dict[str, Any]:
    cached = request.__dict__
    found: Dict[str, Any] = {"content_type": request.mimetype or None, "content_length": request.content_length}
    if "form" in cached and cached["form"]:
        found["form"] = _multi(cached["form"])
    if "files" in cached and cached["files"]:
        found["files"] = _files(cached["files"])
    parsed = getattr(request, "_cached_json", (Ellipsis, Ellipsis))
    for value in parsed:
        if value is not Ellipsis and value is not None:
            found["json"] = value
            break
    return found


def _django(request: Any) -> Dict[str, Any]:
    meta = getattr(request, "META", {}) or {}
    length = meta.get("CONTENT_LENGTH")
    found: Dict[str, Any] = {"content_type": getattr(request, "content_type", None) or None,
                             "content_length": int(str(length)) if str(length or "").isdigit() else None}
    cached = request.__dict__
    if cached.get("_post"):
        found["form"] = _multi(cached["_post"])
    if cached.get("_files"):
        found["files"] = _files(cached["_files"])
    return found


def _starlette(request: Any, body: Any) -> Dict[str, Any]:
    headers = getattr(request, "headers", None) or {}
    length = headers.get("content-length") if hasattr(headers, "get") else None
    found: Dict[str, Any] = {"content_type": (headers.get("content-type") if hasattr(headers, "get") else None),
                             "content_length": int(str(length)) if str(length or "").isdigit() else None}
    parsed = body if body is not None else getattr(request, "_json", None)
    form = getattr(request, "_form", None)
    if form is not None and hasattr(form, "getlist"):
        uploads = [(k, v) for k, v in form.multi_items() if hasattr(v, "filename")]
        fields = {k: v for k, v in _multi(form).items() if not hasattr(v, "filename")}
        if fields:
            found["form"] = fields
        if uploads:
            found["files"] = [{"field": k, "filename": str(v.filename or "")[:200],
                               "content_type": str(getattr(v, "content_type", "") or "")[:200]} for k, v in uploads]
    elif isinstance(parsed, (dict, list)):
        found["json"] = parsed
    return found


def _from_locals(local_vars: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    candidates = [getattr(local_vars.get("ctx"), "request", None), local_vars.get("request")]
    for request in candidates:
        if request is None:
            continue
        module = type(request).__module__
        if module.startswith(("werkzeug", "flask")):
            return _werkzeug(request)
        if module.startswith("django"):
            return _django(request)
        if module.startswith(("starlette", "fastapi")):
            body = local_vars.get("body")
            return _starlette(request, body if isinstance(body, (dict, list)) else None)
    return None


def _cap(found: Dict[str, Any], limit: int) -> Dict[str, Any]:
    """Drop parts, largest first, until the JSON fits ``limit`` bytes; mark what was cut."""
    parts = ("json", "form", "files")
    size = len(json.dumps(found, default=str))
    if size <= limit:
        return found
    for part in sorted((p for p in parts if p in found), key=lambda p: -len(json.dumps(found[p], default=str))):
        found.pop(part)
        found.setdefault("truncated", []).append(part)
        if len(json.dumps(found, default=str)) <= limit:
            break
    return found


def parameters_in_frames(frames: Iterable[Any], level: str) -> Optional[Dict[str, Any]]:
    """The ``request`` object of a report from the first of ``frames`` (innermost first, at
    most 48) that holds a parsed request, scrubbed and capped for ``level``; None when the
    level is ``never`` or nothing is found. Never raises."""
    limit = LEVELS.get(level, 0)
    if not limit:
        return None
    try:
        for depth, frame in enumerate(frames):
            if depth >= _MAX_FRAMES:
                break
            found = _from_locals(frame.f_locals)
            if found is None:
                continue
            content_type = str(found.get("content_type") or "")
            if content_type.startswith("multipart/") or content_type.startswith(("application/octet-stream",
                                                                                   "image/", "audio/", "video/")):
                found.pop("form", None)
                found.pop("json", None)
            for key in ("form", "json"):
                if key in found:
                    found[key] = _scrub(found[key])
            return _cap({k: v for k, v in found.items() if v is not None}, limit)
    except Exception:  # an odd object in someone's frame must not cost the report
        return None
    return None


def find_request_parameters(level: str, start_depth: int = 1) -> Optional[Dict[str, Any]]:
    """:func:`parameters_in_frames` over the calling thread's frames, from ``start_depth``
    callers up (span end of a WSGI request: the framework's frames are still there)."""
    if not LEVELS.get(level, 0):
        return None
    try:
        frame = sys._getframe(start_depth + 1)
    except ValueError:
        return None

    def callers(current: Any) -> Iterator[Any]:
        while current is not None:
            yield current
            current = current.f_back

    return parameters_in_frames(callers(frame), level)
