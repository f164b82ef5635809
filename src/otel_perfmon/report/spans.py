"""The slow span's child spans (a waterfall) and the repeated work among them (N+1).

The processor keeps the spans of a tracked trace that end in this process while its root is
open (``OpenSpan.children``, references only: one append per span). Here, on the background
worker, they become rows of the report's ``spans`` array, with only the attributes that say
what the time went to, redacted:

* ``db.system`` and the statement (``db.statement`` / ``db.query.text``) with its literals
  replaced by ``?`` (strings, numbers, ``IN (...)`` lists), so no value of the request's data
  reaches a report;
* the HTTP method and URL of outgoing calls, user info dropped and sensitive query
  parameters redacted (:func:`otel_perfmon.report.capture.redact_query`);
* the peer address (``server.address`` / ``net.peer.name`` and port).

:func:`repeated_work` flags a normalized statement or an outgoing URL template (numeric and
id-like path segments as ``{id}``) seen ``N_PLUS_ONE_MIN_COUNT`` (10) or more times in one
request: the N+1 pattern Sentry's performance issues also detect. Pure functions.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

from otel_perfmon.report.capture import first_attribute, redact_query
from otel_perfmon.report.text import truncate

#: A statement or URL template repeated this many times in one request is flagged.
N_PLUS_ONE_MIN_COUNT = 10
MAX_STATEMENT_CHARS = 1000

_STRING = re.compile(r"'(?:[^']|'')*'")
_NUMBER = re.compile(r"(?<![\w$])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b")
_HEX = re.compile(r"\b[xX]'[0-9a-fA-F]*'|\b0x[0-9a-fA-F]+\b")
_IN_LIST = re.compile(r"\(\s*\?(?:\s*,\s*\?)+\s*\)")
_SPACE = re.compile(r"\s+")
_ID_SEGMENT = re.compile(r"^(?:\d+|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
                         r"|[0-9a-fA-F]{16,})$")


def normalize_statement(statement: str) -> str:
    """``statement`` with every literal as ``?``: ``WHERE id = 7 AND name = 'x'`` ->
    ``WHERE id = ? AND name = ?``; ``IN (1, 2, 3)`` -> ``IN (?)``; whitespace collapsed."""
    text = _STRING.sub("?", _HEX.sub("?", statement))
    text = _NUMBER.sub("?", text)
    text = _IN_LIST.sub("(?)", text)
    return truncate(_SPACE.sub(" ", text).strip(), MAX_STATEMENT_CHARS)


def safe_url(url: str) -> str:
    """``url`` without user info, with sensitive query parameters redacted."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "[unparseable URL]"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return truncate(urlunsplit((parts.scheme, host, parts.path, redact_query(parts.query) if parts.query else "",
                                "")))


def url_template(url: str) -> str:
    """``https://api.example.com/users/{id}``: scheme, host and path of ``url`` with numeric
    and id-like path segments as ``{id}``, no query."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "[unparseable URL]"
    path = "/".join("{id}" if _ID_SEGMENT.match(segment) else segment for segment in parts.path.split("/"))
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, path, "", ""))


def span_row(span: Any, root_start_ns: int) -> Dict[str, Any]:
    """One ``spans`` row: name, kind, start offset and duration (ms), status, and the
    attributes that matter, redacted."""
    attributes = span.attributes or {}
    start, end = span.start_time or root_start_ns, span.end_time or span.start_time or root_start_ns
    row: Dict[str, Any] = {
        "name": truncate(str(span.name), 200),
        "kind": str(getattr(span.kind, "name", span.kind)).lower(),
        "start_offset_ms": round((start - root_start_ns) / 1e6, 3),
        "duration_ms": round((end - start) / 1e6, 3),
        "status": str(getattr(getattr(span, "status", None), "status_code", "UNSET")).rsplit(".", 1)[-1].lower(),
    }
    system = first_attribute(attributes, "db.system.name", "db.system")
    statement = first_attribute(attributes, "db.query.text", "db.statement")
    if system is not None:
        row["db_system"] = str(system)
    if statement is not None:
        row["statement"] = normalize_statement(str(statement))
    method = first_attribute(attributes, "http.request.method", "http.method")
    url = first_attribute(attributes, "url.full", "http.url")
    if method is not None:
        row["http_method"] = str(method)
    if url is not None:
        row["url"] = safe_url(str(url))
        row["url_template"] = url_template(str(url))
    peer = first_attribute(attributes, "server.address", "net.peer.name", "network.peer.address", "net.peer.ip")
    if peer is not None:
        port = first_attribute(attributes, "server.port", "net.peer.port", "network.peer.port")
        row["peer"] = f"{peer}:{port}" if port is not None else str(peer)
    return row


def child_spans(children: Optional[Iterable[Any]], root_start_ns: int, dropped: int = 0
                ) -> Tuple[List[Dict[str, Any]], int]:
    """(rows sorted by start, count of spans left out) for the report's ``spans`` array."""
    rows = [span_row(span, root_start_ns) for span in list(children or [])]
    rows.sort(key=lambda row: row["start_offset_ms"])
    return rows, dropped


def repeated_work(rows: Iterable[Mapping[str, Any]], min_count: int = N_PLUS_ONE_MIN_COUNT
                  ) -> List[Dict[str, Any]]:
    """N+1 findings: ``{"kind": "db", "statement": ..., "count": n, "total_ms": t}`` or
    ``{"kind": "http", "method": ..., "url": <template>, "count": n, "total_ms": t}`` for each
    statement or URL template seen at least ``min_count`` times, most total time first."""
    groups: Dict[Tuple[str, str, str], List[float]] = {}
    for row in rows:
        if "statement" in row:
            key = ("db", "", str(row["statement"]))
        elif "url_template" in row:
            key = ("http", str(row.get("http_method", "")), str(row["url_template"]))
        else:
            continue
        groups.setdefault(key, []).append(float(row["duration_ms"]))
    findings: List[Dict[str, Any]] = []
    for (kind, method, text), durations in groups.items():
        if len(durations) < min_count:
            continue
        finding: Dict[str, Any] = {"kind": kind, "count": len(durations), "total_ms": round(sum(durations), 3)}
        if kind == "db":
            finding["statement"] = text
        else:
            finding["method"] = method
            finding["url"] = text
        findings.append(finding)
    findings.sort(key=lambda f: f["total_ms"], reverse=True)
    return findings


def describe(finding: Mapping[str, Any]) -> str:
    """One line for messages: ``N+1: `SELECT … FROM users WHERE id = ?` × 120, 480 ms``."""
    what = finding.get("statement") or f"{finding.get('method', '')} {finding.get('url', '')}".strip()
    return f"N+1: `{what}` × {finding['count']}, {finding['total_ms']:.0f} ms"
