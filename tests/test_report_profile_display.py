"""The profile mode (in words), coverage, sample count and sampling interval, and the earlier
versions of a report, as shown by the HTML report's panel, the Markdown report and the
viewer's pages (HTML parsed, not just searched)."""

from __future__ import annotations

import asyncio
import json
import re
from html.parser import HTMLParser
from typing import Dict, List, Optional

import pytest

from otel_perfmon.report.render import HtmlRenderer, MarkdownRenderer
from viewer_reports import make_report, write

START = 1_795_000_000.0
EARLIER = [{"trace_id": "ab" * 16, "span_id": "cd" * 8, "duration_ms": 5123.25, "mode": "in_flight",
            "coverage": 0.25, "start_time": "2026-11-18T11:00:00.000000Z"},
           {"trace_id": "ef" * 16, "span_id": "01" * 8, "duration_ms": 1400.0, "mode": "after_threshold",
            "coverage": 0.4, "start_time": "2026-11-18T10:00:00.000000Z"}]
#: What each mode must say (a word or phrase of its plain description).
MODE_WORDS = {"full": "whole span", "sampled": "stack samples from the span's start",
              "after_threshold": "passed its threshold", "in_flight": "still running",
              "none": "no profile"}


class Page(HTMLParser):
    """Text of every element with an id, and the cell texts of each table row by table id."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.by_id: Dict[str, str] = {}
        self.tables: Dict[str, List[List[str]]] = {}
        self._open: List[Optional[str]] = []  # the id of each open element (None if it has none)
        self._texts: Dict[str, List[str]] = {}
        self._table: List[Optional[str]] = []
        self._cell: Optional[List[str]] = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        ident = dict(attrs).get("id")
        if tag in ("meta", "link", "br", "input", "img"):
            return
        self._open.append(ident)
        if ident:
            self._texts[ident] = []
        if tag == "table":
            self._table.append(ident)
            if ident:
                self.tables[ident] = []
        elif tag == "tr" and self._table and self._table[-1]:
            self.tables[self._table[-1]].append([])
        elif tag in ("td", "th") and self._table and self._table[-1]:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._table and self._table[-1]:
            self.tables[self._table[-1]][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        if tag == "table" and self._table:
            self._table.pop()
        if self._open:
            ident = self._open.pop()
            if ident:
                self.by_id[ident] = " ".join("".join(self._texts.pop(ident)).split())

    def handle_data(self, data):
        for ident in self._open:
            if ident:
                self._texts[ident].append(data)
        if self._cell is not None:
            self._cell.append(data)


def md_fields(markdown: str) -> Dict[str, str]:
    """The ``| field | value |`` rows of the Markdown report's first table."""
    fields = {}
    for line in markdown.splitlines():
        match = re.fullmatch(r"\| ([a-z ]+) \| (.*) \|", line)
        if match:
            fields.setdefault(match.group(1), match.group(2))
    return fields


def md_table_after(markdown: str, heading: str) -> List[List[str]]:
    """Body rows of the table that follows ``## heading``."""
    lines = markdown.split(f"## {heading}\n", 1)[1].splitlines()
    rows = []
    for line in lines[1:]:
        if not line.startswith("|"):
            if rows:
                break
            continue
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows[2:]  # header and separator


def report(tmp_path, mode="after_threshold", coverage=0.625, **extra):
    r = make_report(str(tmp_path / "reports"), START, with_session=False, profile_mode=mode, coverage=coverage)
    r.sample_count, r.interval_seconds = 61, 0.0005
    for name, value in extra.items():
        setattr(r, name, value)
    return r


# --- the report files ---------------------------------------------------------------------------
@pytest.mark.parametrize("mode", sorted(MODE_WORDS))
def test_panel_shows_mode_in_words_coverage_samples_and_interval(tmp_path, mode):
    page = Page(HtmlRenderer().render(report(tmp_path, mode=mode)))
    assert page.by_id["perfmon-profile-mode"].startswith(f"{mode}: ")
    assert MODE_WORDS[mode] in page.by_id["perfmon-profile-mode"]
    assert page.by_id["perfmon-profile-coverage"] == "62.5 % of the span"
    assert page.by_id["perfmon-profile-samples"] == "61"
    assert page.by_id["perfmon-profile-interval"] == "0.5 ms"
    assert "perfmon-earlier-versions" not in page.tables


@pytest.mark.parametrize("mode", sorted(MODE_WORDS))
def test_markdown_shows_mode_in_words_coverage_samples_and_interval(tmp_path, mode):
    markdown = MarkdownRenderer().render(report(tmp_path, mode=mode, coverage=1.0))
    fields = md_fields(markdown)
    assert fields["profile mode"].startswith(f"`{mode}`: ") and MODE_WORDS[mode] in fields["profile mode"]
    assert fields["coverage"] == "100 % of the span"
    assert fields["samples"] == "61"
    assert fields["sampling interval"] == "0.5 ms"
    assert "Earlier versions" not in markdown


def test_earlier_versions_in_panel_and_markdown(tmp_path):
    r = report(tmp_path, earlier_versions=[dict(v) for v in EARLIER])
    rows = Page(HtmlRenderer().render(r)).tables["perfmon-earlier-versions"]
    assert rows[0] == ["start", "ms", "mode", "coverage", "trace id", "span id"]
    assert rows[1] == ["2026-11-18T11:00:00.000000Z", "5123.2", "in_flight", "25 %", "ab" * 16, "cd" * 8]
    assert rows[2][2:4] == ["after_threshold", "40 %"]
    markdown = MarkdownRenderer().render(r)
    md_rows = md_table_after(markdown, "Earlier versions of this report")
    assert md_rows[0] == ["2026-11-18T11:00:00.000000Z", "5123.2", "`in_flight`", "25 %", f"`{'ab' * 16}`",
                          f"`{'cd' * 8}`"]
    assert len(md_rows) == 2
    assert "\n\n## Request headers" in markdown and "\n\n\n## Request headers" not in markdown


# --- the viewer ---------------------------------------------------------------------------------
def asgi_get(app, path: str):
    """(status, body) of GET ``path`` from an ASGI app, in process."""
    sent: List[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    raw_path, _, query = path.partition("?")
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(),
             "root_path": "", "headers": [(b"host", b"testserver")], "client": ("127.0.0.1", 1),
             "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.fixture()
def viewer(tmp_path):
    pytest.importorskip("starlette")
    from otel_perfmon.viewer import create_app

    plain = write(report(tmp_path, mode="full", coverage=1.0))
    replaced = write(report(tmp_path, mode="after_threshold", coverage=0.625))
    with open(replaced.json_path, encoding="utf-8") as handle:
        data = json.load(handle)
    data["earlier_versions"] = [dict(v) for v in EARLIER] + ["not a dict", {"mode": "<script>x</script>"}]
    with open(replaced.json_path, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    app = create_app(str(tmp_path / "reports"), dedup_store=None,
                     trace_url_template="http://jaeger.example/trace/{trace_id}")
    return app, plain, replaced


def test_viewer_report_page_shows_the_profile(viewer):
    app, plain, replaced = viewer
    status, body = asgi_get(app, f"/reports/{replaced.report_id}")
    assert status == 200
    page = Page(body.decode())
    assert page.by_id["profile-mode"].startswith("after_threshold: ")
    assert MODE_WORDS["after_threshold"] in page.by_id["profile-mode"]
    assert page.by_id["profile-coverage"] == "62.5 % of the span"
    assert page.by_id["profile-samples"] == "61"
    assert page.by_id["profile-interval"] == "0.5 ms"
    rows = page.tables["earlier-versions"]
    assert rows[1] == ["2026-11-18T11:00:00.000000Z", "5,123.2", "in_flight", "25 %", "ab" * 16 + " (trace)",
                       "cd" * 8]
    assert rows[2][2:4] == ["after_threshold", "40 %"]
    assert len(rows) == 4  # header, the two versions, the dict with hostile text (the string is dropped)
    assert b"<script>x" not in body and b'href="http://jaeger.example/trace/' + b"ab" * 16 + b'"' in body
    status, body = asgi_get(app, f"/reports/{plain.report_id}")
    page = Page(body.decode())
    assert page.by_id["profile-mode"].startswith("full: ") and "earlier-versions" not in page.tables


def test_viewer_list_and_api_rows_carry_mode_and_coverage(viewer):
    app, plain, replaced = viewer
    status, body = asgi_get(app, "/api/reports")
    rows = {r["report_id"]: r for r in json.loads(body)["reports"]}
    assert status == 200
    assert (rows[plain.report_id]["mode"], rows[plain.report_id]["coverage"]) == ("full", 1.0)
    assert (rows[replaced.report_id]["mode"], rows[replaced.report_id]["coverage"]) == ("after_threshold", 0.625)
    html = asgi_get(app, "/reports")[1].decode()
    cells = {}
    for row in re.findall(r"<tr>(.*?)</tr>", html, re.S):
        texts = [" ".join(re.sub(r"<[^>]+>", "", c).split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        if texts:
            cells[texts[-1]] = texts
    assert cells[replaced.report_id][6:8] == ["after_threshold", "62.5 %"]
    assert cells[plain.report_id][6:8] == ["full", "100 %"]


def test_viewer_malformed_profile_says_not_recorded(tmp_path):
    pytest.importorskip("starlette")
    from otel_perfmon.viewer import create_app

    r = write(report(tmp_path))
    with open(r.json_path, encoding="utf-8") as handle:
        data = json.load(handle)
    data["profile"].update(mode=7, coverage="most", sample_count=True, interval_seconds=-1)
    data["earlier_versions"] = {"not": "a list"}
    with open(r.json_path, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    app = create_app(str(tmp_path / "reports"), dedup_store=None)
    status, body = asgi_get(app, f"/reports/{r.report_id}")
    page = Page(body.decode())
    assert status == 200
    assert page.by_id["profile-mode"] == "not recorded" and page.by_id["profile-coverage"] == "not recorded"
    assert page.by_id["profile-samples"] == "" and page.by_id["profile-interval"] == ""
    api = json.loads(asgi_get(app, "/api/reports")[1])["reports"][0]
    assert api["mode"] is None and api["coverage"] is None
