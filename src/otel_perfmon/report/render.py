"""Renderers: one small class per output format (pyinstrument's renderer style).

``JsonRenderer``, ``HtmlRenderer`` (pyinstrument's interactive call tree, self-contained,
with an escaped request panel above it), ``MarkdownRenderer`` and ``SpeedscopeFileRenderer``
(pyinstrument's speedscope flame-graph file, only for a report with samples). Each has
``render(report) -> str`` (``Optional[str]`` for the speedscope one). :func:`write_report_files`
writes the files atomically (0600) into the report directory (0700). Background worker only.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import quote

import jinja2

from otel_perfmon.report.model import Report

#: Reports open from disk with no network: pyinstrument's viewer would fetch a web font, and
#: this policy also stops any script or request that escaped escaping.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                           "img-src data:; font-src data:")
_HEAD = ('<head>\n<meta http-equiv="Content-Security-Policy" content="' + CONTENT_SECURITY_POLICY + '">\n'
         '<title>perfmon report {report_id}</title>')
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")
#: pyinstrument's viewer script preloads a Google web font; the page must fetch nothing, so
#: the URL is blanked (an empty link href is never fetched) and the fallback fonts are used.
_WEB_FONT_URL = re.compile(r"https?://fonts\.(?:googleapis|gstatic)\.com/[^\"'\s)]*")


#: pyinstrument embeds the session as JSON in a <script> block, between these two markers.
_SESSION_JSON_START = "const sessionData = "
_SESSION_JSON_END = "pyinstrumentHTMLRenderer.render("


def _script_safe_session(page: str) -> Optional[str]:
    """``page`` with every ``<`` of the embedded session JSON written as ``\\u003c``.

    The JSON holds the profile's description, the span name, which can be request-derived
    (OTel's Flask instrumentor names an unrouted request after its raw path): a ``</script>``
    in it would end the script block. ``<`` occurs only inside JSON strings, where ``\\u003c``
    is the same character. None when pyinstrument's page layout is not the expected one.
    """
    start = page.find(_SESSION_JSON_START)
    end = page.find(_SESSION_JSON_END, start) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    start += len(_SESSION_JSON_START)
    return page[:start] + page[start:end].replace("<", "\\u003c") + page[end:]


def md_escape(value: Any) -> str:
    """Escape text for a Markdown table cell or line: Markdown syntax, HTML and newlines."""
    text = "" if value is None else str(value)
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return text.replace("\r", " ").replace("\n", " ")


def md_autolink(url: Any) -> str:
    """A URL for a Markdown autolink ``<...>``: backslash escapes do not work there
    (CommonMark), so characters that would end or break it are percent-encoded instead."""
    return quote(str(url), safe=":/?#[]@!$&'()*+,;=%-._~")


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("otel_perfmon.report", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_escape
    env.filters["md_autolink"] = md_autolink
    return env


_ENV = None


def templates() -> jinja2.Environment:
    global _ENV
    if _ENV is None:
        _ENV = _environment()
    return _ENV


class JsonRenderer:
    """``report.to_dict()`` as indented, ASCII-only JSON."""

    suffix = "json"

    def render(self, report: Report) -> str:
        return json.dumps(report.to_dict(), indent=2, ensure_ascii=True) + "\n"


class HtmlRenderer:
    """Self-contained HTML: escaped request panel + pyinstrument's interactive call tree."""

    suffix = "html"

    def render(self, report: Report) -> str:
        panel = templates().get_template("report_panel.html").render(report=report)
        if report.session is not None and report.session.frame_records:
            from pyinstrument.renderers import HTMLRenderer

            page = _script_safe_session(_WEB_FONT_URL.sub("", HTMLRenderer().render(report.session)))
            if page is not None:
                page = page.replace("<head>", _HEAD.format(report_id=report.report_id), 1)
                return page.replace("<body>", "<body>\n" + panel, 1)
        return ("<!DOCTYPE html><html>" + _HEAD.format(report_id=report.report_id)
                + '<meta charset="utf-8"></head><body>\n' + panel + "</body></html>\n")


class MarkdownRenderer:
    """Markdown summary: request, headers, hotspots, and the text call tree in a code block."""

    suffix = "md"

    def render(self, report: Report) -> str:
        tree = report.call_tree_text.replace("```", "`\u200b``")
        return templates().get_template("report.md.j2").render(report=report, call_tree=tree)


class SpeedscopeFileRenderer:
    """pyinstrument's :class:`~pyinstrument.renderers.SpeedscopeRenderer` over the report's
    session: a ``<id>.speedscope.json`` file for speedscope's flame graph. ``None`` when the
    report has no samples (or the call stack is too deep for pyinstrument's recursion)."""

    suffix = "speedscope.json"

    def render(self, report: Report) -> Optional[str]:
        if not report.has_samples:
            return None
        from pyinstrument.renderers import SpeedscopeRenderer

        try:
            data = json.loads(SpeedscopeRenderer().render(report.session))
        except RecursionError:
            return None
        # speedscope's file-format-schema.json: a number, and no null file or line in a frame
        # (pyinstrument writes null for "[self]" and other synthetic frames)
        data["activeProfileIndex"] = 0
        for frame in data.get("shared", {}).get("frames", []):
            for key in ("file", "line"):
                if frame.get(key) is None:
                    frame.pop(key, None)
        # json.dumps escapes the request-derived span name in the profile's name; "<", ">" and
        # "&" occur only inside JSON strings, where these escapes are the same characters
        text = json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n"
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


RENDERERS = (JsonRenderer(), HtmlRenderer(), MarkdownRenderer(), SpeedscopeFileRenderer())


def ensure_report_dir(path: str) -> None:
    """Create ``path`` with mode 0700 if missing (parents too)."""
    os.makedirs(path, mode=0o700, exist_ok=True)


def _temporary_name(path: str) -> str:
    """The name ``path`` is written under before its rename: ``<path>.tmp-<pid>``, which
    the viewer index and ``otel-perfmon list`` never read (they read ``<id>.json`` only)."""
    return f"{path}.tmp-{os.getpid()}"


def _write_temporary(path: str, text: str) -> str:
    """Write ``text`` to ``path``'s temporary name (0600); returns that name. On failure
    (ENOSPC, EDQUOT, EROFS...) the partial temporary is removed and the error re-raised."""
    tmp = _temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        _remove_quietly(tmp)
        raise
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except BaseException:
        _remove_quietly(tmp)
        raise
    return tmp


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_report_files(report: Report) -> List[str]:
    """Render and write ``<id>.html``, ``<id>.md``, ``<id>.speedscope.json`` (only for a report
    with samples) and, last, ``<id>.json``; returns the paths written (JSON first, in
    :data:`RENDERERS` order), which are then ``report.files`` (``report.has_flame_graph`` is set).

    All of them are written to temporary names first and renamed only once every one of them
    is complete, the JSON last: the JSON is what the viewer index and ``otel-perfmon list``
    read, so a report becomes visible only when its files are all in place, and a failed
    write (a full disk, a quota, a read-only file system) removes its temporaries and leaves
    the directory as it was (an earlier version of the report stays intact). A replaced
    version's speedscope file is removed when the new version has none. Raises OSError on
    I/O failure (the worker counts it). Background worker only.
    """
    ensure_report_dir(report.report_dir)
    paths = [os.path.join(report.report_dir, f"{report.report_id}.{renderer.suffix}") for renderer in RENDERERS]
    order = sorted(range(len(RENDERERS)), key=lambda i: RENDERERS[i].suffix == "json")  # JSON last
    written: List[Tuple[str, str]] = []
    try:
        for i in order:
            text = RENDERERS[i].render(report)
            if text is not None:
                written.append((_write_temporary(paths[i], text), paths[i]))
        done = [path for _, path in written]
        while written:
            tmp, path = written[0]
            os.replace(tmp, path)
            written.pop(0)
    finally:
        for tmp, _ in written:
            _remove_quietly(tmp)
    report.has_flame_graph = any(path.endswith(".speedscope.json") for path in done)
    for path in paths:
        if path not in done:  # the speedscope file of an earlier version with samples
            _remove_quietly(path)
    return [path for path in paths if path in done]


def update_report_json(report_dir: str, report_id: str, change: Callable[[Dict[str, Any]], bool]) -> bool:
    """Apply ``change`` to ``<report_id>.json`` (it returns True when it changed the dict) and
    rewrite that file alone, atomically (temporary name, then rename). Returns whether it was
    rewritten; False when the file is missing or unreadable. Raises OSError on a failed write.
    Background worker only."""
    path = os.path.join(report_dir, f"{report_id}.json")
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict) or not change(data):
        return False
    tmp = _write_temporary(path, json.dumps(data, indent=2, ensure_ascii=True) + "\n")
    try:
        os.replace(tmp, path)
    finally:
        _remove_quietly(tmp)
    return True
