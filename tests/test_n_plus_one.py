"""A slow Flask route under gunicorn running one SQLAlchemy query per order (SQLite): the
report lists the child spans with literals replaced, flags the N+1, and no literal leaks."""

from __future__ import annotations

import glob
import os

import jsonschema
import pytest

from conftest import free_port, gunicorn_argv, http_get, read_reports, run_server, wait_until
from test_flask_gunicorn import SCHEMA

pytest.importorskip("opentelemetry.instrumentation.sqlalchemy")

SECRET = "hunter2-literal-0042"


def test_n_plus_one_queries_are_listed_and_flagged(workdir):
    port = free_port()
    env = {"OTEL_PERFMON_THRESHOLD_SECONDS": "0.3", "OTEL_PERFMON_REPORT_DIR": workdir["reports"],
           "EXAMPLE_ORDERS": "30", "EXAMPLE_SECRET_LITERAL": SECRET}
    with run_server(gunicorn_argv("orders_app:app", port, workers=1), env, port, workdir["log"]) as server:
        assert http_get(server.url("/orders"))[0] == 200
        (report,) = wait_until(lambda: read_reports(workdir["reports"]), 30, message="the report")
    jsonschema.validate(report, SCHEMA)
    statements = [row["statement"] for row in report["spans"] if "statement" in row]
    assert len(statements) == 31, report["spans"][:3]
    assert "SELECT name FROM customers WHERE id = ? AND api_key = ?" in statements
    assert all(row["db_system"] == "sqlite" for row in report["spans"] if "statement" in row)
    assert all(0 <= row["start_offset_ms"] <= report["duration_ms"] for row in report["spans"])
    (finding,) = report["n_plus_one"]
    assert finding["kind"] == "db" and finding["count"] == 30
    assert finding["statement"] == "SELECT name FROM customers WHERE id = ? AND api_key = ?"
    assert 0 < finding["total_ms"] < report["duration_ms"]
    files = glob.glob(os.path.join(workdir["reports"], "*"))
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as handle:
            assert SECRET not in handle.read(), path
    markdown = open(os.path.join(workdir["reports"], report["report_id"] + ".md"), encoding="utf-8").read()
    assert "N+1" in markdown and "30 ×" in markdown
    html = open(os.path.join(workdir["reports"], report["report_id"] + ".html"), encoding="utf-8").read()
    assert 'id="perfmon-n-plus-one"' in html and 'id="perfmon-spans"' in html
    runtime = report["runtime"]
    assert runtime["process"]["server"] == "gunicorn" and runtime["process"]["pid"] == report["host"]["pid"]
    assert runtime["versions"]["flask"] and runtime["versions"]["pyinstrument"]
    assert runtime["python"]["implementation"] == "CPython"
    assert runtime["resource"]["service.name"] == "orders-flask"
    assert runtime["gc"]["recorded"] is True and runtime["gc"]["collections"] >= 0
