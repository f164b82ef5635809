"""Child spans of a tracked trace: kept by the processor (one append), turned into redacted
rows and N+1 findings on the worker (report/spans.py)."""

from __future__ import annotations

import sqlite3
from types import SimpleNamespace

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

from otel_perfmon.config import resolve_config
from otel_perfmon.processor import PerfmonSpanProcessor
from otel_perfmon.report.spans import (
    child_spans,
    describe,
    normalize_statement,
    repeated_work,
    safe_url,
    span_row,
    url_template,
)

SECRET = "hunter2-s3cret"


def test_statement_literals_never_survive():
    text = normalize_statement(f"SELECT * FROM users WHERE id = 42 AND password = '{SECRET}' "
                               "AND name = 'o''brien' AND score > -3.5e2 AND tag IN (1, 2, 3) AND h = X'ff'")
    assert SECRET not in text and "42" not in text and "brien" not in text
    assert text == ("SELECT * FROM users WHERE id = ? AND password = ? AND name = ? AND score > ? "
                    "AND tag IN (?) AND h = ?")
    assert normalize_statement("SELECT t1.c2 FROM t1 WHERE x = $1") == "SELECT t1.c2 FROM t1 WHERE x = $1"


def test_urls_lose_user_info_and_secret_parameters():
    url = f"https://bob:{SECRET}@api.example.com:8443/users/123/orders?token={SECRET}&page=2"
    assert SECRET not in safe_url(url) and "bob" not in safe_url(url)
    assert safe_url(url) == "https://api.example.com:8443/users/123/orders?token=[REDACTED]&page=2"
    assert url_template(url) == "https://api.example.com:8443/users/{id}/orders"


def _span(name, start_ms, duration_ms, kind=SpanKind.CLIENT, **attributes):
    return SimpleNamespace(name=name, kind=kind, start_time=int(start_ms * 1e6),
                           end_time=int((start_ms + duration_ms) * 1e6), attributes=attributes,
                           status=SimpleNamespace(status_code=SimpleNamespace(name="UNSET")))


def test_rows_and_repeated_work():
    children = [_span("SELECT users", 10 + i, 2, **{"db.system": "sqlite",
                                                    "db.statement": f"SELECT * FROM users WHERE id = {i}"})
                for i in range(12)]
    children += [_span("GET", 40 + i, 5, **{"http.request.method": "GET",
                                            "url.full": f"http://svc.local/items/{i}?key={SECRET}"}) for i in range(3)]
    rows, dropped = child_spans(reversed(children), root_start_ns=0)
    assert dropped == 0 and [r["start_offset_ms"] for r in rows] == sorted(r["start_offset_ms"] for r in rows)
    assert rows[0]["statement"] == "SELECT * FROM users WHERE id = ?" and rows[0]["db_system"] == "sqlite"
    assert rows[0]["kind"] == "client" and rows[0]["duration_ms"] == 2.0
    assert SECRET not in repr(rows)
    (finding,) = repeated_work(rows)
    assert finding == {"kind": "db", "statement": "SELECT * FROM users WHERE id = ?", "count": 12,
                       "total_ms": 24.0}
    assert describe(finding) == "N+1: `SELECT * FROM users WHERE id = ?` × 12, 24 ms"
    assert repeated_work(rows, min_count=3)[1]["url"] == "http://svc.local/items/{id}"
    assert span_row(_span("odd", 0, 0), 0)["name"] == "odd"


def test_the_processor_keeps_the_spans_of_tracked_traces_only(tmp_path):
    provider = TracerProvider()
    processor = PerfmonSpanProcessor(resolve_config(overrides={"dedup_store": "memory",
                                                               "report_dir": str(tmp_path)}, environ={}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    try:
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER) as root:
            open_span = processor._tracked[root.context.span_id]
            db = sqlite3.connect(":memory:")
            for i in range(3):
                with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                                  attributes={"db.statement": f"SELECT {i}"}):
                    db.execute(f"SELECT {i}")
        lookups = []

        class Counting(dict):  # the processor's two tables, counting what on_end asks of them
            def get(self, *args):
                lookups.append("get")
                return super().get(*args)

            def pop(self, *args):
                lookups.append("pop")
                return super().pop(*args)

        processor._roots, processor._tracked = Counting(processor._roots), Counting(processor._tracked)
        with tracer.start_as_current_span("untracked-root", kind=SpanKind.INTERNAL):
            with tracer.start_as_current_span("child"):
                pass
        assert lookups == ["get", "get"]  # two spans of an untracked trace: one dict lookup each
        assert [s.name for s in open_span.children] == ["SELECT"] * 3
        assert processor._roots == {}  # the root ended: nothing of its trace is kept any more
    finally:
        processor.shutdown(1)
