"""Cheap capture of request data at span end (request thread / event loop).

Everything here is bounded work on data already in memory: span attributes (both HTTP
semantic-convention modes: ``http.method``/``http.target`` and the stable
``http.request.method``/``url.path``), and the request headers, which are found by walking up
the calling frames to the WSGI ``environ`` or ASGI ``scope`` that the server framework holds
(only for slow spans, so fast requests pay nothing). Headers are filtered and redacted here so
secrets never enter the queue.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional, Pattern, Sequence, Tuple
from urllib.parse import parse_qsl, urlencode, urlsplit

from opentelemetry.trace import SpanKind

from otel_perfmon.dedup import fingerprint
from otel_perfmon.redaction import REDACTED, is_sensitive, is_sensitive_query_name
from otel_perfmon.report.model import CapturedSpan
from otel_perfmon.report.request import find_request_parameters
from otel_perfmon.report.task import task_facts
from otel_perfmon.report.text import MAX_HEADER_VALUE_CHARS as MAX_HEADER_VALUE_CHARS  # re-exported
from otel_perfmon.report.text import truncate as truncate  # re-exported

_MAX_FRAME_DEPTH = 48


def first_attribute(attributes: Mapping[str, Any], *keys: str) -> Any:
    """The value of the first of ``keys`` present in ``attributes`` (semconv old and new names)."""
    for key in keys:
        value = attributes.get(key)
        if value is not None:
            return value
    return None


def http_info(attributes: Mapping[str, Any], span_name: str) -> Dict[str, Any]:
    """Method, route, path, query and status from span attributes (old or stable semconv)."""
    method = first_attribute(attributes, "http.request.method", "http.method")
    route = first_attribute(attributes, "http.route")
    path = first_attribute(attributes, "url.path")
    query = first_attribute(attributes, "url.query")
    if path is None:
        target = first_attribute(attributes, "http.target")
        if target is None:
            url = first_attribute(attributes, "url.full", "http.url")
            target = None if url is None else _split_url(str(url))[0]
        if target is not None:
            path, _, query_part = str(target).partition("?")
            query = query if query is not None else (query_part or None)
    if query is None:  # the ASGI instrumentation puts the query only in the full URL
        url = first_attribute(attributes, "url.full", "http.url")
        query = _split_url(str(url))[1] or None if url is not None else None
    status = first_attribute(attributes, "http.response.status_code", "http.status_code")
    if route is None:
        name_parts = span_name.split(" ", 1)
        route = name_parts[1] if len(name_parts) == 2 and name_parts[1].startswith("/") else (path or span_name)
    return {
        "method": str(method) if method is not None else None,
        "route": str(route),
        "path": str(path) if path is not None else None,
        "query": redact_query(str(query)) if query else "",
        "status_code": _status_code(status),
    }


def _split_url(url: str) -> Tuple[str, str]:
    """(path?query#fragment, query) of a full URL. One ``urlsplit`` rejects (a hostile Host
    header such as ``[x`` makes an "Invalid IPv6 URL") is cut after its authority by hand."""
    try:
        parts = urlsplit(url)
        return parts._replace(scheme="", netloc="").geturl(), parts.query
    except ValueError:
        rest = url.split("://", 1)[-1]
        slash = rest.find("/")
        target = rest[slash:] if slash >= 0 else ""
        return target, target.partition("?")[2].partition("#")[0]


_STRAY_SEPARATORS = re.compile(r"[?;]")


def _status_code(status: Any) -> Optional[int]:
    """An HTTP status as int, or None: ASCII digits only (``"²".isdigit()`` is true, but
    ``int("²")`` raises), at most 9 of them."""
    if isinstance(status, int) and not isinstance(status, bool):
        return status if status >= 0 else None
    if isinstance(status, str) and status.isascii() and status.isdigit() and len(status) <= 9:
        return int(status)
    return None


def redact_query(query: str) -> str:
    """Replace values of sensitive-looking query parameters by ``[REDACTED]``.

    A stray ``?`` or ``;`` separates parameters too (``=?token=…``, ``a=b?token=…``,
    ``a=1;token=…``: some parsers read a parameter there), so a redacted query is rebuilt with
    ``&`` between its parameters; a query with nothing sensitive is kept as it is."""
    try:
        pairs = parse_qsl(_STRAY_SEPARATORS.sub("&", query), keep_blank_values=True)
    except ValueError:
        return truncate(query)
    if not any(is_sensitive_query_name(k) for k, _ in pairs):
        return truncate(query)
    cleaned = [(k, REDACTED if is_sensitive_query_name(k) else v) for k, v in pairs]
    return truncate(urlencode(cleaned, safe="[]"))


def select_headers(pairs: Iterable[Tuple[str, str]], capture: Iterable[str],
                   redact: Iterable[str]) -> Dict[str, str]:
    """Keep captured headers, replace sensitive ones by ``[REDACTED]``, truncate long values.

    Names are lower-cased; repeated headers are joined with ``", "``. ``capture`` and
    ``redact`` must already be lower-cased sets.
    """
    out: Dict[str, str] = {}
    for raw_name, raw_value in pairs:
        name = raw_name.lower()
        sensitive = is_sensitive(name, redact)
        if name not in capture and not sensitive:
            continue
        value = REDACTED if sensitive else truncate(raw_value)
        out[name] = value if name not in out or sensitive else truncate(out[name] + ", " + value)
    return out


def _environ_headers(environ: Mapping[str, Any]) -> List[Tuple[str, str]]:
    pairs = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            pairs.append((key[5:].replace("_", "-"), str(value)))
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            pairs.append((key.replace("_", "-"), str(value)))
    return pairs


def _scope_headers(scope: Mapping[str, Any]) -> List[Tuple[str, str]]:
    pairs = []
    for name, value in scope.get("headers") or ():
        pairs.append((bytes(name).decode("latin-1"), bytes(value).decode("latin-1")))
    return pairs


def headers_in_frames(frames: Iterable[Any]) -> Optional[List[Tuple[str, str]]]:
    """Request headers from the first frame (of at most 48) holding a WSGI ``environ`` (a dict
    with ``wsgi.version``) or an ASGI ``scope`` (``type`` http/websocket); None if none does."""
    for depth, frame in enumerate(frames):
        if depth >= _MAX_FRAME_DEPTH:
            break
        local_vars = frame.f_locals
        environ = local_vars.get("environ")
        if isinstance(environ, dict) and "wsgi.version" in environ:
            return _environ_headers(environ)
        scope = local_vars.get("scope")
        if isinstance(scope, dict) and scope.get("type") in ("http", "websocket"):
            return _scope_headers(scope)
    return None


def _callers(frame: Any) -> Iterable[Any]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def find_request_headers(start_depth: int = 1) -> Optional[List[Tuple[str, str]]]:
    """Headers of the request being served on this thread/task, found in a caller's frame
    (see :func:`headers_in_frames`). Cost: tens of µs; called only for slow spans."""
    try:
        frame = sys._getframe(start_depth + 1)
    except ValueError:
        return None
    return headers_in_frames(_callers(frame))


def headers_from_attributes(attributes: Mapping[str, Any]) -> List[Tuple[str, str]]:
    """Headers OTel's instrumentors captured as ``http.request.header.<name>`` attributes."""
    pairs = []
    for key, value in attributes.items():
        if key.startswith("http.request.header."):
            name = key[len("http.request.header."):].replace("_", "-")
            values = value if isinstance(value, (list, tuple)) else [value]
            pairs.append((name, ", ".join(str(v) for v in values)))
    return pairs


class UrlFilter:
    """Include/exclude globs matched against path and route. Include wins over exclude."""

    __slots__ = ("_include", "_exclude", "active")

    def __init__(self, include: Sequence[Pattern[str]], exclude: Sequence[Pattern[str]]) -> None:
        self._include = list(include)
        self._exclude = list(exclude)
        self.active = bool(self._include or self._exclude)

    @staticmethod
    def _matches(patterns: Sequence[Pattern[str]], candidates: Sequence[str]) -> bool:
        return any(p.match(c) for p in patterns for c in candidates)

    def allows(self, attributes: Mapping[str, Any], span_name: str) -> bool:
        """True when a span with these start attributes may be profiled. Request path; cheap."""
        if not self.active:
            return True
        info = http_info(attributes, span_name)
        candidates = [c for c in (info["path"], info["route"]) if c]
        # Django's route templates have no leading slash (items/<int:item_id>), and at span start
        # it has only named the span "GET items/<int:item_id>" (http.route comes later)
        name_parts = span_name.split(" ", 1)
        route = attributes.get("http.route") or (name_parts[1] if len(name_parts) == 2 else None)
        if route and not str(route).startswith("/"):
            candidates.append("/" + str(route))
        if self._include:
            return self._matches(self._include, candidates)
        return not self._matches(self._exclude, candidates)


def service_name(span: Any) -> str:
    """The span's ``service.name`` resource attribute, or ``unknown_service``."""
    resource = getattr(span, "resource", None)
    name = resource.attributes.get("service.name") if resource is not None else None
    return str(name) if name else "unknown_service"


#: The route of every request that matched no route (404 scans...): they share one report.
UNROUTED = "[unrouted]"


def fingerprint_route(span: Any) -> Tuple[str, str]:
    """(method, route) a span is deduplicated by: the route template; ``UNROUTED`` for a
    request without ``http.route``; ``FUNCTION`` and the span name for spans without HTTP
    attributes (``@profile`` functions, tasks)."""
    attributes = span.attributes or {}
    info = http_info(attributes, span.name)
    if info["method"] is None and not info["route"].startswith("/"):
        return "FUNCTION", span.name
    return info["method"] or "", info["route"] if attributes.get("http.route") else UNROUTED


def span_fingerprint(span: Any) -> str:
    """Fingerprint of a span: service + method + route (see :func:`fingerprint_route` and
    :func:`dedup.fingerprint`)."""
    method, route = fingerprint_route(span)
    return fingerprint(service_name(span), method, route)


def capture_span(open_span: Any, span: Any, end_ns: int, mode: str, profile: Any, samples: Any,
                 interval_seconds: float, pairs: Optional[List[Tuple[str, str]]],
                 capture: Iterable[str], redact: Iterable[str]) -> CapturedSpan:
    """The one place a :class:`CapturedSpan` is made (span end on the request thread, or an
    in-flight report on the watchdog): request facts from the span's attributes, and the
    headers ``pairs`` found in the request's frames (else those the instrumentor put in the
    attributes), selected and redacted. Bounded work on data in memory; never raises for
    odd attribute values."""
    attributes = span.attributes or {}
    if pairs is None:
        pairs = headers_from_attributes(attributes)
    captured = CapturedSpan(
        open_span=open_span, trace_id=span.context.trace_id, span_id=span.context.span_id, span_name=span.name,
        service_name=service_name(span), start_ns=span.start_time or 0, end_ns=end_ns,
        threshold_seconds=open_span.threshold_seconds, interval_seconds=interval_seconds,
        http=http_info(attributes, span.name), headers=select_headers(pairs, capture, redact),
        profile=profile, samples=samples, mode=mode)
    if getattr(span, "kind", None) is SpanKind.CONSUMER:  # a task (Celery's run/<task>): report/task.py
        captured.task = task_facts(attributes, span.name, getattr(open_span, "thread_id", None), truncate)
    return captured


def capture_slow_span(open_span: Any, span: Any, profile: Any, config: Any, capture: Iterable[str],
                      redact: Iterable[str]) -> CapturedSpan:
    """The captured form of a slow span at its end (request thread, ``PerfmonSpanProcessor.on_end``):
    its profile (``full``), else its stack samples (``sampled`` or ``after_threshold``; ``none``
    without samples), the request's headers from its frames, and the request parameters the app
    parsed (found now for a WSGI request; at the deadline, on the watchdog, for an asyncio one)."""
    samples = open_span.samples
    if profile is not None:
        mode, interval = "full", config.profile_interval_seconds
    else:
        mode = "none" if samples is None else "after_threshold" if samples.from_threshold else "sampled"
        interval = config.sampler_early_interval_seconds or config.sampler_interval_seconds
    captured = capture_span(open_span, span, span.end_time or 0, mode, profile, samples, interval,
                            find_request_headers(start_depth=2), capture, redact)
    captured.request = open_span.request if open_span.task is not None else \
        find_request_parameters(config.capture_request_body, start_depth=2)
    return captured
