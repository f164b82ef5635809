"""Renderers: one small class per output format (pyinstrument's renderer style).

``JsonRenderer``, ``HtmlRenderer`` (pyinstrument's interactive call tree, self-contained,
with an escaped request panel above it), ``MarkdownRenderer`` and ``SpeedscopeFileRenderer``
(pyinstrument's speedscope flame-graph file, only for a report with samples). Each has
``render(report) -> str`` (``Optional[str]`` for the speedscope one). :func:`write_report_files`
writes the files into the report store (:mod:`otel_perfmon.storage`; locally atomically, 0600
files in a 0700 directory), the JSON last. Background worker only.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import quote

import jinja2

from otel_perfmon.report.model import Report
from otel_perfmon.storage.base import ReportStore
from otel_perfmon.storage.local import LocalReportStore

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


def render_files(report: Report) -> List[Tuple[str, str]]:
    """``(suffix, text)`` of every file of ``report`` in :data:`RENDERERS` order (the
    speedscope file only for a report with samples)."""
    files = []
    for renderer in RENDERERS:
        text = renderer.render(report)
        if text is not None:
            files.append((renderer.suffix, text))
    return files


def write_report_files(report: Report, store: Optional[ReportStore] = None) -> List[str]:
    """Render and write ``<id>.html``, ``<id>.md``, ``<id>.speedscope.json`` (only for a report
    with samples) and, last, ``<id>.json`` into ``store`` (default: the local directory
    ``report.report_dir``); returns the paths (or URLs) written (JSON first, in
    :data:`RENDERERS` order), which are then ``report.files`` (``report.has_flame_graph`` is set).

    The JSON is what the viewer index and ``otel-perfmon list`` read, so every store writes it
    last: a report becomes visible only when its files are all in place. Locally
    (:mod:`otel_perfmon.storage.local`) all files go to temporary names first and are renamed
    once every one is complete, so a failed write (a full disk, a quota, a read-only file
    system) removes its temporaries and leaves the directory as it was (an earlier version of
    the report stays intact). A replaced version's speedscope file is removed when the new
    version has none. Raises OSError on I/O failure (the worker counts it). Background worker
    only.
    """
    if store is None:
        store = LocalReportStore(report.report_dir)
    files = render_files(report)
    written = set(store.write_report(report.report_id, files))
    report.has_flame_graph = "speedscope.json" in written
    return [report._path(renderer.suffix) for renderer in RENDERERS if renderer.suffix in written]


def update_report_json(report_dir: Union[str, ReportStore], report_id: str,
                       change: Callable[[Dict[str, Any]], bool]) -> bool:
    """Apply ``change`` to ``<report_id>.json`` (it returns True when it changed the dict) and
    rewrite that file alone, atomically (locally: temporary name, then rename). ``report_dir``
    is a local directory or a store. Returns whether it was rewritten; False when the file is
    missing or unreadable. Raises OSError on a failed write. Background worker only."""
    store = LocalReportStore(report_dir) if isinstance(report_dir, str) else report_dir
    return store.update_json(report_id, change)
