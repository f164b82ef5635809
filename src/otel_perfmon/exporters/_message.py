"""Shared message text of the notifiers: the summary dict and one renderer per channel format.

All notifiers say the same thing: route, method, duration vs threshold, service, trace id,
the top hotspots and the report link (``report.url``, set when ``report_url_template`` is
configured) or the report id. Request-derived text (route, path, method, service name) is
escaped for the channel's format here and nowhere else:

- :func:`slack_text`: Slack mrkdwn (``&``, ``<``, ``>`` escaped; values in code spans);
- :func:`markdown_text`: Markdown for Mattermost and apprise (values in code spans, mentions
  such as ``@channel`` broken with a zero-width space);
- :func:`html_body` / :func:`text_body`: e-mail (Jinja2 with autoescape / plain text).

Control characters become ``\\x..`` escapes and long values are truncated, so a hostile
path cannot forge extra lines. Headers and the query string are not part of any message.
Pure functions of the report; safe on any thread.
"""

from __future__ import annotations

import datetime as _dt
import io
import os
import re
import zipfile
from typing import Any, Dict, List, Optional

import jinja2

from otel_perfmon.report.spans import describe

#: Version of the webhook payload layout (``summary``); bumped on incompatible changes.
SUMMARY_SCHEMA_VERSION = 1
SUMMARY_EVENT = "perfmon.slow_request"
TOP_HOTSPOTS = 5
MAX_VALUE_CHARS = 300
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """``value`` as a single line: control characters escaped, at most ``limit`` characters
    (then ``…`` appended)."""
    text = "" if value is None else str(value)
    text = _CONTROL.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), text)
    return text if len(text) <= limit else text[:limit] + "…"


def _hotspot(spot: Dict[str, Any]) -> Dict[str, Any]:
    return {"function": spot.get("function"), "file": spot.get("file"), "line": spot.get("line"),
            "self_ms": spot.get("self_ms"), "percent": spot.get("percent")}


def summary(report: Any, sent_at: Optional[str] = None) -> Dict[str, Any]:
    """The schema-versioned summary the webhook posts (JSON-serialisable dict).

    Keys: ``schema_version`` (1), ``event`` (``perfmon.slow_request``), ``report_id``,
    ``fingerprint``, ``service_name``, ``trace_id``, ``span_id``, ``span_name``,
    ``http`` (``method``, ``route``, ``path``, ``status_code``), ``duration_ms``,
    ``threshold_ms``, ``start_time``, ``end_time``, ``hotspots`` (top 5: ``function``,
    ``file``, ``line``, ``self_ms``, ``percent``), ``n_plus_one`` (top 5 repeated statements or
    URL templates: ``kind``, ``count``, ``total_ms``, ``statement`` or ``method`` and ``url``),
    ``report_url`` (or null), ``task`` (only for a task's report: ``name``, ``id``, ``queue``,
    ``retries``; no arguments), ``host``
    (``hostname``, ``pid``), ``text`` (one-line plain title) and ``sent_at`` (ISO-8601 UTC).
    No headers, no query string, no call tree.
    """
    host = getattr(report, "host", None) or {}
    if sent_at is None:
        sent_at = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "event": SUMMARY_EVENT,
        "report_id": report.report_id,
        "fingerprint": getattr(report, "fingerprint", None),
        "service_name": getattr(report, "service_name", None),
        "trace_id": report.trace_id,
        "span_id": report.span_id,
        "span_name": getattr(report, "span_name", None),
        "http": {"method": report.method, "route": report.route, "path": getattr(report, "path", None),
                 "status_code": getattr(report, "status_code", None)},
        "duration_ms": report.duration_ms,
        "threshold_ms": report.threshold_ms,
        "start_time": getattr(report, "start_time", None),
        "end_time": getattr(report, "end_time", None),
        "hotspots": [_hotspot(h) for h in list(report.hotspots or [])[:TOP_HOTSPOTS]],
        "n_plus_one": [dict(finding) for finding in list(getattr(report, "n_plus_one", None) or [])[:TOP_HOTSPOTS]],
        "report_url": getattr(report, "url", None),
        **_task_summary(report),
        "host": {"hostname": host.get("hostname"), "pid": host.get("pid")},
        "text": title(report),
        "sent_at": sent_at,
    }


def _task_summary(report: Any) -> Dict[str, Any]:
    """``{"task": {name, id, queue, retries}}`` for a task's report (no arguments), else ``{}``."""
    task = getattr(report, "task", None)
    if not task:
        return {}
    return {"task": {key: task.get(key) for key in ("name", "id", "queue", "retries")}}


def _facts(report: Any) -> Dict[str, Any]:
    """Plain (unescaped, one-line) values every format shows."""
    spots = []
    for spot in list(report.hotspots or [])[:TOP_HOTSPOTS]:
        where = f"{spot.get('file') or '?'}:{spot.get('line') or 0}"
        spots.append({"function": one_line(spot.get("function") or "?"), "where": one_line(where),
                      "self_ms": float(spot.get("self_ms") or 0.0), "percent": float(spot.get("percent") or 0.0)})
    task = getattr(report, "task", None) or {}
    return {
        # a task's report (Celery): "Slow task: TASK orders.rebuild took …"
        "what": "task" if task else "request",
        "method": "TASK" if task else one_line(report.method or "-", 20),
        "route": one_line(task.get("name") or "-") if task else one_line(report.route or "-"),
        "service": one_line(getattr(report, "service_name", None) or "-"),
        "duration": f"{float(report.duration_ms):.1f} ms",
        "threshold": f"{float(report.threshold_ms):.1f} ms",
        "trace_id": one_line(report.trace_id, 64),
        "span_id": one_line(report.span_id, 32),
        "report_id": one_line(report.report_id, 64),
        "url": getattr(report, "url", None),
        "hotspots": spots,
        # "N+1: `SELECT … WHERE id = ?` × 120, 480 ms" (statements are already literal-free)
        "n_plus_one": [one_line(describe(finding), 300) for finding in list(getattr(report, "n_plus_one", None)
                                                                                or [])[:TOP_HOTSPOTS]],
    }


def title(report: Any) -> str:
    """Plain one-line title: ``Slow request: GET /route took 1234.5 ms (threshold 1000.0 ms)``."""
    f = _facts(report)
    return f"Slow {f['what']}: {f['method']} {f['route']} took {f['duration']} (threshold {f['threshold']})"


def subject(report: Any, prefix: str) -> str:
    """E-mail subject: ``<prefix> Slow GET /route: 1234.5 ms`` (one line, at most ~200 chars)."""
    f = _facts(report)
    text = f"Slow {f['method']} {one_line(f['route'], 120)}: {f['duration']}"
    return f"{prefix.strip()} {text}".strip() if prefix else text


def slack_escape(text: Any) -> str:
    """Slack mrkdwn escaping: ``&`` ``<`` ``>`` become entities (Slack's documented set)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_code(text: str) -> str:
    # a backtick would end the code span; mrkdwn has no escape for it.
    return "`" + slack_escape(text.replace("`", "'")) + "`"


def slack_text(report: Any) -> str:
    """The Slack message (mrkdwn)."""
    f = _facts(report)
    lines = [f":snail: *Slow {f['what']}* {_slack_code(f['method'] + ' ' + f['route'])} took *{f['duration']}* "
             f"(threshold {f['threshold']})",
             f"Service {_slack_code(f['service'])} · trace {_slack_code(f['trace_id'])}"]
    if f["url"]:
        url = slack_escape(str(f["url"]).replace("|", "%7C"))
        lines.append(f"Report: <{url}|{slack_escape(f['report_id'])}>")
    else:
        lines.append(f"Report id: {_slack_code(f['report_id'])}")
    lines += [f":warning: {slack_escape(line)}" for line in f["n_plus_one"]]
    if f["hotspots"]:
        lines.append("Top hotspots:")
        lines += [f"• {_slack_code(h['function'])} {_slack_code(h['where'])} {h['self_ms']:.1f} ms "
                  f"({h['percent']:.1f}%)" for h in f["hotspots"]]
    return "\n".join(lines)


def slack_payload(report: Any) -> Dict[str, Any]:
    """Slack incoming-webhook JSON: ``text`` (also the notification fallback) and one
    mrkdwn section block."""
    text = slack_text(report)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}]}


def markdown_code(text: Any) -> str:
    """``text`` as a Markdown code span (Mattermost, apprise): literal, no mentions, one line."""
    value = one_line(text).replace("`", "'").replace("@", "@\u200b") or "-"
    return f"`{value}`"


def _md_link(url: str) -> str:
    return str(url).replace(" ", "%20").replace("(", "%28").replace(")", "%29").replace("<", "%3C") \
        .replace(">", "%3E")


def markdown_text(report: Any) -> str:
    """The Markdown message of Mattermost and apprise."""
    f = _facts(report)
    lines = [f"#### :snail: Slow {f['what']} {markdown_code(f['method'] + ' ' + f['route'])}",
             f"took **{f['duration']}** (threshold {f['threshold']}) · service {markdown_code(f['service'])} · "
             f"trace {markdown_code(f['trace_id'])}"]
    if f["url"]:
        lines.append(f"Report: [{f['report_id']}]({_md_link(f['url'])})")
    else:
        lines.append(f"Report id: {markdown_code(f['report_id'])}")
    lines += [f"**{one_line(line).replace('@', '@' + chr(0x200B))}**" for line in f["n_plus_one"]]
    if f["hotspots"]:
        lines += ["", "| function | where | self ms | % |", "|---|---|---:|---:|"]
        lines += [f"| {markdown_code(h['function'])} | {markdown_code(h['where'])} | {h['self_ms']:.1f} | "
                  f"{h['percent']:.1f} |" for h in f["hotspots"]]
    return "\n".join(lines)


def markdown_attachment_note(report: Any) -> str:
    """Short Markdown line for the post that carries the report zip (Mattermost files API)."""
    f = _facts(report)
    return f"Report files for {markdown_code(f['method'] + ' ' + f['route'])} ({markdown_code(f['report_id'])})"


_TEXT = """Slow {{ f.what }}: {{ f.method }} {{ f.route }}
Duration: {{ f.duration }} (threshold {{ f.threshold }})
Service: {{ f.service }}
Trace id: {{ f.trace_id }}  span id: {{ f.span_id }}
{% if f.url %}Report: {{ f.url }}{% else %}Report id: {{ f.report_id }}{% endif %}
{% for line in f.n_plus_one %}{{ line }}
{% endfor %}{% if f.hotspots %}
Top hotspots:
{% for h in f.hotspots %}  {{ "%8.1f"|format(h.self_ms) }} ms {{ "%5.1f"|format(h.percent) }}%  {{ h.function }} ({{ h.where }})
{% endfor %}{% endif %}{% if attached %}
Attached: {{ f.report_id }}.zip ({{ f.report_id }}.html: interactive call tree, {{ f.report_id }}.md).
{% endif %}"""  # noqa: E501

_HTML = """<!doctype html>
<html><body style="font-family: sans-serif">
<h3>Slow {{ f.what }} <code>{{ f.method }} {{ f.route }}</code></h3>
<table cellpadding="4">
<tr><th align="left">Duration</th><td><b>{{ f.duration }}</b> (threshold {{ f.threshold }})</td></tr>
<tr><th align="left">Service</th><td>{{ f.service }}</td></tr>
<tr><th align="left">Trace id</th><td><code>{{ f.trace_id }}</code></td></tr>
<tr><th align="left">Span id</th><td><code>{{ f.span_id }}</code></td></tr>
<tr><th align="left">Report</th><td>{% if f.url %}<a href="{{ f.url }}">{{ f.report_id }}</a>{% else %}<code>{{ f.report_id }}</code>{% endif %}</td></tr>
</table>
{% for line in f.n_plus_one %}<p><b>{{ line }}</b></p>
{% endfor %}{% if f.hotspots %}<h4>Top hotspots</h4>
<table cellpadding="4" border="1" style="border-collapse: collapse">
<tr><th>function</th><th>where</th><th>self ms</th><th>%</th></tr>
{% for h in f.hotspots %}<tr><td><code>{{ h.function }}</code></td><td><code>{{ h.where }}</code></td><td align="right">{{ "%.1f"|format(h.self_ms) }}</td><td align="right">{{ "%.1f"|format(h.percent) }}</td></tr>
{% endfor %}</table>{% endif %}
{% if attached %}<p>Attached: <code>{{ f.report_id }}.zip</code> with the interactive call tree (<code>{{ f.report_id }}.html</code>) and <code>{{ f.report_id }}.md</code>.</p>{% endif %}
</body></html>
"""  # noqa: E501

_TEMPLATES: Dict[str, jinja2.Template] = {}


def _template(name: str) -> jinja2.Template:
    if name not in _TEMPLATES:
        env = jinja2.Environment(autoescape=(name == "html"), keep_trailing_newline=True)
        _TEMPLATES[name] = env.from_string(_HTML if name == "html" else _TEXT)
    return _TEMPLATES[name]


def text_body(report: Any, attached: bool = False) -> str:
    """Plain-text e-mail body; ``attached`` mentions the zip."""
    return _template("text").render(f=_facts(report), attached=attached)


def html_body(report: Any, attached: bool = False) -> str:
    """HTML e-mail body; every value is HTML-escaped (Jinja2 autoescape)."""
    return _template("html").render(f=_facts(report), attached=attached)


def report_zip(report: Any) -> Optional[bytes]:
    """A zip (bytes) of ``<report_id>.html`` and ``<report_id>.md`` from the report's files.

    Files that do not exist are left out; returns None when neither exists.
    Reads the files (background thread only). Raises OSError on a read error.
    """
    members: List[str] = []
    for attr in ("html_path", "md_path"):
        path = getattr(report, attr, None)
        if path and os.path.isfile(path):
            members.append(path)
    if not members:
        return None
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in members:
            archive.write(path, arcname=f"{report.report_id}{os.path.splitext(path)[1]}")
    return buffer.getvalue()
